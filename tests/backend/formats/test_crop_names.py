"""Crop names as MegaDetector's crop_detections writes them and merge_classification_detection_output reads them."""

from __future__ import annotations

from backend.formats.crop_names import md_crop_name, parse_crop_name, source_image


def test_names_round_trip_the_way_megadetector_parses_them() -> None:
    name = md_crop_name("cam1/IMG_0001.JPG", 3, "md_v5a.0.0.pt")
    assert name == "cam1/IMG_0001.JPG___crop03_md_v5a.0.0.pt.jpg"
    image, suffix = name.split("___crop")  # merge_classification_detection_output.py
    assert (image, int(suffix[:2])) == parse_crop_name(name) == ("cam1/IMG_0001.JPG", 3)
    assert md_crop_name("a.jpg", 0, None) == "a.jpg___crop00_unknown.jpg"
    assert md_crop_name("a.jpg", 12, "x", ground_truth=True) == "a.jpg___crop12.jpg"
    assert parse_crop_name("plain.jpg") is None
    assert source_image("x/IMG_1.jpg___crop01_md.jpg") == "x/IMG_1.jpg"
