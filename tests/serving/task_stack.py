"""One stack serving a multiclass (iris) or a regression (diabetes) model, shared by the
tests of the pages and of tritonclient per task (one stack start and two trainings for both).

A switch of model is an activation after storing that model's data, as an operator does.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np
from cli_helpers import run_cli
from tabular import write_table

from modelserve.model.check import check_bundle
from modelserve.model.dataset import import_table
from modelserve.model.holdout import held_out
from modelserve.model.spec import ModelSpec
from modelserve.model.table import Table
from modelserve.model.training import TrainingConfig, train_table_bundle
from modelserve.registry import Registry
from serving.stack_helpers import RunningStack, post_json

TASK_EPOCHS = {"multiclass": 40, "regression": 20}  # a real model, quickly; the pages are tested


def check_here(staged: Path) -> None:
    """The sandbox's check and plan, in this process: models we trained ourselves just now."""
    check_bundle(staged, plan_out=staged / "plan.npz")


class TaskStack:
    """One stack that serves the iris (multiclass) or the diabetes (regression) model."""

    def __init__(self, root: Path):
        self.home = root / "home"
        self.data_dir = self.home / "data"
        self.tables = {task: write_table(root, task) for task in TASK_EPOCHS}
        self.versions: dict[str, str] = {}
        self._models: dict[str, object] = {}  # Keras' own models: the expected answers
        # Trained and registered here, not by `modelserve train`: the sandbox check of each
        # would take half a minute, and the CLI's training is tested on its own.
        registry = Registry(self.home / "registry", checker=check_here)
        for task in ("regression", "multiclass"):
            table = self.store_data(task)
            out = root / f"bundle-{task}"
            train_table_bundle(table, TrainingConfig(epochs=TASK_EPOCHS[task]), out)
            self.versions[task] = registry.add(out, source=f"test {task}").version
        registry.activate(self.versions["multiclass"], source="test")  # its data is stored
        self.serving = "multiclass"
        self.running: RunningStack | None = None

    def store_data(self, task: str) -> Table:
        """Store the task's CSV as the server's data."""
        path, label = self.tables[task]
        return import_table(path, self.data_dir, label)

    def serve(self, task: str) -> str:
        """Store the task's data, activate its model, and wait until the workers answer with it."""
        assert self.running is not None
        version = self.versions[task]
        if self.serving != task:
            self.store_data(task)
            assert run_cli("models", "activate", version, home=self.home).returncode == 0
            self.serving = task
        row = [0.0] * len(self.spec(task).feature_names)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            answer = post_json(f"{self.running.url}/api/v1/predict", {"rows": [row]})
            if answer.status == 200 and answer.json().get("model_version") == version:
                return version
            time.sleep(0.3)
        raise AssertionError(f"the workers did not switch to {version}:\n{self.running.log()}")

    def spec(self, task: str) -> ModelSpec:
        """The spec of the task's version."""
        spec = Registry(self.home / "registry").get(self.versions[task]).spec
        assert spec is not None
        return spec

    def held(self, task: str):
        """The task's held-out rows (its data must be the stored one)."""
        spec = self.spec(task)
        return held_out(self.data_dir, dict(spec.document), features=spec.feature_names)

    def keras(self, task: str, rows) -> np.ndarray:
        """What Keras computes with the task's model.keras: (n, output width)."""
        if task not in self._models:
            os.environ.setdefault("KERAS_BACKEND", "tensorflow")
            import keras

            path = self.home / "registry" / "versions" / self.versions[task] / "model.keras"
            self._models[task] = keras.saving.load_model(path, compile=False)
        batch = np.asarray(rows, dtype=np.float32)
        return np.asarray(self._models[task](batch, training=False))
