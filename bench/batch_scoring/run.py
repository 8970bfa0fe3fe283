"""Batch scoring benchmark: `modelserve predict` and the runtime against Keras, in one run.

Usage: python bench/batch_scoring/run.py [--data DIR] [--repeats N] [--sizes 1,64,4096]

Scores 1, 64, 4096 and 1,000,000 rows (resampled from the real dataset) with the production
seed model (the compiled plan, and Keras's ways), and with a Functional model outside the plan
(two branches, BatchNormalization, LayerNormalization) that workers run through the Keras
runtime (one traced tf.function); writes a Markdown table and the raw figures to bench/results/.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from modelserve.model.backend import import_keras, import_tensorflow
from modelserve.model.check import check_bundle
from modelserve.model.dataset import FEATURES, Dataset, load_dataset, table_from_dataset
from modelserve.model.importing import import_model
from modelserve.model.legacy import import_legacy
from modelserve.model.runtime import ModelRuntime, load_keras_model
from modelserve.registry import Registry

SIZES = (1, 64, 4096, 1_000_000)
REPO = Path(__file__).resolve().parents[2]
RESULTS = REPO / "bench" / "results"
KERAS_RUNTIME = ("runtime.score (Keras runtime: traced tf.function; Functional model "
                 "outside the plan)")


def best_seconds(call, repeats: int) -> float:
    """Return the median wall time of `repeats` calls, after one warm-up call."""
    call()
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        call()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def write_csv(path: Path, rows: np.ndarray) -> None:
    """Write rows as headerless CSV with the dataset's precision."""
    np.savetxt(path, rows, delimiter=",", fmt="%.6g")


def predict_command_seconds(home: Path, csv_path: Path, out: Path, repeats: int) -> float:
    """Time the whole `modelserve predict` command with the registry's active version (its
    checked plan: no TensorFlow import), interpreter start included."""
    command = [sys.executable, "-m", "modelserve", "predict", str(csv_path), "-o", str(out)]
    env = {**os.environ, "MODELSERVE_HOME": str(home)}
    return best_seconds(
        lambda: subprocess.run(command, check=True, capture_output=True, env=env), repeats)


def registered(bundle: Path, home: Path) -> Path:
    """Register and activate a bundle in a registry of its own (checked in this process: the
    seed model is our own test data), as `modelserve predict` finds it."""
    registry = Registry(home / "registry",
                        checker=lambda staged: check_bundle(staged, plan_out=staged / "plan.npz"))
    registry.activate(registry.add(bundle, source="bench").version, source="bench")
    return home


def machine() -> dict:
    """Describe where the figures were measured."""
    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        platform.processor(),
    )
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "tensorflow": import_tensorflow().__version__,
    }


def keras_runtime(dataset: Dataset, work: Path) -> ModelRuntime:
    """A Functional model outside the plan, imported and checked as a bundle: the Keras runtime."""
    keras = import_keras()
    keras.utils.set_random_seed(7)
    inputs = keras.Input((len(FEATURES),), name="features")
    normalize = keras.layers.Normalization()
    normalize.adapt(dataset.features)
    x = normalize(inputs)
    left = keras.layers.BatchNormalization()(keras.layers.Dense(12, activation="relu")(x))
    right = keras.layers.LayerNormalization()(keras.layers.Dense(8, activation="tanh")(x))
    joined = keras.layers.Concatenate()([left, right])
    model = keras.Model(inputs, keras.layers.Dense(1, activation="sigmoid")(joined))
    path = work / "branches.keras"
    model.save(path)
    bundle = work / "keras-bundle"
    import_model(path, table_from_dataset(dataset), bundle, model_shown=str(path),
                 data_shown="the dataset")
    if check_bundle(bundle, plan_out=bundle / "plan.npz")["runtime"] != "keras":
        raise SystemExit("the Functional model compiled to a plan; it must be outside it")
    runtime = ModelRuntime.load(bundle)
    assert runtime.kind == "keras"  # noqa: S101
    return runtime


def measure(data_dir: Path, repeats: int, work: Path,
            sizes: tuple[int, ...] = SIZES) -> list[dict]:
    """Run every measurement and return one record per (size, method)."""
    dataset = load_dataset(data_dir / "pima-indians-diabetes.csv")
    seed = data_dir / "seed-model" / "production"
    bundle = work / "bundle"
    import_legacy(seed / "model.json", seed / "model.h5", dataset, bundle)
    check_bundle(bundle, plan_out=bundle / "plan.npz")
    runtime = ModelRuntime.load(bundle)
    model = load_keras_model(bundle / "model.keras")
    home = registered(bundle, work / "home")
    tf = import_tensorflow()
    traced = tf.function(lambda x: model(x, training=False))
    outside = keras_runtime(dataset, work)
    rng = np.random.default_rng(0)
    records = []
    for size in sizes:
        rows = dataset.features[rng.integers(0, dataset.rows, size)]
        csv_path = work / f"rows-{size}.csv"
        write_csv(csv_path, rows)
        timings = time_methods(home, runtime, model, traced, rows, csv_path, repeats)
        timings[KERAS_RUNTIME] = best_seconds(lambda batch=rows: outside.score(batch),
                                              3 if size >= 100_000 else repeats)
        for method, seconds in timings.items():
            records.append(
                {
                    "rows": size,
                    "method": method,
                    "seconds": seconds,
                    "rows_per_second": size / seconds,
                }
            )
            print(
                f"{size:>9} rows  {method:<62} {seconds * 1e3:10.3f} ms  "
                f"{size / seconds:14,.0f} rows/s",
                flush=True,
            )
    return records


def time_methods(home, runtime, model, traced, rows, csv_path: Path, repeats: int) -> dict:
    """Time each way of scoring the same rows."""
    slow_repeats = 3 if len(rows) >= 100_000 else repeats
    batch_size = max(32, min(len(rows), 65536))
    return {
        "modelserve predict (CSV in, CSV out, process start included)": predict_command_seconds(
            home, csv_path, csv_path.with_suffix(".out"), slow_repeats
        ),
        "runtime.score (compiled plan)": best_seconds(lambda: runtime.score(rows), repeats),
        "Keras model(x) direct call": best_seconds(
            lambda: model(rows, training=False), slow_repeats
        ),
        "tf.function(model)": best_seconds(lambda: traced(rows), slow_repeats),
        "Keras model.predict": best_seconds(
            lambda: model.predict(rows, verbose=0, batch_size=batch_size), slow_repeats
        ),
    }


def write_results(records: list[dict], info: dict) -> Path:
    """Write the figures as Markdown and JSON under bench/results/."""
    stamp = datetime.now(UTC).strftime("%Y-%m-%d")
    RESULTS.mkdir(parents=True, exist_ok=True)
    lines = [
        f"# Batch scoring, {stamp}",
        "",
        f"Machine: {info['cpu']}, {info['cores']} cores; Python {info['python']}, "
        f"numpy {info['numpy']}, TensorFlow {info['tensorflow']}.",
        "Model: the production seed model (8-12-8-1, sigmoid) imported as a bundle; the "
        "Keras-runtime row: a Functional model outside the plan (Normalization, two branches "
        "Dense 12 + BatchNormalization and Dense 8 + LayerNormalization, Concatenate, Dense 1 "
        "sigmoid) imported with `model import`'s code and checked (runtime: keras). "
        "Median of repeated runs (three runs for 1,000,000 rows), after a warm-up.",
        "",
        "| rows | method | time | rows/s |",
        "|---:|---|---:|---:|",
    ]
    for r in records:
        lines.append(
            f"| {r['rows']:,} | {r['method']} | {r['seconds'] * 1e3:,.3f} ms "
            f"| {r['rows_per_second']:,.0f} |"
        )
    path = RESULTS / f"batch_scoring-{stamp}.md"
    path.write_text("\n".join(lines) + "\n")
    path.with_suffix(".json").write_text(
        json.dumps({"date": stamp, "machine": info, "records": records}, indent=2) + "\n"
    )
    return path


def main() -> None:
    """Parse arguments, measure, write results."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    default_data = os.environ.get("MODELSERVE_TEST_DATA") or str(REPO.parent / "shared" / "data")
    parser.add_argument("--data", type=Path, default=Path(default_data))
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--sizes", default=",".join(map(str, SIZES)),
                        help="Row counts to score, comma-separated (a bounded run: fewer).")
    args = parser.parse_args()
    sizes = tuple(int(size) for size in args.sizes.split(","))
    with tempfile.TemporaryDirectory(prefix="modelserve-bench-") as tmp:
        records = measure(args.data, args.repeats, Path(tmp), sizes)
    print(f"results written to {write_results(records, machine())}")


if __name__ == "__main__":
    main()
