"""MegadetectorLite: DrivenData's one-class YOLOX-tiny camera-trap animal detector, run offline.

The weights ship inside the ``zamba`` 2.7.2 wheel (MIT licence, DrivenData); ``backend.vision.mdlite_assets``
fetches them into a cache. ``zamba`` itself is not a dependency: the YOLOX-tiny network is re-implemented
below with the very module names of the checkpoint's state dict, and the pre- and postprocessing copy
``zamba/object_detection/yolox/megadetector_lite_yolox.py`` (``MegadetectorLiteYoloX.detect_image``):

* ``PIL.ImageOps.pad`` to 640x640 with bicubic resampling, the image in the **top-left** corner and the rest
  **black** (0), not YOLOX's own centred grey (114) letterbox;
* **RGB** channel order, float32 in 0..255, no mean/std normalisation;
* confidence = objectness x class score, kept when ``>= threshold``, then NMS at IoU 0.45;
* boxes divided by ``min(640 / width, 640 / height)`` and by the image size (zamba then stops; here they are
  also clipped to the image and written as MegaDetector's ``[x_min, y_min, width, height]``).

The network code follows YOLOX (Copyright (c) Megvii Inc., Apache License 2.0), as packaged by
``pixeltable-yolox`` 0.4.3 (``yolox/models/{network_blocks,darknet,yolo_pafpn,yolo_head}.py``), reduced to
what YOLOX-tiny inference needs.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import torch
import torchvision
from PIL import Image, ImageOps
from torch import nn

#: The zamba release whose wheel carries the weights.
ZAMBA_VERSION = "2.7.2"
#: Where the assets lie inside that wheel.
WHEEL_ASSET_DIR = "zamba/object_detection/yolox/assets"
#: The licence file inside that wheel.
WHEEL_LICENSE = f"zamba-{ZAMBA_VERSION}.dist-info/licenses/LICENSE"
WEIGHTS_NAME = "yolox_tiny_640_20220528.pth"
KWARGS_NAME = "yolox_tiny_640_20220528_model_kwargs.json"
WEIGHTS_SHA256 = "31f8690fc62f9d0756f1e8c09b0b02e5ade106173ed0a30743d47c004f88f4e0"
KWARGS_SHA256 = "2a9abe67556f6fb950026ace6b2fc0db2d50a24a0089402dedb4d018fcc2dd1f"
#: Side of the square network input, in pixels (``image_size`` of the kwargs file).
INPUT_SIZE = 640
#: ``MegadetectorLiteYoloXConfig.nms_threshold``.
NMS_IOU = 0.45
#: MegaDetector's category id of an animal: the model's only class.
ANIMAL = "1"

#: DrivenData's licence of the weights, to be kept with them.
DRIVENDATA_MIT_NOTICE = """\
MIT License

Copyright (c) 2022 DrivenData Inc.

Permission is hereby granted, free of charge, to any person obtaining a copy
of this software and associated documentation files (the "Software"), to deal
in the Software without restriction, including without limitation the rights
to use, copy, modify, merge, publish, distribute, sublicense, and/or sell
copies of the Software, and to permit persons to whom the Software is
furnished to do so, subject to the following conditions:

The above copyright notice and this permission notice shall be included in all
copies or substantial portions of the Software.

THE SOFTWARE IS PROVIDED "AS IS", WITHOUT WARRANTY OF ANY KIND, EXPRESS OR
IMPLIED, INCLUDING BUT NOT LIMITED TO THE WARRANTIES OF MERCHANTABILITY,
FITNESS FOR A PARTICULAR PURPOSE AND NONINFRINGEMENT. IN NO EVENT SHALL THE
AUTHORS OR COPYRIGHT HOLDERS BE LIABLE FOR ANY CLAIM, DAMAGES OR OTHER
LIABILITY, WHETHER IN AN ACTION OF CONTRACT, TORT OR OTHERWISE, ARISING FROM,
OUT OF OR IN CONNECTION WITH THE SOFTWARE OR THE USE OR OTHER DEALINGS IN THE
SOFTWARE.
"""

#: What the kwargs file must say for the network built here to fit the weights.
_EXPECTED_KWARGS = {"num_classes": 1, "backbone": "yolox-tiny", "image_size": INPUT_SIZE}
_FIX = "run `camtrap fetch mdlite` to download it again"

Detection = tuple[str, float, tuple[float, float, float, float]]
"""``(category, confidence, (x_min, y_min, width, height))``, the box normalised to [0, 1]."""


def sha256_of(path: Path) -> str:
    """Hex SHA-256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


# --- preprocessing -----------------------------------------------------------------------------------------


def letterbox(image: Image.Image, size: int = INPUT_SIZE) -> tuple[np.ndarray, float]:
    """zamba's ``scale_and_pad_array`` + ``_preprocess``: the network input of one image.

    The image (converted to RGB) is resized with bicubic resampling so that its longer side is ``size``,
    put in the top-left corner of a black ``size`` x ``size`` canvas, and returned as float32 ``(3, size,
    size)`` RGB in 0..255.

    Returns:
        The array, and the scale ``min(size / width, size / height)`` that maps original pixels to it.
    """
    rgb = image if image.mode == "RGB" else image.convert("RGB")
    padded = ImageOps.pad(rgb, (size, size), method=Image.Resampling.BICUBIC, color=(0, 0, 0), centering=(0, 0))
    array = np.ascontiguousarray(np.moveaxis(np.asarray(padded, dtype=np.float32), 2, 0))
    return array, min(size / rgb.width, size / rgb.height)


# --- YOLOX-tiny (depth 0.33, width 0.375, SiLU, no depthwise convs) -----------------------------------------


class BaseConv(nn.Module):
    """Conv2d (no bias) -> BatchNorm (eps 1e-3, as YOLOX's ``get_model`` sets) -> SiLU."""

    def __init__(self, in_channels: int, out_channels: int, ksize: int, stride: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, ksize, stride, padding=(ksize - 1) // 2, bias=False)
        self.bn = nn.BatchNorm2d(out_channels, eps=1e-3, momentum=0.03)
        self.act = nn.SiLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.bn(self.conv(x)))


class Bottleneck(nn.Module):
    def __init__(self, in_channels: int, out_channels: int, shortcut: bool) -> None:
        super().__init__()
        self.conv1 = BaseConv(in_channels, out_channels, 1, 1)
        self.conv2 = BaseConv(out_channels, out_channels, 3, 1)
        self.use_add = shortcut and in_channels == out_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv2(self.conv1(x))
        return y + x if self.use_add else y


class CspLayer(nn.Module):
    def __init__(self, in_channels: int, out_channels: int, n: int, shortcut: bool = True) -> None:
        super().__init__()
        hidden = out_channels // 2
        self.conv1 = BaseConv(in_channels, hidden, 1, 1)
        self.conv2 = BaseConv(in_channels, hidden, 1, 1)
        self.conv3 = BaseConv(2 * hidden, out_channels, 1, 1)
        self.m = nn.Sequential(*[Bottleneck(hidden, hidden, shortcut) for _ in range(n)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv3(torch.cat((self.m(self.conv1(x)), self.conv2(x)), dim=1))


class SPPBottleneck(nn.Module):
    def __init__(self, in_channels: int, out_channels: int, kernel_sizes: tuple[int, ...] = (5, 9, 13)) -> None:
        super().__init__()
        hidden = in_channels // 2
        self.conv1 = BaseConv(in_channels, hidden, 1, 1)
        self.m = nn.ModuleList([nn.MaxPool2d(k, stride=1, padding=k // 2) for k in kernel_sizes])
        self.conv2 = BaseConv(hidden * (len(kernel_sizes) + 1), out_channels, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv1(x)
        return self.conv2(torch.cat([x] + [pool(x) for pool in self.m], dim=1))


class Focus(nn.Module):
    def __init__(self, in_channels: int, out_channels: int, ksize: int) -> None:
        super().__init__()
        self.conv = BaseConv(in_channels * 4, out_channels, ksize, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(torch.cat((x[..., ::2, ::2], x[..., 1::2, ::2], x[..., ::2, 1::2], x[..., 1::2, 1::2]), dim=1))


class CspDarknet(nn.Module):
    def __init__(self, depth: float, width: float) -> None:
        super().__init__()
        c = int(width * 64)
        d = max(round(depth * 3), 1)
        self.stem = Focus(3, c, ksize=3)
        self.dark2 = nn.Sequential(BaseConv(c, c * 2, 3, 2), CspLayer(c * 2, c * 2, d))
        self.dark3 = nn.Sequential(BaseConv(c * 2, c * 4, 3, 2), CspLayer(c * 4, c * 4, d * 3))
        self.dark4 = nn.Sequential(BaseConv(c * 4, c * 8, 3, 2), CspLayer(c * 8, c * 8, d * 3))
        self.dark5 = nn.Sequential(
            BaseConv(c * 8, c * 16, 3, 2),
            SPPBottleneck(c * 16, c * 16),
            CspLayer(c * 16, c * 16, d, shortcut=False),
        )

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        dark3 = self.dark3(self.dark2(self.stem(x)))
        dark4 = self.dark4(dark3)
        return dark3, dark4, self.dark5(dark4)


class YoloPafpn(nn.Module):
    def __init__(self, depth: float, width: float) -> None:
        super().__init__()
        c0, c1, c2 = (int(c * width) for c in (256, 512, 1024))
        n = round(3 * depth)
        self.backbone = CspDarknet(depth, width)
        self.upsample = nn.Upsample(scale_factor=2, mode="nearest")
        self.lateral_conv0 = BaseConv(c2, c1, 1, 1)
        self.C3_p4 = CspLayer(2 * c1, c1, n, False)
        self.reduce_conv1 = BaseConv(c1, c0, 1, 1)
        self.C3_p3 = CspLayer(2 * c0, c0, n, False)
        self.bu_conv2 = BaseConv(c0, c0, 3, 2)
        self.C3_n3 = CspLayer(2 * c0, c1, n, False)
        self.bu_conv1 = BaseConv(c1, c1, 3, 2)
        self.C3_n4 = CspLayer(2 * c1, c2, n, False)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        x2, x1, x0 = self.backbone(x)
        fpn_out0 = self.lateral_conv0(x0)
        f_out0 = self.C3_p4(torch.cat([self.upsample(fpn_out0), x1], 1))
        fpn_out1 = self.reduce_conv1(f_out0)
        pan_out2 = self.C3_p3(torch.cat([self.upsample(fpn_out1), x2], 1))
        pan_out1 = self.C3_n3(torch.cat([self.bu_conv2(pan_out2), fpn_out1], 1))
        pan_out0 = self.C3_n4(torch.cat([self.bu_conv1(pan_out1), fpn_out0], 1))
        return pan_out2, pan_out1, pan_out0


class YoloxHead(nn.Module):
    """Decoupled head; ``forward`` returns decoded ``[batch, anchors, 4 + 1 + classes]``: centre x, centre y,
    width, height in input pixels, then sigmoid objectness and class scores (YOLOX's inference output)."""

    def __init__(self, num_classes: int, width: float, strides: tuple[int, ...] = (8, 16, 32)) -> None:
        super().__init__()
        hidden = int(256 * width)
        self.strides = strides
        self.stems = nn.ModuleList()
        self.cls_convs = nn.ModuleList()
        self.reg_convs = nn.ModuleList()
        self.cls_preds = nn.ModuleList()
        self.reg_preds = nn.ModuleList()
        self.obj_preds = nn.ModuleList()
        for channels in (256, 512, 1024):
            self.stems.append(BaseConv(int(channels * width), hidden, 1, 1))
            self.cls_convs.append(nn.Sequential(BaseConv(hidden, hidden, 3, 1), BaseConv(hidden, hidden, 3, 1)))
            self.reg_convs.append(nn.Sequential(BaseConv(hidden, hidden, 3, 1), BaseConv(hidden, hidden, 3, 1)))
            self.cls_preds.append(nn.Conv2d(hidden, num_classes, 1))
            self.reg_preds.append(nn.Conv2d(hidden, 4, 1))
            self.obj_preds.append(nn.Conv2d(hidden, 1, 1))

    def forward(self, features: tuple[torch.Tensor, ...]) -> torch.Tensor:
        levels = []
        for k, (x, stride) in enumerate(zip(features, self.strides, strict=True)):
            x = self.stems[k](x)
            reg_feat = self.reg_convs[k](x)
            out = torch.cat(
                [
                    self.reg_preds[k](reg_feat),
                    self.obj_preds[k](reg_feat).sigmoid(),
                    self.cls_preds[k](self.cls_convs[k](x)).sigmoid(),
                ],
                dim=1,
            )
            height, width = out.shape[-2:]
            out = out.flatten(start_dim=2).permute(0, 2, 1)  # [batch, height*width, channels]
            ys, xs = torch.meshgrid(
                torch.arange(height, device=out.device), torch.arange(width, device=out.device), indexing="ij"
            )
            grid = torch.stack((xs, ys), dim=2).view(1, -1, 2).to(out.dtype)
            levels.append(
                torch.cat([(out[..., :2] + grid) * stride, torch.exp(out[..., 2:4]) * stride, out[..., 4:]], dim=-1)
            )
        return torch.cat(levels, dim=1)


class YoloxTiny(nn.Module):
    """YOLOX-tiny; its state-dict keys are those of YOLOX's ``YOLOX`` / ``YoloxModule`` checkpoints."""

    def __init__(self, num_classes: int = 1) -> None:
        super().__init__()
        self.backbone = YoloPafpn(depth=0.33, width=0.375)
        self.head = YoloxHead(num_classes, width=0.375)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone(x))


# --- postprocessing ----------------------------------------------------------------------------------------


def postprocess(
    raw: torch.Tensor, threshold: float, nms_iou: float = NMS_IOU
) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """``yolox.utils.boxes.postprocess`` as zamba calls it: per image, corner boxes ``[n, 4]`` (input pixels)
    and confidences ``[n]`` (objectness x best class score ``>= threshold``, after NMS), highest first."""
    corners = torch.cat([raw[..., :2] - raw[..., 2:4] / 2, raw[..., :2] + raw[..., 2:4] / 2], dim=-1)
    class_conf, class_pred = raw[..., 5:].max(dim=-1)
    scores = raw[..., 4] * class_conf
    results = []
    for boxes, score, label in zip(corners, scores, class_pred, strict=True):
        keep = score >= threshold
        boxes, score, label = boxes[keep], score[keep], label[keep]
        order = torchvision.ops.batched_nms(boxes, score, label, nms_iou)  # sorted by score, descending
        results.append((boxes[order], score[order]))
    return results


def to_megadetector_boxes(
    corners: np.ndarray, scale: float, width: int, height: int
) -> list[tuple[float, float, float, float]]:
    """Corner boxes in network-input pixels -> ``[x_min, y_min, width, height]`` in [0, 1] of the original image
    (zamba's ``_process_frame_output``, then clipped to the image)."""
    normalised = corners / scale / np.array([width, height, width, height], dtype=np.float64)
    clipped = np.clip(normalised, 0.0, 1.0)
    return [(float(x1), float(y1), float(x2 - x1), float(y2 - y1)) for x1, y1, x2, y2 in clipped]


# --- the model ---------------------------------------------------------------------------------------------


class MDLiteModel:
    """A loaded MegadetectorLite. Not thread-safe: serialise calls to :meth:`detect`."""

    def __init__(self, network: YoloxTiny, device: torch.device) -> None:
        self.network = network
        self.device = device

    @classmethod
    def load(cls, weights: Path, kwargs_json: Path, device: str = "cpu") -> MDLiteModel:
        """Load the zamba YOLOX-tiny checkpoint after checking both files' SHA-256.

        Raises:
            ValueError: a file is missing, is not the expected one, or cannot be loaded (one sentence that names
                the file and says how to fix it).
        """
        weights, kwargs_json = Path(weights), Path(kwargs_json)
        for path, expected in ((weights, WEIGHTS_SHA256), (kwargs_json, KWARGS_SHA256)):
            if not path.is_file():
                raise ValueError(f"MegadetectorLite file {path} is missing: {_FIX}")
            if sha256_of(path) != expected:
                raise ValueError(
                    f"MegadetectorLite file {path} is corrupt or not the zamba {ZAMBA_VERSION} one "
                    f"(SHA-256 differs): {_FIX}"
                )
        try:
            kwargs = json.loads(kwargs_json.read_text())
            if {k: kwargs.get(k) for k in _EXPECTED_KWARGS} != _EXPECTED_KWARGS:
                raise ValueError(f"expected {_EXPECTED_KWARGS}, found {kwargs}")
            checkpoint = torch.load(weights, map_location="cpu", weights_only=True, mmap=True)
            network = YoloxTiny(num_classes=kwargs["num_classes"])
            network.load_state_dict(checkpoint["model"], strict=True)
            del checkpoint
            target = torch.device(device)
            network = network.eval().requires_grad_(False).to(target)
        except Exception as exc:
            raise ValueError(
                f"cannot load MegadetectorLite from {weights} ({type(exc).__name__}: {exc}): {_FIX}"
            ) from exc
        return cls(network, target)

    def detect(self, images: list[Image.Image], threshold: float) -> list[list[Detection]]:
        """Detect animals in images, all in one forward pass.

        Args:
            images: Decoded images (RGB; other modes are converted), EXIF orientation already applied.
            threshold: Lowest confidence kept (inclusive).

        Returns:
            Per image, ``(category "1", confidence, (x_min, y_min, width, height))`` tuples, the box normalised
            to [0, 1] and clipped to the image, highest confidence first.
        """
        if not images:
            return []
        inputs = [letterbox(image) for image in images]
        batch = torch.from_numpy(np.stack([array for array, _ in inputs])).to(self.device)
        with torch.inference_mode():
            per_image = postprocess(self.network(batch), threshold)
        results: list[list[Detection]] = []
        for image, (_, scale), (corners, scores) in zip(images, inputs, per_image, strict=True):
            boxes = to_megadetector_boxes(corners.double().cpu().numpy(), scale, image.width, image.height)
            results.append(
                [
                    (ANIMAL, float(score), box)
                    for score, box in zip(scores.tolist(), boxes, strict=True)
                    if box[2] > 0 and box[3] > 0
                ]
            )
        return results
