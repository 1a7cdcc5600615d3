"""Generated stand-ins for MegaDetector: real YOLOv5 networks with random weights.

MegaDetector weights cannot be downloaded here, so tests and benchmarks build a YOLOv5 model of the
same family, save it the way MDv5 checkpoints are saved (``{'model': <models.yolo.Model>}`` in a
``.pt`` file, classes pickled from YOLOv5's top-level ``models`` package) and load it through the
real ``megadetector`` loader. The detect head's objectness bias is raised so random weights emit boxes.
"""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

import torch

#: Small and fast: YOLOv5n at 320 px, for tests.
TINY = {"cfg": "yolov5n.yaml", "image_size": 320}
#: MDv5a's architecture: YOLOv5x6 at 1280 px, 3 classes, for benchmarks. Its random logits come out
#: nearly the same everywhere, so every box has about one confidence (here ~0.37: above the show and
#: species thresholds). Only the coarsest layer's largest anchor emits boxes and they are animals, so
#: after NMS a photo has 16-20 large animal boxes that the benchmarks crop and classify (a busy photo
#: for a real MDv5a; every anchor would give 300).
MDV5A_ARCH = {
    "cfg": "hub/yolov5x6.yaml",
    "image_size": 1280,
    "objectness_bias": 2.0,
    "animal_bias": 3.0,
    "largest_anchor_only": True,
}


#: Objectness logit subtracted from the anchors that stay silent (sigmoid(-10) ~ 0.00005).
SILENT_BIAS = 10.0


def _yolov5_models_module():
    import yolov5

    root = str(Path(yolov5.__file__).parent)
    if root not in sys.path:
        sys.path.insert(0, root)
    return importlib.import_module("models.yolo")


def make_yolov5_checkpoint(
    path: Path,
    cfg: str = TINY["cfg"],
    image_size: int = TINY["image_size"],
    objectness_bias: float = 3.2,
    class_bias: float = 2.0,
    animal_bias: float = 0.0,
    largest_anchor_only: bool = False,
    seed: int = 0,
) -> Path:
    """Write a random-weight 3-class YOLOv5 checkpoint that megadetector's loader accepts.

    Args:
        path: Output ``.pt`` file.
        cfg: A model yaml shipped with the ``yolov5`` package (``yolov5n.yaml``, ``yolov5x6.yaml``).
        image_size: Inference size stored in the file's MegaDetector metadata.
        objectness_bias: Added to the detect head's objectness logits so boxes are emitted.
        class_bias: Added to the class logits so confidences reach the display threshold.
        animal_bias: Added to the animal class's logit on top (random weights may favour person/vehicle
            everywhere, and only animal boxes are classified).
        seed: Torch seed for the random weights.
    """
    from megadetector.detection.pytorch_detector import add_metadata_to_megadetector_model_file

    yolo = _yolov5_models_module()
    torch.manual_seed(seed)
    model = yolo.Model(str(Path(yolo.__file__).parent / cfg), ch=3, nc=3)
    detect = model.model[-1]
    with torch.no_grad():
        for layer, conv in enumerate(detect.m):
            bias = conv.bias.view(detect.na, -1)
            if largest_anchor_only:
                bias[:, 4] -= SILENT_BIAS
                if layer == len(detect.m) - 1:
                    bias[-1, 4] += SILENT_BIAS + objectness_bias
            else:
                bias[:, 4] += objectness_bias
            bias[:, 5:] += class_bias
            bias[:, 5] += animal_bias
    path.parent.mkdir(parents=True, exist_ok=True)
    raw = path.with_suffix(".raw.pt")
    torch.save({"model": model.half()}, raw)
    add_metadata_to_megadetector_model_file(str(raw), str(path), {"image_size": image_size, "model_type": "yolov5"})
    raw.unlink()
    return path
