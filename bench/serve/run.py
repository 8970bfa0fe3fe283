"""Serving benchmark: one model, one single-row JSON request, wrk at 1/16/64 connections.

Usage: .venv/bin/python bench/serve/run.py [--duration 10] [--warmup 2]
           [--connections 1,16,64] [--only full,full2,inline,inline2,bentoml,original]
           [--timeout 5]

Servers: `modelserve up` (the full stack, with one and with two web processes),
`modelserve up --inline` (the same Flask app calling the model in-process, no queue; with two
web processes it is the ceiling on this machine), BentoML with adaptive batching (its own venv
under bench/work/), and the original design (Flask -> Celery over RabbitMQ with rpc:// -> Keras
`model.predict`). Every server serves the seed model imported into a fresh MODELSERVE_HOME
under bench/work/serve/, listens on 127.0.0.1 only, and is stopped (its whole process group)
before the next starts, on error and on Ctrl-C too. Writes bench/results/serve-YYYY-MM-DD.md
(and .json) and prints the table."""

from __future__ import annotations

import argparse
import contextlib
import csv
import hashlib
import json
import os
import platform
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from modelserve.stack.ports import port_is_free
from modelserve.stack.rabbitmq import BrokerNode, free_broker_port

REPO = Path(__file__).resolve().parents[2]
HERE = REPO / "bench" / "serve"
PEERS = HERE / "peers"
POST_LUA = HERE / "post.lua"
RESULTS = REPO / "bench" / "results"
WORK = REPO / "bench" / "work" / "serve"
BENTOML_VENV = REPO / "bench" / "work" / "bentoml-venv"
BENTOML_REQUIREMENTS = PEERS / "bentoml-requirements.txt"
PATH = "/api/v1/predict"
ROW = [6, 148, 72, 35, 0, 33.6, 0.627, 50]
BODY = json.dumps({"rows": [ROW]}).encode()
TOLERANCE = 1e-4
SERVERS = ("full", "full2", "inline", "inline2", "bentoml", "original")
BENTOML_BATCH = {"BENCH_MAX_BATCH_SIZE": "64", "BENCH_MAX_LATENCY_MS": "100", "BENCH_WORKERS": "1"}
ORIGINAL_THREADS = 64
ORIGINAL_RESULT_TIMEOUT = 10


class BenchError(RuntimeError):
    """A server could not be prepared, started or checked."""


# ---------------------------------------------------------------- processes


def descendants(pid: int) -> list[int]:
    """Return every live descendant of pid (children that moved to a session of their own too)."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def signal_quietly(sig: int, *, group: int | None = None, pids: tuple[int, ...] = ()) -> None:
    """Send a signal to a process group and to single processes, ignoring ones already gone."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        if group is not None:
            os.killpg(group, sig)
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, sig)


@dataclass
class Started:
    """One process we started, in a session of its own, and how to stop it."""

    name: str
    process: subprocess.Popen
    stop: Callable[[subprocess.Popen], None] | None = None


@dataclass
class Processes:
    """Everything one server needs running; `stop_all` ends it all, newest first."""

    logs: Path
    started: list[Started] = field(default_factory=list)

    def start(self, name: str, argv: list[str], env: dict[str, str], cwd: Path) -> Started:
        """Start argv in a new session (its own process group), output to logs/<name>.log."""
        self.logs.mkdir(parents=True, exist_ok=True)
        with open(self.logs / f"{name}.log", "ab") as log:
            process = subprocess.Popen(
                argv, env=env, cwd=cwd, stdin=subprocess.DEVNULL, stdout=log,
                stderr=subprocess.STDOUT, start_new_session=True,
            )
        return self.adopt(name, process)

    def adopt(self, name: str, process: subprocess.Popen, stop=None) -> Started:
        """Track a process started elsewhere, with its own stop function if it has one."""
        entry = Started(name, process, stop)
        self.started.append(entry)
        return entry

    def stop_all(self, grace: float = 20.0) -> None:
        """Stop every process: SIGTERM to its group, then SIGKILL to group and descendants."""
        while self.started:
            entry = self.started.pop()
            family = tuple(descendants(entry.process.pid))
            if entry.stop is not None:
                with contextlib.suppress(Exception):
                    entry.stop(entry.process)
            signal_quietly(signal.SIGTERM, group=entry.process.pid)
            try:
                entry.process.wait(grace)
            except subprocess.TimeoutExpired:
                pass
            # Whatever ignored SIGTERM, or left our group, goes now.
            signal_quietly(signal.SIGKILL, group=entry.process.pid, pids=family)
            with contextlib.suppress(subprocess.TimeoutExpired):
                entry.process.wait(5)

    def check_alive(self, during: str) -> None:
        """Raise when a process we started has exited on its own."""
        for entry in self.started:
            if entry.process.poll() is not None:
                raise BenchError(
                    f"{entry.name} exited (code {entry.process.returncode}) during {during}:\n"
                    + self.log_tail(entry.name)
                )

    def log_tail(self, name: str, lines: int = 15) -> str:
        """Return the last lines a process wrote, for an error message."""
        path = self.logs / f"{name}.log"
        text = path.read_text(errors="replace") if path.is_file() else ""
        return "\n".join(text.splitlines()[-lines:])


def raise_on_sigterm() -> None:
    """Turn SIGTERM and SIGHUP into KeyboardInterrupt so cleanup runs as on Ctrl-C."""

    def interrupt(signum, frame):
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, interrupt)
    signal.signal(signal.SIGHUP, interrupt)


# ---------------------------------------------------------------- ports and HTTP


def free_port() -> int:
    """Return a loopback port the kernel says is free."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def http(url: str, body: bytes | None = None, timeout: float = 5.0) -> tuple[int, bytes]:
    """Send one GET (or POST of a JSON body) and return status and body; 0 when unreachable."""
    headers = {"Content-Type": "application/json"} if body is not None else {}
    req = urllib.request.Request(url, data=body, headers=headers)  # noqa: S310 (our loopback URL)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as answer:  # noqa: S310
            return answer.status, answer.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()
    except (OSError, TimeoutError):
        return 0, b""


def wait_for_port(port: int, entry: Started, timeout: float) -> None:
    """Wait until something accepts connections on a loopback port, failing if entry dies."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if entry.process.poll() is not None:
            raise BenchError(f"{entry.name} exited with code {entry.process.returncode}")
        if not port_is_free(port):
            with socket.socket() as probe:
                probe.settimeout(0.5)
                if probe.connect_ex(("127.0.0.1", port)) == 0:
                    return
        time.sleep(0.2)
    raise BenchError(f"{entry.name}: nothing listened on port {port} within {timeout:.0f} s")


def wait_ready(url: str, entry: Started, procs: Processes, timeout: float, body=None) -> None:
    """Poll url until it answers 200, failing early when the process dies."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if entry.process.poll() is not None:
            raise BenchError(
                f"{entry.name} exited with code {entry.process.returncode} while starting:\n"
                + procs.log_tail(entry.name)
            )
        if http(url, body, timeout=min(10.0, timeout))[0] == 200:
            return
        time.sleep(0.5)
    raise BenchError(
        f"{url} did not answer 200 within {timeout:.0f} s:\n" + procs.log_tail(entry.name)
    )


def first_probability(payload) -> float:
    """Pull the first probability out of any of the servers' answers."""
    if isinstance(payload, dict):
        payload = payload["probabilities"]
    while isinstance(payload, list):
        payload = payload[0]
    return float(payload)


def check_answer(base: str, reference: float) -> float:
    """POST the benchmark body once and check the probability matches the model's."""
    status, body = http(base + PATH, BODY, timeout=60)
    if status != 200:
        raise BenchError(f"{base}{PATH} answered {status}: {body[:300]!r}")
    got = first_probability(json.loads(body))
    if abs(got - reference) > TOLERANCE:
        raise BenchError(f"{base}{PATH} answered {got}, the model says {reference}")
    return got


def settle(base: str, limit: float = 120.0) -> float:
    """Wait until one request is answered 200 within 2 s (a backlog drained); return the wait."""
    started = time.monotonic()
    while time.monotonic() - started < limit:
        asked = time.monotonic()
        status, _ = http(base + PATH, BODY, timeout=30)
        if status == 200 and time.monotonic() - asked < 2.0:
            break
        time.sleep(1.0)
    return time.monotonic() - started


# ---------------------------------------------------------------- the model


def run_checked(argv: list[str], env: dict[str, str], what: str) -> str:
    """Run a command to completion, raising with its output when it fails."""
    done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=600, check=False)
    if done.returncode != 0:
        raise BenchError(f"{what} failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")
    return done.stdout


def prepare_home(venv: Path, data: Path, home: Path) -> dict[str, str]:
    """Make a fresh MODELSERVE_HOME with the dataset and the production seed model active."""
    shutil.rmtree(home, ignore_errors=True)
    env = dict(os.environ, MODELSERVE_HOME=str(home), TF_CPP_MIN_LOG_LEVEL="2")
    modelserve = str(venv / "bin" / "modelserve")
    seed = data / "seed-model" / "production"
    run_checked([modelserve, "data", "import", str(data / "pima-indians-diabetes.csv")], env,
                "modelserve data import")
    run_checked([modelserve, "model", "import-legacy", str(seed / "model.json"),
                 str(seed / "model.h5"), "--activate"], env, "modelserve model import-legacy")
    return env


def reference_probability(venv: Path, env: dict[str, str], work: Path) -> tuple[float, str]:
    """Score the benchmark row with `modelserve predict`: the figure every server must match."""
    rows, out = work / "row.csv", work / "row-scored.csv"
    rows.write_text(",".join(str(v) for v in ROW) + "\n")
    run_checked([str(venv / "bin" / "modelserve"), "predict", str(rows), "-o", str(out)], env,
                "modelserve predict")
    record = next(csv.DictReader(out.open()))
    return float(record["probability"]), record["model_version"]


# ---------------------------------------------------------------- the servers


@dataclass
class Context:
    """What every server start needs."""

    venv: Path
    env: dict[str, str]
    model: Path
    procs: Processes
    ready_timeout: float


def start_modelserve(ctx: Context, inline: bool, web_processes: int = 1) -> tuple[str, str]:
    """Start `modelserve up` (full stack or --inline) and wait for /v2/health/ready."""
    port = free_port()
    argv = [str(ctx.venv / "bin" / "modelserve"), "up", "--port", str(port),
            "--web-processes", str(web_processes)]
    argv += ["--inline"] if inline else ["--broker-port", str(free_broker_port())]
    name = f"modelserve-{'inline' if inline else 'up'}-{web_processes}"
    entry = ctx.procs.start(name, argv, ctx.env, REPO)
    base = f"http://127.0.0.1:{port}"
    wait_ready(base + "/v2/health/ready", entry, ctx.procs, ctx.ready_timeout)
    return base, " ".join(["modelserve", *argv[1:]])


def requirements_stamp() -> str:
    """Hash the pinned BentoML requirements, to know when the venv must be brought up to date."""
    return hashlib.sha256(BENTOML_REQUIREMENTS.read_bytes()).hexdigest()


def ensure_bentoml_venv() -> Path:
    """Create (or update) bench/work/bentoml-venv from the pinned requirements."""
    stamp = BENTOML_VENV / ".requirements-sha256"
    if stamp.is_file() and stamp.read_text().strip() == requirements_stamp():
        return BENTOML_VENV
    print(f"building {BENTOML_VENV} (a few minutes) ...", flush=True)
    if not (BENTOML_VENV / "bin" / "python").exists():
        base_python = getattr(sys, "_base_executable", sys.executable)
        subprocess.run([base_python, "-m", "venv", str(BENTOML_VENV)], check=True)
    pip = [str(BENTOML_VENV / "bin" / "python"), "-m", "pip", "install", "-q",
           "--disable-pip-version-check"]
    subprocess.run([*pip, "-r", str(BENTOML_REQUIREMENTS)], check=True, timeout=1800)
    stamp.write_text(requirements_stamp() + "\n")
    return BENTOML_VENV


def start_bentoml(ctx: Context) -> tuple[str, str]:
    """Start BentoML on the same model.keras, adaptive batching on, and wait for /readyz."""
    venv = ensure_bentoml_venv()
    port = free_port()
    env = dict(ctx.env, BENCH_MODEL_PATH=str(ctx.model), BENTOML_HOME=str(WORK / "bentoml-home"),
               BENTOML_DO_NOT_TRACK="true", TF_CPP_MIN_LOG_LEVEL="2", **BENTOML_BATCH)
    argv = [str(venv / "bin" / "bentoml"), "serve", "bentoml_service:Classifier",
            "--host", "127.0.0.1", "--port", str(port)]
    entry = ctx.procs.start("bentoml", argv, env, PEERS)
    base = f"http://127.0.0.1:{port}"
    wait_ready(base + "/readyz", entry, ctx.procs, ctx.ready_timeout)
    batch = ", ".join(f"{k.removeprefix('BENCH_').lower()}={v}" for k, v in BENTOML_BATCH.items())
    return base, f"bentoml serve bentoml_service:Classifier ({batch})"


def start_broker(ctx: Context) -> str:
    """Start a private RabbitMQ node for the original design and return its AMQP URL."""
    node = BrokerNode(base=WORK / "original-rabbitmq", port=free_broker_port())
    entry = ctx.procs.adopt("rabbitmq", node.start(), stop=node.stop)
    wait_for_port(node.port, entry, 90)
    return node.url()


def start_original(ctx: Context) -> tuple[str, str]:
    """Start RabbitMQ, one Celery worker and gunicorn (gthread) for the original design."""
    port = free_port()
    env = dict(ctx.env, BENCH_BROKER_URL=start_broker(ctx), BENCH_MODEL_PATH=str(ctx.model),
               BENCH_RESULT_TIMEOUT=str(ORIGINAL_RESULT_TIMEOUT), PYTHONPATH=str(PEERS),
               TF_CPP_MIN_LOG_LEVEL="2")
    bin_dir = ctx.venv / "bin"
    worker = [str(bin_dir / "celery"), "-A", "original_design:celery_app", "worker",
              "--pool", "prefork", "--concurrency", "1", "--loglevel", "WARNING"]
    web = [str(bin_dir / "gunicorn"), "-k", "gthread", "-w", "1",
           "--threads", str(ORIGINAL_THREADS), "-b", f"127.0.0.1:{port}",
           "--no-control-socket", "original_design:app"]
    ctx.procs.start("celery-worker", worker, env, PEERS)
    entry = ctx.procs.start("gunicorn", web, env, PEERS)
    base = f"http://127.0.0.1:{port}"
    # Ready means a real prediction went round the queue (the worker loads Keras lazily).
    wait_ready(base + PATH, entry, ctx.procs, ctx.ready_timeout, body=BODY)
    return base, (f"gunicorn gthread 1 worker x {ORIGINAL_THREADS} threads; celery prefork "
                  f"concurrency 1; rpc:// backend, get(timeout={ORIGINAL_RESULT_TIMEOUT})")


STARTERS: dict[str, tuple[str, Callable[[Context], tuple[str, str]]]] = {
    "full": ("modelserve up (full stack)", lambda ctx: start_modelserve(ctx, inline=False)),
    "full2": ("modelserve up, 2 web processes",
              lambda ctx: start_modelserve(ctx, inline=False, web_processes=2)),
    "inline": ("modelserve up --inline (in-process)",
               lambda ctx: start_modelserve(ctx, inline=True)),
    "inline2": ("modelserve up --inline, 2 web processes (ceiling)",
                lambda ctx: start_modelserve(ctx, inline=True, web_processes=2)),
    "bentoml": ("BentoML, adaptive batching", start_bentoml),
    "original": ("original design (Celery rpc://)", start_original),
}


# ---------------------------------------------------------------- wrk


def run_wrk(base: str, connections: int, seconds: int, timeout: float) -> dict:
    """Run wrk with one thread per connection and return post.lua's WRK_JSON figures."""
    argv = ["wrk", "-t", str(connections), "-c", str(connections), "-d", f"{seconds}s",
            "--timeout", f"{timeout:g}s", "-s", str(POST_LUA), base + PATH, "--", f"{timeout:g}"]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + 60,
                          check=False, start_new_session=True)
    for line in done.stdout.splitlines():
        if line.startswith("WRK_JSON "):
            return json.loads(line.removeprefix("WRK_JSON "))
    raise BenchError(f"wrk printed no figures ({done.returncode}):\n{done.stdout}\n{done.stderr}")


def summarize(raw: dict) -> dict:
    """Turn wrk's figures into the table's: 2xx req/s, p50, p99 and errors by kind."""
    seconds = raw["duration_us"] / 1e6
    socket_errors = raw["connect"] + raw["read"] + raw["write"]
    timeouts = raw["late"] + raw["hung"]
    return {
        "rps": raw["ok"] / seconds,
        "p50_ms": raw["p50_us"] / 1e3 if raw["ok"] else None,
        "p99_ms": raw["p99_us"] / 1e3 if raw["ok"] else None,
        "errors": raw["bad"] + socket_errors + timeouts,
        "non_2xx": raw["bad"],
        "non_2xx_codes": raw["bad_codes"],
        "socket": socket_errors,
        "timeouts": timeouts,
        "seconds": seconds,
        "raw": raw,
    }


def measure_cell(base: str, connections: int, args: argparse.Namespace) -> dict:
    """Settle the server, warm it up at this concurrency, settle again, then measure."""
    waited = settle(base)
    if args.warmup > 0:
        run_wrk(base, connections, args.warmup, args.timeout)
        # The warm-up's last requests may leave work queued (the original design keeps
        # running tasks whose callers left): let it drain so the cell starts clean.
        waited += settle(base)
    record = summarize(run_wrk(base, connections, args.duration, args.timeout))
    record["settle_s"] = waited
    return record


def bench_server(name: str, ctx: Context, args: argparse.Namespace, reference: float) -> dict:
    """Start one server, check its answer, measure every concurrency, stop it."""
    label, start = STARTERS[name]
    result = {"name": name, "label": label, "cells": {}}
    try:
        print(f"== {label}: starting", flush=True)
        begun = time.monotonic()
        base, settings = start(ctx)
        result["startup_s"] = time.monotonic() - begun
        result["settings"] = settings
        result["probability"] = check_answer(base, reference)
        for connections in args.connections:
            cell = measure_cell(base, connections, args)
            result["cells"][connections] = cell
            print(f"   {connections:>3} conns  {format_cell(cell)}", flush=True)
            ctx.procs.check_alive(f"the {connections}-connection cell")
    except Exception as error:  # noqa: BLE001 (one server failing must not stop the others)
        result["error"] = f"{type(error).__name__}: {error}"
        print(f"   FAILED: {error}", flush=True)
    finally:
        ctx.procs.stop_all()
    return result


# ---------------------------------------------------------------- report


def format_ms(value: float | None) -> str:
    """Show milliseconds with sensible precision, or a dash when nothing was answered."""
    if value is None:
        return "–"
    return f"{value:,.0f}" if value >= 100 else f"{value:.2f}"


def format_cell(cell: dict) -> str:
    """One progress line for a measured cell."""
    return (f"{cell['rps']:9,.1f} req/s  p50 {format_ms(cell['p50_ms'])} ms  "
            f"p99 {format_ms(cell['p99_ms'])} ms  errors {cell['errors']}")


def format_codes(cell: dict) -> str:
    """Show the non-2xx count with its status codes, e.g. `46 (503×46)`."""
    codes = ", ".join(f"{code}×{n}" for code, n in sorted(cell["non_2xx_codes"].items()))
    return f"{cell['non_2xx']:,}" + (f" ({codes})" if codes else "")


def table(results: list[dict], connections: list[int]) -> list[str]:
    """The Markdown table: one row per server and concurrency."""
    lines = [
        "| server | conns | req/s (2xx) | p50 ms | p99 ms | errors | non-2xx | socket | timeouts |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for result in results:
        if "error" in result and not result["cells"]:
            reason = result["error"].splitlines()[0]
            lines.append(f"| {result['label']} | – | did not run: {reason} | | | | | | |")
            continue
        for c in connections:
            cell = result["cells"].get(c)
            if cell is None:
                lines.append(f"| {result['label']} | {c} | not measured | | | | | | |")
                continue
            lines.append(
                f"| {result['label']} | {c} | {cell['rps']:,.1f} | {format_ms(cell['p50_ms'])} "
                f"| {format_ms(cell['p99_ms'])} | {cell['errors']:,} | {format_codes(cell)} "
                f"| {cell['socket']:,} | {cell['timeouts']:,} |"
            )
    return lines


def package_versions(python: Path, names: list[str]) -> dict[str, str]:
    """Ask an interpreter (a venv's) which versions of some packages it has."""
    code = ("import json, sys, importlib.metadata as m\n"
            "out = {}\n"
            "for n in sys.argv[1:]:\n"
            "    try: out[n] = m.version(n)\n"
            "    except m.PackageNotFoundError: out[n] = 'missing'\n"
            "print(json.dumps(out))")
    if not python.exists():
        return {}
    done = subprocess.run([str(python), "-c", code, *names], capture_output=True, text=True,
                          check=False, timeout=60)
    return json.loads(done.stdout) if done.returncode == 0 else {}


def debian_version(package: str) -> str:
    """Return an installed Debian package's version, or 'missing'."""
    done = subprocess.run(["dpkg-query", "-W", "-f", "${Version}", package],  # noqa: S607
                          capture_output=True, text=True, check=False)
    return done.stdout.strip() if done.returncode == 0 else "missing"


def machine(venv: Path) -> dict:
    """Describe the machine and the software the figures were measured with."""
    cpu = next((line.split(":", 1)[1].strip()
                for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor())
    ours = ["modelserve", "tensorflow-cpu", "keras", "numpy", "flask", "gunicorn", "celery"]
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "memory_gib": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "project": package_versions(venv / "bin" / "python", ours),
        "bentoml_venv": package_versions(BENTOML_VENV / "bin" / "python",
                                         ["bentoml", "tensorflow-cpu", "keras", "numpy"]),
        "wrk": debian_version("wrk"),
        "rabbitmq": debian_version("rabbitmq-server"),
    }


def report(results: list[dict], info: dict, args: argparse.Namespace, model: dict) -> list[str]:
    """The whole Markdown document: table, then how it was measured."""
    project = ", ".join(f"{k} {v}" for k, v in info["project"].items())
    bento = ", ".join(f"{k} {v}" for k, v in info["bentoml_venv"].items()) or "not built"
    lines = [f"# Serving benchmark, {info['date']}", "", *table(results, args.connections), ""]
    lines += [
        "## How it was measured",
        "",
        f"- Machine: {info['cpu']}, {info['cores']} cores, {info['memory_gib']} GiB, "
        f"Linux {info['kernel']}; wrk runs on the same cores as the server.",
        f"- Software: Python {info['python']}; project venv: {project}; BentoML venv: {bento}; "
        f"wrk {info['wrk']}; RabbitMQ {info['rabbitmq']}.",
        f"- Model: the production seed model imported into a fresh MODELSERVE_HOME "
        f"(version {model['version']}); every server serves its model.keras. The request "
        f"`POST {PATH}` `{BODY.decode()}`; every server's answer was checked against "
        f"`modelserve predict` ({model['probability']:.7f}) within {TOLERANCE:g}.",
        f"- wrk: one thread per connection, {args.duration} s per cell after a "
        f"{args.warmup} s warm-up at the same concurrency; before the warm-up and "
        "again before the measurement the server is settled (one request must answer within "
        "2 s, so work queued by requests whose clients left drains first).",
        f"- req/s counts 2xx answers within the {args.timeout:g} s timeout. errors = non-2xx "
        "+ socket errors (connect, read, write) + timeouts (answers later than the timeout, "
        "plus requests still unanswered at the end and older than the timeout). p50/p99 are "
        "exact percentiles of the 2xx answers' latencies, timed per connection by post.lua "
        "(wrk's own, with its coordinated-omission correction, are in the .json).",
        "",
        "| server | settings | start-up s | settle s per cell |",
        "|---|---|---:|---|",
    ]
    for r in results:
        settles = ", ".join(f"{c['settle_s']:.1f}" for c in r["cells"].values()) or "–"
        startup = f"{r['startup_s']:.1f}" if "startup_s" in r else "–"
        lines.append(f"| {r['label']} | {r.get('settings', '–')} | {startup} | {settles} |")
    failures = [r for r in results if "error" in r]
    if failures:
        lines += ["", "## Failures", ""]
        for r in failures:
            lines += [f"{r['label']}:", "", "```", r["error"], "```", ""]
    return lines


def write_results(lines: list[str], results: list[dict], info: dict, only: str | None) -> Path:
    """Write the Markdown report and the raw figures under bench/results/."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    stem = f"serve-{info['date']}" + (f"-{only}" if only else "")
    path = RESULTS / f"{stem}.md"
    path.write_text("\n".join(lines) + "\n")
    path.with_suffix(".json").write_text(
        json.dumps({"machine": info, "results": results}, indent=2, default=str) + "\n"
    )
    return path


# ---------------------------------------------------------------- main


def parse_args() -> argparse.Namespace:
    """Read the command line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    default_data = os.environ.get("MODELSERVE_TEST_DATA") or str(REPO.parent / "shared" / "data")
    parser.add_argument("--duration", type=int, default=10, help="seconds measured per cell")
    parser.add_argument("--warmup", type=int, default=2, help="seconds of warm-up per cell")
    parser.add_argument("--connections", default="1,16,64", help="comma-separated, e.g. 1,16,64")
    parser.add_argument("--only", help=f"run only these servers, comma-separated: {SERVERS}")
    parser.add_argument("--timeout", type=float, default=5.0, help="seconds before a timeout")
    parser.add_argument("--ready-timeout", type=float, default=240.0,
                        help="seconds a server may take to become ready")
    parser.add_argument("--data", type=Path, default=Path(default_data))
    parser.add_argument("--venv", type=Path, default=REPO / ".venv",
                        help="the project's venv (modelserve, celery, gunicorn)")
    args = parser.parse_args()
    args.connections = [int(c) for c in args.connections.split(",") if c.strip()]
    if not args.connections or min(args.connections) < 1 or args.duration < 1:
        parser.error("--connections needs positive integers and --duration at least 1")
    args.names = args.only.split(",") if args.only else list(SERVERS)
    if unknown := set(args.names) - set(SERVERS):
        parser.error(f"unknown server {', '.join(sorted(unknown))}; choose from {SERVERS}")
    return args


@contextlib.contextmanager
def cleanup_on_exit(procs: Processes) -> Iterator[None]:
    """Stop everything started, whatever ends the run (error, Ctrl-C, SIGTERM)."""
    raise_on_sigterm()
    try:
        yield
    finally:
        # A second Ctrl-C must not cut the cleanup short.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        procs.stop_all()


def main() -> None:
    """Prepare the model, run every server at every concurrency, write and print the table."""
    args = parse_args()
    if shutil.which("wrk") is None:
        sys.exit("wrk is not installed: apt-get install -y wrk")
    WORK.mkdir(parents=True, exist_ok=True)
    procs = Processes(logs=WORK / "logs")
    try:
        with cleanup_on_exit(procs):
            env = prepare_home(args.venv, args.data, WORK / "home")
            probability, version = reference_probability(args.venv, env, WORK)
            model = (WORK / "home" / "registry" / "active" / "model.keras").resolve()
            ctx = Context(args.venv, env, model, procs, args.ready_timeout)
            results = [bench_server(name, ctx, args, probability) for name in args.names]
    except KeyboardInterrupt:
        sys.exit("interrupted: every process started was stopped; nothing written")
    info = machine(args.venv) | {"date": datetime.now(UTC).strftime("%Y-%m-%d")}
    model_facts = {"version": version, "probability": probability}
    lines = report(results, info, args, model_facts)
    path = write_results(lines, results, info, args.only and args.only.replace(",", "-"))
    print("\n".join(table(results, args.connections)))
    print(f"results written to {path}")


if __name__ == "__main__":
    main()
