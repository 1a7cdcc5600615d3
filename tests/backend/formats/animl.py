"""COCO Camera Traps files shaped as Animl's export writes them (tnc-ca-geo/animl-api ``src/task/annotations.ts``,
``../shared/docs/user-formats.md`` §4.2): category 0 ``empty`` then the project's labels in project order,
``<project>/<camera>/<deployment>/<project>-<hash>.<ext>`` file names, ISO datetimes with an offset, the
deployment name as ``location``, no ``seq_id``, integer boxes, ``confidence``/``validated``/``validated_by``,
an empty image as a full-frame ``empty`` box, and images with no annotation at all."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class AnimlImage:
    hash: str
    deployment: str
    width: int | None
    height: int | None
    labels: Sequence[tuple[str, tuple[int, int, int, int] | None]]
    """(label, absolute box or None) per object; ``("empty", None)`` is written as Animl's full-frame box."""

    @property
    def file_name(self) -> str:
        return f"proj1/cam42/{self.deployment.lower().replace(' ', '_')}/proj1-{self.hash}.jpg"


def animl_coco(images: Sequence[AnimlImage], project_labels: Sequence[str]) -> dict:
    categories = [{"id": 0, "name": "empty"}] + [
        {"id": i, "name": name} for i, name in enumerate((n for n in project_labels if n != "empty"), start=1)
    ]
    ids = {c["name"]: c["id"] for c in categories}
    coco_images, annotations = [], []
    for n, image in enumerate(images):
        entry = {
            "id": f"proj1:{image.hash}",
            "file_name": image.file_name,
            "original_file_name": f"IMG_{n:04d}.JPG",
            "serving_bucket_key": f"original/proj1:{image.hash}-original.jpg",
            "datetime": f"2023-05-01T12:{n % 60:02d}:56.000-07:00",
            "location": image.deployment,
        }
        if image.width is not None:
            entry.update(width=image.width, height=image.height)
        coco_images.append(entry)
        for k, (label, box) in enumerate(image.labels):
            if label == "empty":
                box = (0, 0, image.width or 0, image.height or 0)
            annotations.append(
                {
                    "id": f"65f0{n:04d}{k:02d}",
                    "image_id": f"proj1:{image.hash}",
                    "category_id": ids[label],
                    "sequence_level_annotation": False,
                    "bbox": list(box) if box is not None else None,
                    "confidence": 0.93,
                    "validated": True,
                    "validated_by": "user-123",
                }
            )
    return {
        "images": coco_images,
        "annotations": annotations,
        "categories": categories,
        "info": {
            "version": "1.0",
            "description": "Image data exported from Animl project 'proj1'. Export ID: abc",
            "year": 2023,
            "date_created": "2023-06-01T00:00:00.000-07:00",
        },
    }
