"""``model.pt``: a bundle's classifier as TorchScript, a drop-in for MegaDetector's ``run_classifier.py``.

``run_classifier.py`` (and the comvis recipe's ``run_classifier.sh``) ``torch.jit.load``s a model and feeds
it ``1 x 3 x S x S`` crops, resized (bicubic), centre-cropped and normalised with ImageNet's mean and std;
it applies the softmax itself. So the module saved here:

- takes ImageNet-normalised input and re-normalises it to the bundle's own mean and std inside the graph
  (the identity for our bundles, which use ImageNet's; a bundle with other statistics stays drop-in);
- resizes any other input size to the bundle's ``input_size`` (``run_classifier.py`` defaults to 224);
- returns logits, one per class in label-index order;
- carries its labels (``labels`` attribute and the extra file ``label_index.json``) and ``input_size``, so
  ``camtrap classify model.pt CROPS`` needs nothing beside it.

It is a scripted module: loading it needs torch only, not this code.
"""

# No `from __future__ import annotations`: TorchScript reads the class annotations below as real types.

import json
import warnings
from pathlib import Path

import torch
import torch.nn.functional as F  # noqa: N812 (torch's own convention)
from torch import nn

from backend.contracts.bundle import Preprocessing
from backend.formats.atomic import atomic_target
from backend.vision.classifier import SpeciesClassifier

#: The file name under ``BASE/logs``.
MODEL_FILE = "model.pt"
#: The extra file inside ``model.pt`` holding ``{"0": label, ...}``.
LABELS_EXTRA_FILE = "label_index.json"
#: ImageNet statistics, what ``run_classifier.py`` normalises with.
IMAGENET = Preprocessing()


class DropInClassifier(nn.Module):
    """The bundle's network behind ImageNet-normalised input of any square size.

    ``labels`` and ``input_size`` are plain attributes (TorchScript infers ``List[str]`` and ``int``).
    """

    scale: torch.Tensor
    shift: torch.Tensor

    def __init__(self, network: nn.Module, preprocessing: Preprocessing, labels: list[str]) -> None:
        super().__init__()
        self.network = network
        self.labels = list(labels)
        self.input_size = preprocessing.input_size
        imagenet_mean, imagenet_std = torch.tensor(IMAGENET.mean), torch.tensor(IMAGENET.std)
        mean, std = torch.tensor(preprocessing.mean), torch.tensor(preprocessing.std)
        # x_ours = (x * std_in + mean_in - mean) / std
        self.register_buffer("scale", (imagenet_std / std).view(1, 3, 1, 1))
        self.register_buffer("shift", ((imagenet_mean - mean) / std).view(1, 3, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-1] != self.input_size or x.shape[-2] != self.input_size:
            x = F.interpolate(
                x, size=[self.input_size, self.input_size], mode="bilinear", align_corners=False, antialias=True
            )
        return self.network(x * self.scale + self.shift)


def export_torchscript(bundle: Path, target: Path) -> Path:
    """Script the bundle's classifier (on the CPU) and save it to ``target`` atomically.

    Raises:
        BundleError: the bundle cannot be loaded.
    """
    classifier = SpeciesClassifier.load(bundle, "cpu")
    module = DropInClassifier(classifier.network, classifier.manifest.preprocessing, classifier.labels).eval()
    with warnings.catch_warnings():  # torch 2.15 marks jit.script deprecated; run_classifier.py needs TorchScript
        warnings.simplefilter("ignore", FutureWarning)
        scripted = torch.jit.script(module)
    extra = {LABELS_EXTRA_FILE: json.dumps({str(i): label for i, label in enumerate(classifier.labels)}, indent=1)}
    with atomic_target(target) as tmp:
        torch.jit.save(scripted, str(tmp), _extra_files=extra)
    return target


def load_torchscript(path: Path, device: torch.device | str = "cpu") -> tuple[torch.jit.ScriptModule, list[str], int]:
    """``(module, labels, input_size)`` of a TorchScript classifier.

    Labels come from the file itself (ours), else from ``label_index.json`` or ``label_correspondance.json``
    beside it (a model trained elsewhere); the input size from the module, else 224 (``run_classifier.py``'s).

    Raises:
        ValueError: not a TorchScript file, or no labels found (the message says where it looked).
    """
    from backend.formats.label_spec import read_label_index

    extra = {LABELS_EXTRA_FILE: ""}
    try:
        module = torch.jit.load(str(path), map_location=device, _extra_files=extra)
    except (RuntimeError, ValueError) as exc:
        raise ValueError(f"{path} is not a TorchScript model ({str(exc).splitlines()[0]})") from exc
    labels: list[str] | None = None
    if extra[LABELS_EXTRA_FILE]:
        index = json.loads(extra[LABELS_EXTRA_FILE])
        labels = [index[str(i)] for i in range(len(index))]
    else:
        for name in (LABELS_EXTRA_FILE, "label_correspondance.json"):
            if (Path(path).parent / name).is_file():
                labels = read_label_index(Path(path).parent / name)
                break
    if labels is None:
        raise ValueError(
            f"{path} carries no labels and there is no label_index.json or label_correspondance.json beside it"
        )
    input_size = int(getattr(module, "input_size", 224))
    return module.eval(), labels, input_size
