"""Calibrated probabilities: a prior correction for the balanced sampler and temperature scaling.

The training loader draws every species equally often (``trainer.train.make_sampler``), so the network
learns under a uniform class prior and its softmax over-predicts rare species; label smoothing makes it
under-confident besides. Two corrections, both fitted on the validation split and stored in the bundle
(``backend.contracts.bundle.Calibration``, applied by ``SpeciesClassifier.probabilities``):

- **prior**: add ``log`` of each species' share of the training split to its logit (Bayes' rule with the
  project's own class frequencies); kept only when it lowers the validation log-loss;
- **temperature** (Guo et al. 2017): divide the logits by the ``T`` that minimises the validation
  log-loss.

After them a ``SPECIES_THRESHOLD`` of 0.8 means "emit the species when it is right about 80 % of the
time". :func:`expected_calibration_error` measures how far that holds (15 equal-width bins).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence

import torch
from torch.nn import functional

from backend.contracts.bundle import Calibration

logger = logging.getLogger(__name__)

#: Temperatures are searched in this range.
TEMPERATURE_RANGE = (0.05, 20.0)
#: Bins of the expected calibration error.
ECE_BINS = 15


def fit_calibration(logits: torch.Tensor, targets: Sequence[int], train_counts: Sequence[int]) -> Calibration:
    """The prior correction (if it helps) and temperature that minimise the log-loss of ``logits``.

    Args:
        logits: Raw validation logits ``[n, classes]``.
        targets: Their class indices.
        train_counts: Training crops per class (the class prior of the project); each must be >= 1.
    """
    logits = logits.detach().clone().float()  # may come from inference mode, which autograd refuses
    target = torch.as_tensor(list(targets), dtype=torch.long)
    counts = torch.as_tensor(list(train_counts), dtype=torch.float32)
    log_prior = (counts / counts.sum()).log()
    flat = torch.zeros_like(log_prior)
    best: tuple[float, float, torch.Tensor] | None = None
    for prior in (flat, log_prior):
        temperature = _fit_temperature(logits.float(), target, prior)
        loss = _nll(logits.float(), target, prior, temperature)
        if best is None or loss < best[0] - 1e-6:
            best = (loss, temperature, prior)
    assert best is not None
    loss, temperature, prior = best
    logger.info(
        "calibration on %d validation crops: temperature %.3f, prior correction %s, log-loss %.4f (raw %.4f)",
        len(target),
        temperature,
        "on" if prior is log_prior else "off",
        loss,
        _nll(logits.float(), target, flat, 1.0),
    )
    return Calibration(temperature=round(temperature, 6), log_prior=[round(float(v), 6) for v in prior])


def expected_calibration_error(probabilities: torch.Tensor, targets: Sequence[int], bins: int = ECE_BINS) -> float:
    """Top-label expected calibration error: the crop-weighted gap between confidence and accuracy per bin."""
    if not len(probabilities):
        return 0.0
    confidence, predicted = probabilities.max(dim=1)
    correct = (predicted == torch.as_tensor(list(targets))).float()
    edges = torch.linspace(0, 1, bins + 1)
    total = 0.0
    for low, high in zip(edges[:-1], edges[1:], strict=True):
        inside = (confidence > low) & (confidence <= high)
        if inside.any():
            gap = (confidence[inside].mean() - correct[inside].mean()).abs()
            total += float(gap) * float(inside.float().mean())
    return total


def _nll(logits: torch.Tensor, target: torch.Tensor, prior: torch.Tensor, temperature: float) -> float:
    return float(functional.cross_entropy(logits / temperature + prior, target))


def _fit_temperature(logits: torch.Tensor, target: torch.Tensor, prior: torch.Tensor) -> float:
    """``argmin_T NLL(logits / T + prior)`` by LBFGS on ``log T``, then clamped to the search range."""
    log_t = torch.zeros(1, requires_grad=True)
    optimizer = torch.optim.LBFGS([log_t], lr=0.1, max_iter=200, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        loss = functional.cross_entropy(logits / log_t.exp() + prior, target)
        loss.backward()
        return loss

    with torch.enable_grad():
        optimizer.step(closure)
    temperature = float(log_t.detach().exp())
    if not math.isfinite(temperature):
        return 1.0
    return min(max(temperature, TEMPERATURE_RANGE[0]), TEMPERATURE_RANGE[1])
