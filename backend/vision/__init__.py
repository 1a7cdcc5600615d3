"""Pixels in, boxes and species out: detectors, the species classifier, the crop, decoding, the pipeline.

Anyone may import it. No HTTP, Label Studio or Redis in here (checked by import-linter): images come
in as bytes or PIL images, results go out as plain dataclasses. See ``docs/architecture.md``.
"""
