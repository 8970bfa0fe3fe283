"""Malformed bundles into `modelserve models add`: each refused in one line, the registry untouched.

Every kind runs the real command line in a fresh process against a registry that already holds
two versions, one of them active, with their history. A refusal must exit 1 with a single
"Error: ..." line naming the problem (no traceback), and leave every file and link of the
registry as it was. The last case adds a good bundle, to show the harness sees a change.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import zipfile
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from cli_helpers import run_cli

from modelserve.fsutil import sha256_file
from modelserve.model.backend import import_keras
from modelserve.model.bundle import (
    MANIFEST_FILE,
    MAX_MANIFEST_BYTES,
    MODEL_FILE,
    compute_version,
    read_manifest,
    write_bundle,
    write_manifest,
)
from modelserve.registry import Registry

pytestmark = pytest.mark.slow

Make = Callable[[Path, Path], Path]  # (a copy of a good bundle, scratch) -> the path to add


# ---- ways to spoil a good bundle ------------------------------------------------------------


def _manifest(bundle: Path) -> dict[str, Any]:
    """The bundle's manifest as plain JSON (no validation)."""
    return json.loads((bundle / MANIFEST_FILE).read_text())


def _write_raw(bundle: Path, manifest: Any) -> Path:
    """Write a manifest as it is, without stamping or validating it."""
    (bundle / MANIFEST_FILE).write_text(json.dumps(manifest))
    return bundle


def _edited(change: Callable[[dict], None], restamp: bool = True) -> Make:
    """A bundle whose manifest was changed by `change`, its version re-stamped, unchecked.

    The version is a hash anybody can recompute, so a bad manifest must be refused for what
    is wrong with it, not only because its version no longer matches.
    """
    def make(bundle: Path, _scratch: Path) -> Path:
        manifest = _manifest(bundle)
        change(manifest)
        if restamp and isinstance(manifest, dict):
            manifest["version"] = compute_version(manifest)
        return _write_raw(bundle, manifest)
    return make


def _with_number(text: str) -> Make:
    """A bundle whose log loss is written as `text` (NaN, 1e999: no JSON number)."""
    def make(bundle: Path, _scratch: Path) -> Path:
        manifest = _manifest(bundle)
        manifest["metrics"]["log_loss"] = 0.123456789
        manifest["version"] = compute_version(manifest)
        raw = json.dumps(manifest).replace("0.123456789", text)
        (bundle / MANIFEST_FILE).write_text(raw)
        return bundle
    return make


def _written(text: str | bytes) -> Make:
    """A bundle whose manifest.json holds exactly `text`."""
    def make(bundle: Path, _scratch: Path) -> Path:
        path = bundle / MANIFEST_FILE
        path.write_bytes(text if isinstance(text, bytes) else text.encode())
        return bundle
    return make


def _rehashed(change: Callable[[Path], None]) -> Make:
    """A bundle whose model.keras was changed by `change`, its manifest re-stamped to match."""
    def make(bundle: Path, _scratch: Path) -> Path:
        change(bundle / MODEL_FILE)
        manifest = read_manifest(bundle)
        path = bundle / MODEL_FILE
        manifest["files"][MODEL_FILE] = {"sha256": sha256_file(path),
                                         "bytes": path.stat().st_size}
        write_manifest(bundle, {k: v for k, v in manifest.items() if k != "version"})
        return bundle
    return make


def _rebuilt(model_of: Callable[[Any], Any]) -> Make:
    """A consistent bundle (manifest of the good one) around another Keras model."""
    def make(bundle: Path, scratch: Path) -> Path:
        manifest = read_manifest(bundle)
        out = scratch / "rebuilt"
        write_bundle(out, model_of(import_keras()),
                     {k: v for k, v in manifest.items() if k not in ("version", "files")})
        return out
    return make


def _seven_inputs(keras) -> Any:
    """A model that takes 7 features where the contract says 8."""
    return keras.Sequential([keras.Input((7,)), keras.layers.Dense(1, "sigmoid")])


def _answers_nan(keras) -> Any:
    """A model whose every answer is NaN."""
    model = keras.Sequential([keras.Input((8,)), keras.layers.Dense(1, "sigmoid")])
    model.layers[-1].set_weights([np.full((8, 1), np.nan), np.zeros(1)])
    return model


def _not_keras_zip(path: Path) -> None:
    """A valid zip archive holding no Keras model."""
    path.unlink()
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("config.json", '{"class_name": "Nothing"}')
        archive.writestr("readme.txt", "not a model")


def _with_member(name: str) -> Callable[[Path], None]:
    """model.keras with one more member, named `name`."""
    def change(path: Path) -> None:
        with zipfile.ZipFile(path, "a") as archive:
            archive.writestr(name, "extra")
    return change


def _model_linked_outside(bundle: Path, scratch: Path) -> Path:
    """model.keras a symbolic link to a file outside the bundle (with the right hash)."""
    outside = scratch / "elsewhere.keras"
    shutil.move(bundle / MODEL_FILE, outside)
    os.symlink(outside, bundle / MODEL_FILE)
    return bundle


def _manifest_linked_outside(bundle: Path, scratch: Path) -> Path:
    """manifest.json a symbolic link to a file outside the bundle."""
    outside = scratch / "elsewhere.json"
    shutil.move(bundle / MANIFEST_FILE, outside)
    os.symlink(outside, bundle / MANIFEST_FILE)
    return bundle


def _a_file(_bundle: Path, scratch: Path) -> Path:
    """A regular file where a bundle directory is expected."""
    path = scratch / "bundle.zip"
    path.write_bytes(b"PK\x05\x06" + bytes(18))
    return path


def _plan_listed(bundle: Path, _scratch: Path) -> Path:
    """A plan.npz of its own, listed with its sha256 in a re-stamped manifest."""
    plan = bundle / "plan.npz"
    plan.write_bytes(b"PK\x05\x06" + bytes(18))
    manifest = _manifest(bundle)
    manifest["files"]["plan.npz"] = {"sha256": sha256_file(plan), "bytes": plan.stat().st_size}
    manifest["version"] = compute_version(manifest)
    return _write_raw(bundle, manifest)


def _set_feature(index: int, name: str) -> Callable[[dict], None]:
    """Rename one input feature."""
    def change(manifest: dict) -> None:
        manifest["input"]["features"][index]["name"] = name
    return change


def _set(path: str, value: Any) -> Callable[[dict], None]:
    """Set manifest[a][b]... = value, for a dotted path."""
    *parents, last = path.split(".")

    def change(manifest: dict) -> None:
        target = manifest
        for key in parents:
            target = target[key]
        target[last] = value
    return change


def _set_file(name: str, value: Any) -> Callable[[dict], None]:
    """Set the manifest's entry for one file."""
    def change(manifest: dict) -> None:
        manifest["files"][name] = value
    return change


def _drop(*keys: str) -> Callable[[dict], None]:
    """Remove top-level keys."""
    def change(manifest: dict) -> None:
        for key in keys:
            del manifest[key]
    return change


def _flip_byte(path: Path) -> None:
    """Change one byte in the middle of a file."""
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


# Each kind: how to make it, and words its one-line refusal must hold.
KINDS: dict[str, tuple[Make, str]] = {
    "path does not exist": (lambda b, s: s / "nowhere",
                            "not a bundle directory (it does not exist)"),
    "a file, not a directory": (_a_file, "not a bundle directory (it is a file)"),
    "manifest missing": (lambda b, s: ((b / MANIFEST_FILE).unlink(), b)[1],
                         "manifest.json is missing"),
    "manifest not JSON": (_written("{not json"), "not valid JSON"),
    "manifest not UTF-8": (_written(b"\xff\xfe{\x00}\x00"), "not valid JSON"),
    "manifest with NaN": (_with_number("NaN"), "NaN is not a JSON number"),
    "manifest with 1e999": (_with_number("1e999"), "1e999 is too large a number"),
    "manifest nested 100,000 deep": (_written("[" * 100_000), "nested too deeply"),
    "manifest over 1 MiB": (_written(" " * MAX_MANIFEST_BYTES + "{}"), "larger than"),
    "manifest a JSON list": (_written("[]"), "must be a JSON object"),
    "manifest missing keys": (_edited(_drop("version", "files"), restamp=False),
                              "missing version, files"),
    "input not an object": (_edited(_set("input", "eight numbers")), "input must be an object"),
    "metrics not numbers": (_edited(_set("metrics.accuracy", "high")),
                            "metrics.accuracy must be a number"),
    "created_at not a string": (_edited(_set("created_at", 20260101)),
                                "created_at must be a string"),
    "file entry without sha256": (_edited(_set_file(MODEL_FILE, "abc")),
                                  "files.'model.keras' needs the file's sha256"),
    "features not named": (_edited(_set("input.features", [{"label": "x"}] * 8)),
                           "every input feature needs a name"),
    "feature name a template": (_edited(_set_feature(0, "{{7*7}}")),
                                "feature name '{{7*7}}' is not a plain name"),
    "feature name HTML": (_edited(_set_feature(1, "<script>alert(1)</script>")),
                          "feature name '<script>alert(1)</script>' is not a plain name"),
    "feature name a control sequence": (_edited(_set_feature(2, "\x1b[2Jage")),
                                        "is not a plain name"),
    "feature named twice": (_edited(_set_feature(1, "pregnancies")),
                            "feature pregnancies is named more than once"),
    "examples of 7 values": (_edited(_set("input.examples", [{"values": [1] * 7,
                                                              "probability": 0.5}])),
                             "input.examples[0] must hold 8 numbers"),
    "file name with a path": (_edited(_set_file("../../etc/passwd", {"sha256": "0" * 64})),
                              "is not a plain name"),
    "model.keras missing": (lambda b, s: ((b / MODEL_FILE).unlink(), b)[1],
                            "model.keras is missing"),
    "sha256 mismatch": (lambda b, s: (_flip_byte(b / MODEL_FILE), b)[1],
                        "model.keras does not match its sha256"),
    "manifest edited after stamping": (_edited(_set("metrics.accuracy", 0.99), restamp=False),
                                       "the manifest was edited"),
    "model.keras linked outside": (_model_linked_outside, "model.keras is a symbolic link"),
    "manifest.json linked outside": (_manifest_linked_outside, "manifest.json is a symbolic link"),
    "plan.npz listed in the manifest": (_plan_listed, "the manifest lists plan.npz"),
    # These reach the model checker (a fresh process loading TensorFlow).
    "model.keras truncated": (_rehashed(lambda p: p.write_bytes(p.read_bytes()[:1000])),
                              "cannot be loaded as a Keras model"),
    "model.keras not a zip": (_rehashed(lambda p: p.write_bytes(b"\0garbage" * 100)),
                              "cannot be loaded as a Keras model"),
    "a zip that is not a Keras model": (_rehashed(_not_keras_zip),
                                        "cannot be loaded as a Keras model"),
    "model.keras with a member Keras never writes": (
        _rehashed(_with_member("../../outside.txt")), "climbs out with '..'"),
    "model takes 7 features": (_rebuilt(_seven_inputs),
                               "input of shape (None, 7); the contract says (None, 8)"),
    "model answers NaN": (_rebuilt(_answers_nan), "NaN or infinite outputs"),
}


# ---- the registry ---------------------------------------------------------------------------


@pytest.fixture
def seeded_home(tmp_path: Path, bundles: Any, checker: Any) -> Path:
    """A home whose registry holds two versions, the second active, and their history."""
    home = tmp_path / "seeded"
    registry = Registry(home / "registry", checker=checker)
    versions = [registry.add(bundles.make(n)[0], source="test").version for n in (1, 2)]
    registry.activate(versions[1], source="test", reason="seed")
    return home


def snapshot(registry_root: Path) -> dict[str, str]:
    """Every file, directory and link under the registry, with its content hash or target."""
    found = {}
    for path in sorted(registry_root.rglob("*")):
        name = str(path.relative_to(registry_root))
        if path.is_symlink():
            found[name] = "-> " + os.readlink(path)
        elif path.is_dir():
            found[name] = "dir"
        else:
            found[name] = hashlib.sha256(path.read_bytes()).hexdigest()
    return found


def prepare(kind: str, make: Make, good: Path, work: Path, seeded: Path) -> tuple[Path, Path]:
    """Make one bad bundle and a copy of the seeded home to add it to: (bundle path, home)."""
    scratch = work / kind.replace(" ", "-").replace("/", "-")
    scratch.mkdir(parents=True)
    home = scratch / "home"
    shutil.copytree(seeded, home, symlinks=True)
    bundle = Path(shutil.copytree(good, scratch / "bundle", ignore=_only_bundle_files))
    return make(bundle, scratch), home


def attempt(kind: str, path: Path, home: Path) -> dict[str, Any]:
    """Run `modelserve models add` in a fresh process: its result, and if the registry changed."""
    before = snapshot(home / "registry")
    result = run_cli("models", "add", path, home=home)
    return {"kind": kind, "result": result, "changed": snapshot(home / "registry") != before}


def _only_bundle_files(_directory: str, names: list[str]) -> list[str]:
    """Copy a bundle's own two files (not the cached plan the fixture wrote beside them)."""
    return [name for name in names if name not in (MODEL_FILE, MANIFEST_FILE)]


def refusal_problem(outcome: dict[str, Any], words: str) -> str | None:
    """What is wrong with a refusal, or None if it is a clean one."""
    result = outcome["result"]
    lines = result.stderr.strip().splitlines()
    if result.returncode != 1:
        return f"exit {result.returncode}: {result.stderr[-500:]}"
    if "Traceback" in result.stderr or len(lines) != 1 or not lines[0].startswith("Error: "):
        return f"not one 'Error:' line: {result.stderr[-500:]!r}"
    if words not in lines[0]:
        return f"{words!r} not in {lines[0]!r}"
    if outcome["changed"]:
        return "the registry changed"
    return None


def test_malformed_bundles_are_refused_clearly_and_change_nothing(
    legacy_bundle: Path, seeded_home: Path, tmp_path: Path, reliability
) -> None:
    """Every kind of malformed bundle: exit 1, one line naming it, the registry untouched."""
    work = tmp_path / "kinds"
    prepared = {kind: prepare(kind, make, legacy_bundle, work, seeded_home)
                for kind, (make, _words) in KINDS.items()}
    # Two processes at a time: several wait seconds for a TensorFlow checker of their own.
    with ThreadPoolExecutor(max_workers=2) as pool:
        outcomes = list(pool.map(lambda kind: attempt(kind, *prepared[kind]), KINDS))
    problems = {o["kind"]: refusal_problem(o, KINDS[o["kind"]][1]) for o in outcomes}
    failed = {kind: problem for kind, problem in problems.items() if problem}
    reliability.record(
        "Bad input", "malformed bundles into `modelserve models add`",
        "kinds: " + "; ".join(KINDS), kinds=len(KINDS),
        refused_clearly=len(KINDS) - len(failed),
        registry_changes=sum(o["changed"] for o in outcomes))
    assert not failed, "\n".join(f"{kind}: {problem}" for kind, problem in failed.items())


def test_a_good_bundle_is_added_by_the_same_harness(legacy_bundle: Path, seeded_home: Path,
                                                    tmp_path: Path) -> None:
    """The control: the untouched bundle is added (exit 0) and the registry changes."""
    path, home = prepare("good", lambda bundle, _scratch: bundle, legacy_bundle, tmp_path,
                         seeded_home)
    outcome = attempt("good", path, home)
    assert outcome["result"].returncode == 0, outcome["result"].stderr
    assert outcome["changed"]
    version = read_manifest(legacy_bundle)["version"]
    assert f"added {version}" in outcome["result"].stdout
