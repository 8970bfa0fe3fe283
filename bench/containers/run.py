"""Containers benchmark: image size, build times, start-up, and throughput with 1 and 3 workers.

Usage: .venv/bin/python bench/containers/run.py [--duration 10] [--warmup 2]
           [--connections 16,64] [--timeout 5] [--skip-cold-build]

Everything runs on a Docker engine of its own (the container tests' one, under
MODELSERVE_TEST_CACHE), from images built here: a Debian base made with debootstrap, a broker
image from Debian's rabbitmq-server, and our image from a copy of the repository with a local
wheelhouse. Measured in one run: the image's size; its build with no cache, again with no
change, and after a one-line source change; `compose up` to ready with one worker; then wrk
against the web container's port on 127.0.0.1 with 1, 3 and again 1 worker (the repeat shows
the drift of a shared machine). Writes bench/results/containers-YYYY-MM-DD.md (and .json)."""

from __future__ import annotations

import argparse
import importlib.util
import json
import secrets
import shutil
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "tests"))

from containers.engine import (  # noqa: E402 (after the path that finds the test helpers)
    CACHE,
    build_image,
    ensure_base_images,
    ensure_wheelhouse,
    exclusive,
    start_engine,
    stop_engine,
)
from containers.project import Project, compose_command  # noqa: E402

RESULTS = REPO / "bench" / "results"
TAG = "modelserve-bench:latest"
CONTEXT_FILES = ("pyproject.toml", "requirements.lock", "README.md", ".dockerignore", "src",
                 "deploy/docker")
DEFAULT_DATA = REPO.parent / "shared" / "data"


def serve_bench():
    """bench/serve/run.py as a module: its wrk runner and its table's cells."""
    spec = importlib.util.spec_from_file_location("serve_bench", REPO / "bench/serve/run.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def copy_context(into: Path) -> Path:
    """A copy of what the image is built from, so that a source change touches no checkout."""
    for name in CONTEXT_FILES:
        source, target = REPO / name, into / name
        target.parent.mkdir(parents=True, exist_ok=True)
        if source.is_dir():
            shutil.copytree(source, target, ignore=shutil.ignore_patterns("*.whl", "__pycache__"))
        else:
            shutil.copy2(source, target)
    return into


def measure_builds(engine, base: str, wheelhouse: Path, context: Path, cold: bool) -> dict:
    """Build with no cache (unless skipped), again unchanged, then after a source change."""
    builds = {}
    if cold:
        builds["cold (--no-cache)"] = build_image(engine, base, wheelhouse, TAG, context,
                                                  "--no-cache")
    builds["warm, nothing changed"] = build_image(engine, base, wheelhouse, TAG, context)
    marker = context / "src" / "modelserve" / "__init__.py"
    marker.write_text(marker.read_text() + f"# bench {secrets.token_hex(4)}\n")
    builds["warm, one source line changed"] = build_image(engine, base, wheelhouse, TAG,
                                                          context)
    return builds


def throughput(project: Project, workers: int, args: argparse.Namespace, wrk) -> dict:
    """Scale to `workers`, wait for readiness, then measure each concurrency with wrk."""
    project.up(workers=workers)
    project.wait_ready(workers=workers)
    cells = {}
    for connections in args.connections:
        if args.warmup:
            wrk.run_wrk(project.url, connections, args.warmup, args.timeout)
        cells[connections] = wrk.summarize(
            wrk.run_wrk(project.url, connections, args.duration, args.timeout))
        print(f"   {workers} worker(s), {connections:>3} conns  "
              f"{wrk.format_cell(cells[connections])}", flush=True)
    return cells


def run_stack(engine, broker: str, args: argparse.Namespace, wrk) -> dict:
    """Start the stack from nothing, time it to ready, measure 1, 3 and 1 workers, tear down."""
    project = Project(engine, f"msbench{secrets.token_hex(3)}", TAG, broker)
    figures: dict = {"compose": " ".join(Path(w).name for w in compose_command(engine))}
    try:
        started = time.monotonic()
        project.put_model(args.data)
        figures["model_in_volume_s"] = time.monotonic() - started
        started = time.monotonic()
        project.up(workers=1)
        project.wait_ready(workers=1)
        figures["up_to_ready_s"] = time.monotonic() - started
        figures["runs"] = [(n, throughput(project, n, args, wrk)) for n in (1, 3, 1)]
    finally:
        project.down()
        figures["leftovers"] = project.leftovers()
    return figures


def image_size(engine, tag: str) -> dict:
    """The image's size and that of its largest layers."""
    config = json.loads(engine.docker("image", "inspect", tag).stdout)[0]
    history = engine.docker("history", "--format", "{{.Size}}\t{{.CreatedBy}}", tag).stdout
    return {"bytes": config["Size"], "layers": history.splitlines()}


def report(info: dict, args: argparse.Namespace, wrk) -> list[str]:
    """The Markdown document."""
    stack = info["stack"]
    lines = [f"# Containers benchmark, {info['date']}", "",
             f"Image `{TAG}`: **{info['image']['bytes'] / 2**20:,.0f} MiB** "
             f"(base `{info['base']}`, {info['base_bytes'] / 2**20:,.0f} MiB of it).", "",
             "| build | seconds |", "|---|---:|"]
    lines += [f"| {name} | {seconds:.1f} |" for name, seconds in info["builds"].items()]
    lines += ["", f"Stack with {stack['compose']}: a model put into the volume in "
              f"{stack['model_in_volume_s']:.1f} s; `up -d` (broker, web, 1 worker) to ready in "
              f"**{stack['up_to_ready_s']:.1f} s**.", "",
              "| workers | conns | req/s | p50 ms | p99 ms | errors |",
              "|---:|---:|---:|---:|---:|---:|"]
    for workers, cells in stack["runs"]:
        for connections, cell in cells.items():
            lines.append(f"| {workers} | {connections} | {cell['rps']:,.1f} | "
                         f"{wrk.format_ms(cell['p50_ms'])} | {wrk.format_ms(cell['p99_ms'])} | "
                         f"{cell['errors']:,} |")
    lines += ["", "## How it was measured", "",
              f"- Machine: {info['machine']['cpu']}, {info['machine']['cores']} cores; dockerd "
              f"{info['dockerd']}; wrk runs on the same cores as every container.",
              "- Builds: offline (`PIP_NO_INDEX=1`, a local wheelhouse), Docker's classic "
              "builder, from a copy of the repository; the times include sending the build "
              "context (the wheelhouse too).",
              f"- wrk: one thread per connection, {args.duration} s per cell after a "
              f"{args.warmup} s warm-up, `POST /api/v1/predict` with one row, against the web "
              "container's port published on 127.0.0.1 (one web process, 64 threads). The "
              "order 1, 3, 1 workers shows the drift between readings on a shared machine.",
              f"- Left behind after `down -v`: {stack['leftovers'] or 'nothing'}."]
    return lines


def parse_args() -> argparse.Namespace:
    """Read the command line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=int, default=10, help="seconds measured per cell")
    parser.add_argument("--warmup", type=int, default=2, help="seconds of warm-up per cell")
    parser.add_argument("--connections", default="16,64", help="comma-separated, e.g. 16,64")
    parser.add_argument("--timeout", type=float, default=5.0, help="seconds before a timeout")
    parser.add_argument("--skip-cold-build", action="store_true",
                        help="do not measure the build with --no-cache (2-3 minutes)")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    args = parser.parse_args()
    args.connections = [int(c) for c in args.connections.split(",") if c.strip()]
    return args


def main() -> None:
    """Build, start, measure, tear down, write the report."""
    args = parse_args()
    if shutil.which("wrk") is None:
        sys.exit("wrk is not installed: apt-get install -y wrk")
    wrk = serve_bench()
    info: dict = {"date": datetime.now(UTC).strftime("%Y-%m-%d"),
                  "machine": wrk.machine(REPO / ".venv")}
    with exclusive(CACHE / "lock"):
        engine = start_engine(CACHE / "docker")
        try:
            info["dockerd"] = engine.docker("version", "-f", "{{.Server.Version}}").stdout.strip()
            info["base"], broker = ensure_base_images(engine, CACHE)
            info["base_bytes"] = json.loads(
                engine.docker("image", "inspect", info["base"]).stdout)[0]["Size"]
            wheelhouse = ensure_wheelhouse(CACHE)
            with tempfile.TemporaryDirectory() as work:
                context = copy_context(Path(work))
                print("== building", flush=True)
                info["builds"] = measure_builds(engine, info["base"], wheelhouse, context,
                                                not args.skip_cold_build)
            info["image"] = image_size(engine, TAG)
            print("== stack", flush=True)
            info["stack"] = run_stack(engine, broker, args, wrk)
        finally:
            stop_engine(engine)
    lines = report(info, args, wrk)
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"containers-{info['date']}.md"
    path.write_text("\n".join(lines) + "\n")
    path.with_suffix(".json").write_text(json.dumps(info, indent=2, default=str) + "\n")
    print("\n".join(lines))
    print(f"results written to {path}")


if __name__ == "__main__":
    main()
