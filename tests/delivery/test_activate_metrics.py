"""The `live:` line a push prints: held-out metrics, an undefined ROC AUC shown as a dash."""

from __future__ import annotations

from pathlib import Path

from manifests import v1_manifest

from modelserve.delivery.activate import _metrics_line
from modelserve.registry import Registry, VersionInfo


def test_live_line_with_an_undefined_roc_auc(tmp_path: Path) -> None:
    """A model held out on one class has roc_auc null: the line says so instead of crashing."""
    manifest = v1_manifest()
    manifest["metrics"].update(accuracy=0.75, roc_auc=None)
    info = VersionInfo("v1", tmp_path, manifest, active=True)
    line = _metrics_line(Registry(tmp_path / "registry"), info, previous=None)
    assert line == "; accuracy 0.7500, ROC AUC -"
