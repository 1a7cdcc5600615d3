"""The classifier's starting weights: which pretrained weights a backbone starts from, and where they come from.

* torchvision backbones start from their ImageNet weights (the weights enum's ``DEFAULT``), got through
  torch.hub as torchvision itself does (``WeightsEnum.get_state_dict`` is ``load_state_dict_from_url``):
  downloaded once into ``$TORCH_HOME/hub/checkpoints`` (default ``~/.cache/torch/hub/checkpoints``), the
  download checked against the hash prefix in the file name (``-7f5810bc.pth``), a cached file used as is.
  ``PRETRAINED_URL`` replaces torchvision's URL (a mirror inside the lab's network).
* ``mdlite`` starts from MegadetectorLite's CspDarknet, from the weights ``camtrap fetch mdlite`` cached
  (``backend.vision.mdlite_assets``), checked by SHA-256; never downloaded here.
* Otherwise (offline, no cache, a corrupt file): random weights, allowed, and said as :data:`NO_PRETRAINED`
  in the log, the job's progress, the model card and ``GET /models``.

The result is a :class:`~backend.contracts.bundle.StartingWeights` the bundle records (name, source, sha256).
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import sys
import urllib.parse
from pathlib import Path

import torch
from torchvision import models

from backend.contracts.bundle import StartingWeights
from backend.vision import mdlite_assets
from backend.vision.classifier import MDLITE_BACKBONE
from backend.vision.mdlite import sha256_of
from trainer.config import TrainConfig

logger = logging.getLogger(__name__)

#: The CspDarknet's key prefix inside the MegadetectorLite checkpoint (YOLOX's model.backbone.backbone).
MDLITE_PREFIX = "backbone.backbone."

StateDict = dict[str, torch.Tensor]


class FetchError(ValueError):
    """``camtrap fetch imagenet`` could not get the weights; the message says how to provide them by hand."""


def imagenet_weights(backbone: str) -> models.WeightsEnum:
    """torchvision's default ImageNet weights of ``backbone``.

    Raises:
        ValueError: ``backbone`` is not a torchvision classification model.
    """
    if backbone not in models.list_models(module=models):
        raise ValueError(f"{backbone!r} is not a torchvision classification model")
    return models.get_model_weights(backbone).DEFAULT


def imagenet_url(backbone: str, override: str = "") -> str:
    """Where ``backbone``'s ImageNet weights are downloaded from: ``override`` (``PRETRAINED_URL``) or torchvision's."""
    return override or imagenet_weights(backbone).url


def cached_file(url: str) -> Path:
    """The torch.hub cache file of ``url`` (``<torch hub dir>/checkpoints/<file name>``)."""
    return Path(torch.hub.get_dir()) / "checkpoints" / Path(urllib.parse.urlparse(url).path).name


def fetch_imagenet(backbone: str, override: str = "") -> Path:
    """Download ``backbone``'s ImageNet weights into the torch.hub cache (nothing when already cached).

    Raises:
        FetchError: not a torchvision model, the URL cannot be reached, or the download does not match the
            hash in its file name (one sentence saying how to provide the file by hand).
    """
    try:
        url = imagenet_url(backbone, override)
    except ValueError as exc:
        raise FetchError(f"cannot fetch ImageNet weights: {exc}") from exc
    try:
        _load(url)
    except (OSError, RuntimeError, ValueError) as exc:
        raise FetchError(
            f"could not fetch the ImageNet weights of {backbone} from {url} ({str(exc).splitlines()[0]}); copy "
            f"{cached_file(url).name} into {cached_file(url).parent} by hand, or set PRETRAINED_URL to a mirror"
        ) from exc
    return cached_file(url)


def starting_weights(
    backbone: str, *, pretrained: bool = True, url: str = ""
) -> tuple[StateDict | None, StartingWeights]:
    """The state dict ``build_network(backbone, ..., start=...)`` starts from, and what the bundle records of it.

    Args:
        backbone: ``mdlite`` or a torchvision model name.
        pretrained: False: random weights (tests, benchmarks of random init).
        url: ``PRETRAINED_URL``: replaces torchvision's download URL (torchvision backbones only).

    Returns:
        ``(None, random)`` when no pretrained weights can be had; the reason is logged as a warning.
    """
    if not pretrained:
        return None, _random(backbone, "pretrained weights were switched off for this run")
    if backbone == MDLITE_BACKBONE:
        return _mdlite()
    return _imagenet(backbone, url)


def offline_fallback(config: TrainConfig) -> TrainConfig:
    """``config`` with ``OFFLINE_BACKBONE`` as its backbone when the default backbone's ImageNet weights cannot
    be had (not cached, no network) and the offline backbone's can; else ``config`` unchanged. A backbone
    someone chose (``TRAIN_BACKBONE``, ``--backbone``) is never replaced (``TrainConfig.offline_backbone`` is
    then empty).

    ``bench/transfer.py`` measured MegadetectorLite's backbone ahead of a random-init EfficientNet-B0 on
    ENA24 crops (mean macro-F1 0.500 vs 0.085 over 3 seeds), so an offline machine trains it rather than a
    random EfficientNet (said in the log).
    """
    fallback = config.offline_backbone
    if not config.imagenet_weights or not fallback or config.backbone in (fallback, MDLITE_BACKBONE):
        return config
    try:
        fetch_imagenet(config.backbone, config.pretrained_url)
    except FetchError as exc:
        if fallback == MDLITE_BACKBONE:
            try:
                mdlite_assets.verify()
            except mdlite_assets.MissingAssetError:
                return config
        logger.warning("%s; training OFFLINE_BACKBONE %s instead of %s", exc, fallback, config.backbone)
        return dataclasses.replace(config, backbone=fallback)
    return config


def _imagenet(backbone: str, override: str) -> tuple[StateDict | None, StartingWeights]:
    try:
        weights = imagenet_weights(backbone)
    except ValueError as exc:
        return None, _random(backbone, str(exc))
    url = override or weights.url
    cached = cached_file(url)
    was_cached = cached.is_file()
    try:
        state = _load(url)
    except (OSError, RuntimeError, ValueError) as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        return None, _random(
            backbone,
            f"ImageNet weights are not in {cached.parent} and could not be downloaded from {url} ({reason}); "
            f"run `camtrap fetch imagenet --backbone {backbone}` where the internet is reachable",
        )
    logger.info("%s starts from %s (%s %s)", backbone, weights.name, "cached" if was_cached else "downloaded", cached)
    return state, StartingWeights(
        name=f"{weights.name} ({type(weights).__name__})", source=url, sha256=sha256_of(cached), pretrained=True
    )


def _load(url: str) -> StateDict:
    """torch.hub's cached, hash-checked download; its "Downloading: ..." line goes to stderr, not stdout (which
    carries the commands' JSON)."""
    with contextlib.redirect_stdout(sys.stderr):
        return torch.hub.load_state_dict_from_url(
            url, progress=False, check_hash=True, map_location="cpu", weights_only=True
        )


def _mdlite() -> tuple[StateDict | None, StartingWeights]:
    weights, _ = mdlite_assets.asset_paths()
    try:
        mdlite_assets.verify()
        checkpoint = torch.load(weights, map_location="cpu", weights_only=True)["model"]
    except (mdlite_assets.MissingAssetError, OSError, RuntimeError, KeyError) as exc:
        return None, _random(MDLITE_BACKBONE, f"MegadetectorLite weights unusable ({exc})")
    state = {k.removeprefix(MDLITE_PREFIX): v for k, v in checkpoint.items() if k.startswith(MDLITE_PREFIX)}
    logger.info("mdlite starts from MegadetectorLite's CspDarknet (%s)", weights)
    return state, StartingWeights(
        name="MegadetectorLite", source=str(weights), sha256=mdlite_assets.WEIGHTS_SHA256, pretrained=True
    )


def _random(backbone: str, reason: str) -> StartingWeights:
    record = StartingWeights(name="random", source=reason, pretrained=False)
    logger.warning("%s: %s", backbone, record.describe())
    return record
