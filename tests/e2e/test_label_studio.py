"""The e2e plumbing on its own: a real Label Studio 1.23 from the template DB, its tokens, a project.

Fast (one LS start, no backend), so when the loop test fails this one tells whether Label Studio
or the fixtures are to blame. It also pins the LS facts the backend relies on: personal access
tokens must be exchanged for a Bearer token, legacy tokens are off by default.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import httpx
import pytest

from tests.e2e import flows, lsapi
from tests.e2e.conftest import ADMIN_EMAIL, LabelStudio, LabelStudioInstall

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(1800)]


@pytest.fixture(scope="module")
def personal_access_token(label_studio: LabelStudio) -> str:
    """The admin's PAT (a user holds one: a second POST /api/token/ answers 409)."""
    with label_studio.login() as session:
        return lsapi.create_personal_access_token(session)


def test_starts_from_the_template_database_on_its_own_port(
    label_studio: LabelStudio, ls_install: LabelStudioInstall
) -> None:
    assert label_studio.process.listens_on(label_studio.port), "another process answers on Label Studio's port"
    version = lsapi.check(httpx.get(f"{label_studio.url}/api/version", timeout=10)).json()
    assert version.get("release") == ls_install.version, f"/api/version: {version}"
    with label_studio.login() as session:
        assert lsapi.check(session.get("/api/current-user/whoami")).json()["email"] == ADMIN_EMAIL


def test_personal_access_token_works_only_as_refreshed_bearer(
    label_studio: LabelStudio, personal_access_token: str
) -> None:
    token = personal_access_token
    with label_studio.login() as session:
        settings = lsapi.check(session.get("/api/jwt/settings")).json()
        assert settings == {"api_tokens_enabled": True, "legacy_api_tokens_enabled": False}, settings
        legacy = lsapi.legacy_token(session)
    whoami = f"{label_studio.url}/api/current-user/whoami"
    auth = lsapi.PersonalAccessTokenAuth(label_studio.url, token)
    assert httpx.get(whoami, auth=auth, timeout=10).status_code == 200
    # The PAT itself is a refresh token: sent as is, it is refused (the backend must exchange it).
    assert httpx.get(whoami, headers={"Authorization": f"Bearer {token}"}, timeout=10).status_code == 401
    assert httpx.get(whoami, headers={"Authorization": f"Token {token}"}, timeout=10).status_code == 401
    # Legacy tokens are off by default in 1.23.
    assert httpx.get(whoami, auth=lsapi.LegacyTokenAuth(legacy), timeout=10).status_code == 401


def test_legacy_tokens_can_be_switched_on_through_the_api(label_studio: LabelStudio) -> None:
    whoami = f"{label_studio.url}/api/current-user/whoami"
    with label_studio.login() as session:
        legacy = lsapi.legacy_token(session)
        lsapi.set_token_settings(session, personal=True, legacy=True)
        try:
            response = httpx.get(whoami, auth=lsapi.LegacyTokenAuth(legacy), timeout=10)
            assert response.status_code == 200, f"legacy Token refused after enabling it: {response.text}"
        finally:
            lsapi.set_token_settings(session, personal=True, legacy=False)
    assert httpx.get(whoami, auth=lsapi.LegacyTokenAuth(legacy), timeout=10).status_code == 401


def test_project_from_our_label_config_with_the_shared_photos(
    label_studio: LabelStudio, personal_access_token: str, ena24_dir: Path, ena24_labels: dict[str, str]
) -> None:
    auth = lsapi.PersonalAccessTokenAuth(label_studio.url, personal_access_token)
    photos = flows.shared_photos(ena24_dir, ena24_labels)
    with httpx.Client(base_url=label_studio.url, auth=auth, timeout=lsapi.REQUEST_TIMEOUT_S) as client:
        api = lsapi.LabelStudioAPI(client)
        project = flows.create_project(api, "Smoke: ENA24", photos)
        assert project.species == sorted(set(ena24_labels.values()))
        config = api.project(project.id)["label_config"]
        for species in project.species:
            assert f'value="{species}"' in config, f"{species} missing from the stored config"
        tasks = api.tasks(project.id)
        assert len(tasks) == len(photos), f"{len(tasks)} tasks for {len(photos)} photos"
        assert Counter(t["data"]["location"] for t in tasks) == Counter(p.location for p in photos)
        # The image as the backend downloads it: from /data/upload with a Bearer token.
        task_id, photo = next(iter(project.photos.items()))
        image = next(t for t in tasks if t["id"] == task_id)["data"]["image"]
        download = lsapi.check(client.get(image))
        assert download.content == photo.path.read_bytes(), f"{image} is not {photo.path.name}"
    assert httpx.get(f"{label_studio.url}{image}", timeout=10).status_code in (401, 403), "media served without auth"
