"""Browser check: a pre-annotated task opens in Label Studio's editor with the MegaDetector regions.

Headless Debian Chromium (``/usr/bin/chromium``, never a downloaded browser) driven by Playwright's
Python package. The test logs in through the login form, opens the labeling page of one task
whose boxes came from our backend, and checks that the editor's region list shows every box of
the stored prediction. The screenshot goes to the test's tmp dir, and to docs/img/prelabels.png
(the README's picture) when that file is missing or ``CAMTRAP_UPDATE_SCREENSHOT=1``.

The stack runs MegadetectorLite's real weights (``DETECTOR_MODEL=mdlite``), so the boxes are on the animal.
The project keeps only the ``animal`` box label (a documented way to adapt label_config.xml; the backend
drops the other categories; MegadetectorLite finds only animals anyway).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from PIL import Image
from playwright.sync_api import Page, expect, sync_playwright

from tests.e2e import flows
from tests.e2e.conftest import REPO_ROOT, Stack

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(1800)]

CHROMIUM = Path(os.environ.get("CAMTRAP_CHROMIUM", "/usr/bin/chromium"))
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
SCREENSHOT = REPO_ROOT / "docs" / "img" / "prelabels.png"
#: Most regions the editor's region list is sure to render at this viewport size.
MAX_REGIONS = 12
#: The photo opened in the editor (a daylight one).
PHOTO_SPECIES = "American Black Bear"
UI_TIMEOUT_MS = 90_000


@pytest.fixture
def browser_page() -> Iterator[Page]:
    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} is missing: apt-get install chromium (scripts/test.sh installs it)")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS)
        try:
            context = browser.new_context(viewport={"width": 1280, "height": 1100})
            context.set_default_timeout(UI_TIMEOUT_MS)
            yield context.new_page()
        finally:
            browser.close()


def test_prelabeled_task_shows_megadetector_regions(
    pat_stack: Stack, browser_page: Page, ena24_dir: Path, ena24_labels: dict[str, str], tmp_path: Path
) -> None:
    stack, page = pat_stack, browser_page
    photo = next(p for p in flows.shared_photos(ena24_dir, ena24_labels) if p.species == PHOTO_SPECIES)
    project = flows.create_project(stack.api, "Browser check (animals only)", [photo], box_labels={"animal"})
    (task_id,) = project.photos
    ml = stack.api.connect_ml_backend(
        project.id, stack.backend.url, "Camtrap MegaDetector", basic_auth=stack.backend.basic_auth
    )
    assert ml["state"] == "CO", f"LS did not connect the backend: {ml}"
    stack.api.retrieve_predictions(project.id, [task_id])
    (prediction,) = flows.predictions_by_task(stack.api, project.id)[task_id]
    flows.check_boxes(prediction, f"task {task_id}")
    expected = len(flows.boxes(prediction))
    assert 0 < expected <= MAX_REGIONS, f"{expected} boxes on the page: {prediction}"
    assert {label for box in flows.boxes(prediction) for label in box["value"]["rectanglelabels"]} == {"animal"}
    assert prediction["model_version"] == "mdlite+none", prediction["model_version"]
    top = max(flows.boxes(prediction), key=lambda b: b.get("score") or 0)["value"]
    assert top["width"] * top["height"] > 100, f"the bear's box is a speck: {top}"  # over 1% of the photo

    page.goto(f"{stack.ls.url}/user/login/")
    page.fill("input[name=email]", stack.ls.email)
    page.fill("input[name=password]", stack.ls.password)
    page.click("button[type=submit]")
    page.wait_for_url(lambda url: "/user/login" not in url)

    page.goto(f"{stack.ls.url}/projects/{project.id}/data?task={task_id}")
    # The editor: the photo decoded, then one outliner row per box of the prediction.
    page.wait_for_function(
        "() => { const img = document.querySelector('img[alt=image]');"
        " return img && img.complete && img.naturalWidth > 0; }"
    )
    regions = page.locator(".lsf-outliner-item")
    expect(regions).to_have_count(expected)
    labels = {regions.nth(i).locator(".lsf-outliner-item__title").inner_text().strip() for i in range(expected)}
    assert labels == {"animal"}, f"the region list shows {labels}"

    shot = tmp_path / "prelabels.png"
    page.screenshot(path=str(shot))
    shrink_png(shot)
    print(f"screenshot: {shot} ({shot.stat().st_size // 1024} KiB), {expected} regions")  # noqa: T201
    if not SCREENSHOT.exists() or os.environ.get("CAMTRAP_UPDATE_SCREENSHOT") == "1":
        SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(shot, SCREENSHOT)


def shrink_png(path: Path, width: int = 1024, colors: int = 128) -> None:
    """Downscale and palette-quantise a screenshot so the committed picture stays small."""
    with Image.open(path) as image:
        rgb = image.convert("RGB")
    height = round(rgb.height * width / rgb.width)
    small = rgb.resize((width, height), Image.Resampling.LANCZOS)
    small.quantize(colors=colors, method=Image.Quantize.MEDIANCUT).save(path, optimize=True)
