"""Label Studio exports made by label-studio-sdk's own converter, the code Label Studio runs for "Export".

:func:`csv_export` turns a list of tasks in Label Studio's JSON export format into the CSV Label Studio
would give for them (``label_studio_sdk.converter.Converter(...).convert(..., "CSV")``).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

from label_studio_sdk.converter import Converter

#: Label Studio's "Image Classification" template, with several choices allowed.
CLASSIFICATION_CONFIG = """<View>
  <Image name="image" value="$image"/>
  <Choices name="choice" toName="image" choice="multiple">
{choices}
  </Choices>
</View>"""


def classification_config(labels: Sequence[str]) -> str:
    return CLASSIFICATION_CONFIG.format(choices="\n".join(f'    <Choice value="{label}"/>' for label in labels))


def annotation(
    annotation_id: int, annotator: int, choices: Sequence[str] | None, created_at: str, *, cancelled: bool = False
) -> dict:
    """One annotation of the classification template (``choices=None``: submitted with no choice)."""
    result = (
        []
        if choices is None
        else [
            {
                "id": f"r{annotation_id}",
                "type": "choices",
                "from_name": "choice",
                "to_name": "image",
                "value": {"choices": list(choices)},
            }
        ]
    )
    return {
        "id": annotation_id,
        "completed_by": annotator,
        "result": result,
        "was_cancelled": cancelled,
        "ground_truth": False,
        "created_at": created_at,
        "updated_at": created_at,
        "lead_time": 2.5,
    }


def task(task_id: int, image: str, annotations: Sequence[dict], **data: str) -> dict:
    return {"id": task_id, "data": {"image": image, **data}, "annotations": list(annotations)}


def csv_export(tasks: Sequence[dict], labels: Sequence[str], directory: Path, name: str = "label_studio.csv") -> Path:
    """The CSV export of ``tasks`` (a JSON export), written by label-studio-sdk's converter."""
    directory.mkdir(parents=True, exist_ok=True)
    json_path = directory / f".{name}.export.json"
    json_path.write_text(json.dumps(list(tasks)))
    converter = Converter(config=classification_config(labels), project_dir=None, download_resources=False)
    converter.convert(str(json_path), str(directory / name), "CSV", is_dir=False, sep=",")
    json_path.unlink()
    return directory / name
