"""The training function, the sampler, the augmentation and the evaluation figures."""

from __future__ import annotations

from collections import Counter
from dataclasses import replace

import numpy as np
import pytest
import torch
from PIL import Image
from sklearn.metrics import f1_score, precision_recall_fscore_support

from backend.contracts.bundle import Preprocessing
from backend.vision.crop import eval_transform
from trainer.evaluate import UNKNOWN, plot_confusion, score
from trainer.presets import train_transform
from trainer.train import amp_dtype, fit, make_sampler, resolve_device, seed_everything

PRE = Preprocessing(input_size=32)


def _samples(make_crop, n_per_class=4, classes=3):
    return [(make_crop(f"c{k}", 100 * k + i).path, k) for k in range(classes) for i in range(n_per_class)]


def test_fit_writes_tensorboard_events_and_keeps_the_best_epoch(tmp_path, make_crop, tiny_config):
    train, val = _samples(make_crop), _samples(make_crop, n_per_class=2)
    epochs = []
    result = fit(
        train,
        val,
        num_classes=3,
        preprocessing=PRE,
        config=replace(tiny_config, epochs=2),
        run_dir=tmp_path / "run",
        on_epoch=lambda stats, n: epochs.append((stats.epoch, n)),
    )
    assert epochs == [(1, 2), (2, 2)]
    assert list((tmp_path / "run" / "tensorboard").glob("events.out.tfevents.*"))
    assert result.best_val_macro_f1 == max(h.val_macro_f1 for h in result.history)
    assert result.history[result.best_epoch - 1].val_macro_f1 == result.best_val_macro_f1
    assert all(t.device.type == "cpu" for t in result.state_dict.values())


def test_fit_stops_early_when_validation_macro_f1_stalls(tmp_path, make_crop, tiny_config):
    config = replace(tiny_config, epochs=8, patience=2, learning_rate=0.0)
    result = fit(
        _samples(make_crop), _samples(make_crop, 2), num_classes=3, preprocessing=PRE, config=config, run_dir=tmp_path
    )
    assert result.stopped_early
    assert len(result.history) == 3 and result.best_epoch == 1


def test_fit_is_reproducible_with_a_fixed_seed(tmp_path, make_crop, tiny_config):
    train, val = _samples(make_crop), _samples(make_crop, 2)
    config = replace(tiny_config, epochs=1)
    first = fit(train, val, num_classes=3, preprocessing=PRE, config=config, run_dir=tmp_path / "a")
    second = fit(train, val, num_classes=3, preprocessing=PRE, config=config, run_dir=tmp_path / "b")
    assert all(torch.equal(first.state_dict[k], second.state_dict[k]) for k in first.state_dict)


def test_make_sampler_draws_rare_classes_as_often_as_common_ones():
    targets = [0] * 90 + [1] * 10
    drawn = Counter(targets[i] for i in make_sampler(targets, seed_everything(0)))
    assert len(list(make_sampler(targets, seed_everything(0)))) == 100
    assert 35 <= drawn[1] <= 65, drawn


def test_train_transform_ends_in_the_inference_tensor_format():
    crop = Image.new("RGB", (80, 80), (120, 60, 30))
    augmented, evaluated = train_transform(PRE)(crop), eval_transform(PRE)(crop)
    assert augmented.shape == evaluated.shape == (3, 32, 32)
    assert augmented.dtype == evaluated.dtype == torch.float32


def test_cpu_training_uses_no_mixed_precision():
    assert amp_dtype(torch.device("cpu")) is None
    assert resolve_device("cpu").type == "cpu"


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no GPU on this machine: the CUDA/AMP path cannot run here")
def test_cuda_training_uses_mixed_precision(tmp_path, make_crop, tiny_config):
    assert amp_dtype(torch.device("cuda")) in (torch.bfloat16, torch.float16)
    result = fit(
        _samples(make_crop),
        _samples(make_crop, 2),
        num_classes=3,
        preprocessing=PRE,
        config=replace(tiny_config, epochs=1, device="cuda"),
        run_dir=tmp_path,
    )
    assert result.device.startswith("cuda")


def test_score_matches_sklearn_and_counts_unknown_labels_as_misses():
    labels = ["a", "b", "c"]
    y_true = [0, 0, 1, 1, 2, 2]
    y_pred = [0, UNKNOWN, 1, 0, 2, 2]
    evaluation = score(y_true, y_pred, labels)
    assert evaluation.top1 == pytest.approx(4 / 6)
    assert evaluation.macro_f1 == pytest.approx(f1_score(y_true, y_pred, labels=[0, 1, 2], average="macro"))
    assert evaluation.per_class["a"] == pytest.approx({"precision": 0.5, "recall": 0.5, "f1": 0.5, "support": 2})
    assert evaluation.confusion == [[1, 0, 0], [1, 1, 0], [0, 0, 2]]


@pytest.mark.parametrize("seed", [pytest.param(s, id=f"seed-{s}") for s in range(3)])
def test_score_agrees_with_sklearn_on_random_predictions(seed):
    rng = np.random.default_rng(seed)
    y_true = rng.integers(0, 5, 60).tolist()
    y_pred = rng.integers(-1, 5, 60).tolist()
    evaluation = score(y_true, y_pred, list("abcde"))
    present = sorted(set(y_true))
    assert evaluation.macro_f1 == pytest.approx(f1_score(y_true, y_pred, labels=present, average="macro"))
    precision, recall, f1, support = precision_recall_fscore_support(y_true, y_pred, labels=range(5), zero_division=0)
    for i, label in enumerate("abcde"):
        expected = {"precision": precision[i], "recall": recall[i], "f1": f1[i], "support": support[i]}
        assert evaluation.per_class[label] == pytest.approx(expected)


def test_plot_confusion_writes_a_png(tmp_path):
    path = tmp_path / "cm.png"
    plot_confusion(score([0, 1, 1], [0, 1, 0], ["Grey Fox", "Chicken"]), path, "test split")
    with Image.open(path) as image:
        assert image.format == "PNG" and image.width > 100
