"""``camtrap export --format camtrapdp``: a Camtrap DP 1.0 package that frictionless validates against the vendored
profile, and what makes one invalid (a broken package fails; bad input writes nothing)."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import pytest
from PIL import Image

from backend.formats.camtrapdp import PROFILE_URL, SCHEMA_URLS, report_summary, validate_package
from tests.backend.fake_ls import serve_in_thread
from tests.trainer.fake_label_studio import TOKEN, FakeProject, synthetic_project
from tests.trainer.recipe import camtrap
from tests.trainer.test_project_export import _prediction

EXIF_IFD = 0x8769
DATETIME_ORIGINAL = 36867


def _project(tmp_path: Path) -> FakeProject:
    """Two sites: site-0's coordinates in its tasks' data, site-1's from a locations file; one photo has EXIF."""
    fake = synthetic_project(tmp_path / "photos", per_species=2, sites=2)
    for task in fake.tasks:
        if task["data"].get("location") == "site-0":
            task["data"].update(latitude=51.05, longitude=3.72)
    first = tmp_path / "photos" / fake.tasks[0]["data"]["image"].rsplit("/", 1)[-1]
    with Image.open(first) as image:
        exif = image.getexif()
        exif.get_ifd(EXIF_IFD)[DATETIME_ORIGINAL] = "2026:05:01 06:30:00"
        image.load()
        image.save(first, exif=exif, quality=90)
    fake.predictions = [_prediction(1, 1, "Red Deer", "p2-new", "2026-11-02T00:00:00Z")]
    fake.tasks[0]["predictions"] = [1]
    return fake


def _export(fake: FakeProject, cwd: Path, *extra: str):
    with serve_in_thread(fake.app()) as url:
        env = {"LABEL_STUDIO_URL": url, "LABEL_STUDIO_API_KEY": TOKEN}
        args = ["export", "--project", "2", "--format", "camtrapdp", "-o", "season_dp", *extra]
        return camtrap(args, cwd, env=env)


def _rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp_path = tmp_path_factory.mktemp("camtrapdp")
    (tmp_path / "sites.csv").write_text("location,latitude,longitude,coordinateUncertainty\nsite-1,51.10,3.80,25\n")
    done = _export(_project(tmp_path), tmp_path, "--locations", "sites.csv", "--images-root", "photos")
    assert done.returncode == 0, done.stderr[-2000:]
    return tmp_path / "season_dp"


def test_export_is_a_valid_camtrap_dp_package(exported: Path) -> None:
    report = validate_package(exported)
    assert report.valid, report_summary(report, exported)
    package = json.loads((exported / "datapackage.json").read_text())
    assert package["profile"] == PROFILE_URL
    assert {r["name"]: r["schema"] for r in package["resources"]} == SCHEMA_URLS
    assert {t["scientificName"] for t in package["taxonomic"]} == {"Red Deer", "Green Frog", "Blue Jay"}
    deployments = {d["deploymentID"]: d for d in _rows(exported / "deployments.csv")}
    assert (deployments["site-0"]["latitude"], deployments["site-1"]["coordinateUncertainty"]) == ("51.05", "25")
    media = {m["mediaID"]: m for m in _rows(exported / "media.csv")}
    assert len(media) == 6
    assert media["1"]["timestamp"] == "2026-05-01T06:30:00Z", "EXIF DateTimeOriginal, read as UTC"
    assert deployments["site-0"]["timestampIssues"] == "true", "the other photos have only their file's mtime"
    observations = _rows(exported / "observations.csv")
    methods = [(o["mediaID"], o["classificationMethod"], o["classifiedBy"]) for o in observations]
    assert methods.count(("1", "machine", "p2-new")) == 1
    assert sum(1 for _, method, _ in methods if method == "human") == 6
    [machine] = [o for o in observations if o["classificationMethod"] == "machine"]
    assert (machine["scientificName"], machine["classificationProbability"], machine["bboxX"]) == (
        "Red Deer",
        "0.77",
        "0.2",
    )


def test_a_broken_package_fails_validation(exported: Path, tmp_path: Path) -> None:
    broken = tmp_path / "broken"
    shutil.copytree(exported, broken)
    table = broken / "observations.csv"
    table.write_text(table.read_text().replace(",human,", ",robot,", 1))
    report = validate_package(broken)
    assert not report.valid
    assert "observations.csv row 2" in report_summary(report, broken) and "classificationMethod" in report_summary(
        report, broken
    )
    shutil.copy(exported / "observations.csv", table)
    package = json.loads((broken / "datapackage.json").read_text())
    del package["taxonomic"]
    (broken / "datapackage.json").write_text(json.dumps(package))
    report = validate_package(broken)
    assert not report.valid and "'taxonomic' is a required property" in report_summary(report, broken)


def test_missing_coordinates_name_the_location_and_write_nothing(tmp_path: Path) -> None:
    done = _export(_project(tmp_path), tmp_path, "--images-root", "photos")
    assert done.returncode == 1
    assert "location 'site-1'" in done.stderr and "--locations" in done.stderr
    assert not (tmp_path / "season_dp").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".season_dp")], "no staging folder left"


def test_a_photo_without_any_time_is_named(tmp_path: Path) -> None:
    (tmp_path / "sites.csv").write_text("location,latitude,longitude\nsite-1,51.1,3.8\n")
    done = _export(_project(tmp_path), tmp_path, "--locations", "sites.csv")
    assert done.returncode == 1 and "task 1 (/data/upload/2/" in done.stderr and "media.timestamp" in done.stderr
    assert not (tmp_path / "season_dp").exists()


def test_a_bad_locations_line_is_named(tmp_path: Path) -> None:
    (tmp_path / "sites.csv").write_text("location,latitude,longitude\nsite-1,north,3.8\n")
    done = _export(_project(tmp_path), tmp_path, "--locations", "sites.csv", "--images-root", "photos")
    assert done.returncode == 1 and "sites.csv, line 2: expected decimal degrees" in done.stderr
    assert not (tmp_path / "season_dp").exists()
