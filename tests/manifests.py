"""Manifests as documents, for the tests of what reads them: today's format 1, and format 2."""

from __future__ import annotations

from modelserve.model.spec import FORMAT_V2

SHA = "ab" * 32
PIMA = ["pregnancies", "glucose", "blood_pressure", "skin_thickness", "insulin", "bmi",
        "diabetes_pedigree", "age"]


def v1_manifest() -> dict:
    """A manifest as today's bundles and registries hold them (format 1)."""
    return {
        "format": "modelserve.bundle/1", "version": "54df5490fb20",
        "created_at": "2026-12-01T12:25:38+00:00",
        "input": {
            "features": [{"name": n, "dtype": "float32", "min": 0.0, "max": 9.0} for n in PIMA],
            "shape": [None, 8],
            "examples": [{"values": [6, 148, 72, 35, 0, 33.6, 0.627, 50],
                          "probability": 0.824}],
        },
        "output": {"name": "diabetes", "shape": [None, 1], "threshold": 0.5,
                   "meaning": "probability that the patient develops diabetes",
                   "labels": {"0": "no diabetes", "1": "diabetes"}},
        "metrics": {"accuracy": 0.79, "roc_auc": 0.82, "log_loss": 0.47,
                    "confusion_matrix": [[93, 7], [25, 28]], "rows": 153, "threshold": 0.5},
        "files": {"model.keras": {"sha256": SHA, "bytes": 19434}},
    }


def v2_manifest(task: str, classes: list[str], outputs: list[float], metrics: dict) -> dict:
    """A format 2 manifest of any task, two features."""
    return {
        "format": FORMAT_V2, "task": task, "version": "0123456789ab",
        "created_at": "2026-12-01T12:00:00+00:00",
        "input": {"features": [{"name": "sepal_length"}, {"name": "petal_width"}],
                  "examples": [{"values": [5.1, 0.2], "outputs": outputs}]},
        "output": {"name": "species", "classes": classes},
        "metrics": {"rows": 30, **metrics},
        "files": {"model.keras": {"sha256": SHA}},
    }
