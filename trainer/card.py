"""The model card (``card.md``): what a person needs to judge a bundle without opening its files."""

from __future__ import annotations

import json

from backend.contracts.bundle import BundleManifest


def render_card(manifest: BundleManifest, metrics: dict) -> str:
    """Markdown: verdict, data counts, headline and per-species test figures, training config.

    Args:
        manifest: The bundle's manifest (status and reason included).
        metrics: The content of ``metrics.json`` (see ``trainer.pipeline``).
    """
    test = metrics.get("test", {})
    served = metrics.get("served") or {}
    split = metrics.get("split", {})
    lines = [
        f"# Species classifier {manifest.version}",
        "",
        f"- project: {manifest.project}",
        f"- status: **{manifest.status.value}**: {manifest.status_reason}",
        f"- backbone: {manifest.backbone}, input {manifest.preprocessing.input_size} px, "
        f"crop: {manifest.preprocessing.crop}",
        f"- starting weights: {_starting_line(manifest)}",
        f"- trained by job {manifest.job_id} at {manifest.created_at}; served before: {manifest.parent_version}",
        "",
        "## Data",
        "",
        f"- export: {_inline(metrics.get('export', {}))}",
        f"- images and crops: {_inline(metrics.get('crops', {}))}",
        f"- split by {split.get('grouping', '?')} (a unit's split is a hash of its key, stable as data grows), "
        f"units per split: {_inline(split.get('units', {}))}; unit kinds: {_inline(split.get('unit_kinds', {}))}",
        f"- species split inside themselves (fewer than 3 units): {_inline(split.get('split_inside', {}))}",
        f"- units moved so every species trains and no split is empty: {_inline(split.get('moved', {}))}",
        f"- validation crops taken from training units' sequences (no validation unit): "
        f"{split.get('validation_inside_training_units', 0)}",
        f"- rare species: {_inline(metrics.get('min_examples', {}))}",
        f"- labels not in the labeling config (left out): {_inline(metrics.get('export', {}).get('unmapped', {}))}",
        "",
        "| species | train | val | test |",
        "|---|---:|---:|---:|",
    ]
    counts = split.get("counts", {})
    for label in manifest.labels:
        cells = " | ".join(str(counts.get(name, {}).get(label, 0)) for name in ("train", "val", "test"))
        lines.append(f"| {label} | {cells} |")
    lines += [
        "",
        "## Test split",
        "",
        f"- top-1 {test.get('top1', 0):.4f}, macro-F1 {test.get('macro_f1', 0):.4f} on {test.get('count', 0)} crops",
        f"- served model on the same crops: {_served_line(served)}",
        f"- gate: {_gate_line(metrics.get('gate') or {})}",
        f"- calibration: {_calibration_line(metrics.get('calibration') or {})}",
        "",
        "| species | precision | recall | F1 | support |",
        "|---|---:|---:|---:|---:|",
    ]
    for label, row in test.get("per_class", {}).items():
        lines.append(f"| {label} | {row['precision']:.3f} | {row['recall']:.3f} | {row['f1']:.3f} | {row['support']} |")
    training = metrics.get("training", {})
    lines += [
        "",
        "## Training",
        "",
        f"- epochs run {training.get('epochs_run')}, best epoch {training.get('best_epoch')} "
        f"(val macro-F1 {training.get('best_val_macro_f1', 0):.4f}), early stop: {training.get('stopped_early')}, "
        f"device {training.get('device')}",
        "",
        "```json",
        json.dumps(metrics.get("config", {}), indent=2, sort_keys=True),
        "```",
        "",
        "## Limits",
        "",
        "Scores come from units of photos held out of training; a split by sequence or photo (see above) "
        "overestimates what a new camera would see. Crops are cut around human boxes, or around the top "
        "MegaDetector box for photos labelled as a whole; training also sees jittered and MegaDetector boxes.",
        "",
    ]
    return "\n".join(lines)


def _starting_line(manifest: BundleManifest) -> str:
    if manifest.starting_weights is None:
        return "not recorded (a bundle written before they were)"
    return manifest.starting_weights.describe()


def _inline(mapping: dict) -> str:
    return ", ".join(f"{k} {v}" for k, v in mapping.items()) or "none"


def _gate_line(gate: dict) -> str:
    if not gate.get("comparable"):
        return gate.get("why") or "not compared"
    low, high = gate["interval"]
    return (
        f"against {gate['against']} on {gate['crops']} crops of {len(gate['species'])} species "
        f"({gate['excluded_seen_by_served']} left out as seen by the served model): macro-F1 "
        f"{gate['new_macro_f1']:.4f} vs {gate['other_macro_f1']:.4f}, gain {gate['gain']:+.4f}, "
        f"{gate['confidence']:.0%} interval [{low:+.4f}, {high:+.4f}]"
    )


def _calibration_line(calibration: dict) -> str:
    if "skipped" in calibration:
        return f"none ({calibration['skipped']})"
    return (
        f"temperature {calibration.get('temperature')}, prior correction "
        f"{'on' if calibration.get('prior_correction') else 'off'}; expected calibration error on the test "
        f"split {calibration.get('ece_before', 0):.4f} before, {calibration.get('ece_after', 0):.4f} after"
    )


def _served_line(served: dict) -> str:
    if not served.get("version"):
        return "none served"
    if served.get("macro_f1") is None:
        return f"{served['version']} not scored ({served.get('note', '')})"
    return (
        f"{served['version']}: top-1 {served['top1']:.4f}, macro-F1 {served['macro_f1']:.4f} ({served.get('note', '')})"
    )
