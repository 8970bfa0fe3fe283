"""The git hook never imports Keras, TensorFlow or h5py: only the sandboxed jobs load a model.

Python's own import trace (PYTHONPROFILEIMPORTTIME, inherited by the hook from the pusher
through git's local transport) lists every module the hook process imported; the sandboxed
jobs run `python -I`, which ignores it, so the trace is the hook's alone.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from cli_helpers import run_cli
from delivery import pushes
from delivery.gitops import commit_and_push, git
from serving.conftest import prepare_home

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(os.geteuid() != 0, reason="the namespaces backend needs root")]
MODEL_CODE = ("keras", "tensorflow", "h5py")


def imported(trace: str) -> set[str]:
    """The modules an import trace (`import time: self | cumulative | name`) names."""
    names = set()
    for line in trace.splitlines():
        if "import time:" in line and "|" in line:
            name = line.rsplit("|", 1)[1].strip()
            if name != "imported package":
                names.add(name)
    return names


def model_code(names: set[str]) -> set[str]:
    """The names among them that are model-loading libraries."""
    return {name for name in names if name.split(".")[0] in MODEL_CODE}


def test_the_pre_receive_hook_converts_checks_and_scores_without_importing_model_code(
        tmp_path: Path, shared_data: Path, pima_csv: Path, reliability):
    """A real push of a legacy pair, converted, checked and scored (then refused as worse):
    the hook process imported the gate, and none of Keras, TensorFlow, h5py."""
    home = tmp_path / "home"
    prepare_home(home, shared_data, pima_csv, active="production")
    assert run_cli("delivery", "init", "--web-url", "http://127.0.0.1:9", home=home).returncode == 0
    checkout = tmp_path / "dev"
    git("clone", "-q", str(home / "delivery" / "models.git"), str(checkout), cwd=tmp_path)
    pushes.copy_seed(shared_data, "production", checkout)
    pushes.much_worse(checkout)
    env = dict(os.environ, PYTHONPROFILEIMPORTTIME="1")
    pushed = commit_and_push(checkout, "a worse model", env=env)
    assert pushed.returncode != 0 and "below the live model's" in pushed.stderr, \
        pushed.stderr[-3000:]
    names = imported(pushed.stderr)
    assert "modelserve.delivery.gate" in names and "modelserve.sandbox.confined" in names
    assert model_code(names) == set()
    reliability.record(
        "Security", "the pre-receive hook imports no model code",
        "a pushed legacy pair converted, checked and scored (in the sandbox), then refused as "
        "worse; Python's import trace of the hook process", modules_imported=len(names),
        keras_tensorflow_h5py_modules=len(model_code(names)))


def test_model_check_loads_the_model_in_the_sandbox_only(legacy_bundle: Path, tmp_path: Path):
    """`modelserve model check`: the command's process imports no model code either."""
    env = dict(os.environ, PYTHONPROFILEIMPORTTIME="1", MODELSERVE_HOME=str(tmp_path))
    done = subprocess.run([sys.executable, "-m", "modelserve", "model", "check",
                           str(legacy_bundle)], capture_output=True, text=True, env=env,
                          timeout=600, check=False)
    assert done.returncode == 0 and "runtime: plan" in done.stdout, done.stderr[-2000:]
    names = imported(done.stderr)
    assert "modelserve.sandbox.confined" in names and model_code(names) == set()
