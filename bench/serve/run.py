"""Serving benchmark: one model, one single-row JSON request, wrk at 1/16/64 connections.

Usage: .venv/bin/python bench/serve/run.py [--duration 10] [--warmup 2]
           [--connections 1,16,64] [--only full,full2,full2-nolog,full2-shadow,full2-ab,inline,
           inline2,echo-wsgi,echo-asgi,bentoml,ray,mlserver,pytriton,original] [--timeout 5]
           [--many-models 1,3,10] [--rounds 1] [--tag run2]

Servers: `modelserve up` (the full stack, with one and with two web processes, with two
without the prediction log: what the log costs, and with two while a shadow rollout gets a
copy of every request: what a shadow costs live; full2-ab is that shadow's cost measured on one
stack, without and with the shadow cell by cell, the rollout begun and aborted between them),
`modelserve up --inline` (the same Flask app calling the model in-process, no queue; with two
web processes it is the ceiling on this machine), two JSON echoes with no model (WSGI under
`gunicorn -w 2` sync workers, bare ASGI under granian with 2 workers: the HTTP layer's own
limit), the peers BentoML (adaptive batching), Ray Serve (@serve.batch), MLServer (adaptive
batching, a custom runtime) and Triton through PyTriton (dynamic batching), each in its own
venv bench/work/<peer>-venv pinned by peers/<peer>-requirements.txt, and the original design
(Flask -> Celery over RabbitMQ with rpc:// -> Keras `model.predict`). Every server serves the
seed model imported into a fresh MODELSERVE_HOME under bench/work/serve/ (the peers without
TensorFlow compute with its plan.npz weights, peers/dense.py), listens on 127.0.0.1 only, and
is stopped (its whole process group) before the next starts, on error and on Ctrl-C too.
MLServer and Triton are asked the same row in the V2 inference protocol. Writes
bench/results/serve-YYYY-MM-DD.md (and .json) and prints the table.

--many-models 1,3,10 runs the many-models comparison instead: for each count N a fresh home
serving N models (`diabetes` and m01, m02, ...: the same checked version under N names), the
full stack with 2 workers, wrk spreading every connection's requests evenly over the N routes
/api/v1/models/<name>/predict; req/s, p50, p99 and errors per N beside the one-model figure
of the same run, and the workers' RSS after each N (writes bench/results/serve-models-DATE)."""

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
import statistics
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path

import floor

from modelserve.config import Settings
from modelserve.predlog.store import PredictionLog
from modelserve.stack.ports import port_is_free
from modelserve.stack.rabbitmq import BrokerNode, free_broker_port

REPO = Path(__file__).resolve().parents[2]
HERE = REPO / "bench" / "serve"
PEERS = HERE / "peers"
POST_LUA = HERE / "post.lua"
RESULTS = REPO / "bench" / "results"
WORK = REPO / "bench" / "work" / "serve"
PATH = "/api/v1/predict"
MODEL_PATH = "/api/v1/models/{name}/predict"
DEFAULTS = Settings(home=Path("."))
MODELS_WORKERS = 2
ROW = [6, 148, 72, 35, 0, 33.6, 0.627, 50]
BODY = json.dumps({"rows": [ROW]}).encode()
# The V2 (Open Inference) protocol's body for the same row, for MLServer and Triton.
V2_MODEL = "classifier"
V2_PATH = f"/v2/models/{V2_MODEL}/infer"
V2_BODY = json.dumps({"inputs": [{"name": "rows", "shape": [1, len(ROW)], "datatype": "FP32",
                                  "data": ROW}]}).encode()
TOLERANCE = 1e-4
SERVERS = ("full", "full2", "full2-nolog", "full2-shadow", "full2-ab", "inline", "inline2",
           "echo-wsgi", "echo-asgi", "bentoml", "ray", "mlserver", "pytriton", "original")
# Each peer's venv is bench/work/<peer>-venv, pinned by peers/<peer>-requirements.txt.
PEER_VENVS = ("bentoml", "granian", "ray", "mlserver", "pytriton")
PEER_PACKAGES = {"bentoml": ["bentoml", "tensorflow-cpu", "keras", "numpy"],
                 "granian": ["granian"], "ray": ["ray", "numpy"],
                 "mlserver": ["mlserver", "uvloop", "numpy"],
                 "pytriton": ["nvidia-pytriton", "numpy"]}
BENTOML_BATCH = {"BENCH_MAX_BATCH_SIZE": "64", "BENCH_MAX_LATENCY_MS": "100", "BENCH_WORKERS": "1"}
# Every batching peer gets the same cap: 64 rows, as many as the most connections measured.
RAY_BATCH = {"BENCH_MAX_BATCH_SIZE": "64", "BENCH_BATCH_WAIT_S": "0.01"}
MLSERVER_BATCH = {"max_batch_size": 64, "max_batch_time": 0.01, "parallel_workers": 1}
PYTRITON_BATCH = {"BENCH_MAX_BATCH_SIZE": "64", "BENCH_MAX_QUEUE_DELAY_US": "10000"}
ECHO_WORKERS = 2
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


def process_cpu_ticks(pid: int) -> int:
    """User plus system CPU a live process has used, in clock ticks (0 once it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0
    return int(fields[11]) + int(fields[12])  # utime, stime: fields 14 and 15 of stat


def server_cpu_seconds(procs: Processes) -> float:
    """CPU seconds used so far by every process of the running server (wrk not included)."""
    pids = {pid for entry in procs.started
            for pid in (entry.process.pid, *descendants(entry.process.pid))}
    return sum(process_cpu_ticks(pid) for pid in pids) / os.sysconf("SC_CLK_TCK")


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

    def start(self, name: str, argv: list[str], env: dict[str, str], cwd: Path,
              stop: Callable[[subprocess.Popen], None] | None = None) -> Started:
        """Start argv in a new session (its own process group), output to logs/<name>.log."""
        self.logs.mkdir(parents=True, exist_ok=True)
        with open(self.logs / f"{name}.log", "ab") as log:
            process = subprocess.Popen(
                argv, env=env, cwd=cwd, stdin=subprocess.DEVNULL, stdout=log,
                stderr=subprocess.STDOUT, start_new_session=True,
            )
        return self.adopt(name, process, stop)

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


def v2_probability(payload) -> float:
    """Pull the first probability out of a V2 (Open Inference) answer."""
    return float(payload["outputs"][0]["data"][0])


def echo_rows(payload) -> float:
    """An echo's answer carries no probability: check its shape and give the row count."""
    if not isinstance(payload, dict) or payload.get("model") != "echo":
        raise BenchError(f"not the echo's answer: {str(payload)[:200]}")
    return float(payload["rows"])


@dataclass(frozen=True)
class Endpoint:
    """What a server is asked (path and body, also wrk's) and how its answer is read."""

    path: str = PATH
    body: bytes = BODY
    read: Callable[[object], float] = first_probability
    echo: bool = False  # answers no probability: the check wants one row counted instead


JSON_API = Endpoint()
ECHO_API = Endpoint(read=echo_rows, echo=True)
V2_API = Endpoint(V2_PATH, V2_BODY, v2_probability)


def check_answer(base: str, reference: float, endpoint: Endpoint = JSON_API,
                 model: str = "") -> float:
    """POST the benchmark body once and check the probability (and model name) is the model's."""
    path = endpoint.path
    status, body = http(base + path, endpoint.body, timeout=60)
    if status != 200:
        raise BenchError(f"{base}{path} answered {status}: {body[:300]!r}")
    answer = json.loads(body)
    if model and answer.get("model") != model:
        raise BenchError(f"{base}{path} answered for model {answer.get('model')!r}, not {model}")
    got = endpoint.read(answer)
    expected = 1.0 if endpoint.echo else reference
    if abs(got - expected) > TOLERANCE:
        what = "rows" if endpoint.echo else "the model says"
        raise BenchError(f"{base}{path} answered {got}, {what} {expected}")
    return got


def settle(base: str, limit: float = 120.0, endpoint: Endpoint = JSON_API) -> float:
    """Wait until one request is answered 200 within 2 s (a backlog drained); return the wait."""
    started = time.monotonic()
    while time.monotonic() - started < limit:
        asked = time.monotonic()
        status, _ = http(base + endpoint.path, endpoint.body, timeout=30)
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
    data: Path = Path()  # the shared test data (seed models)
    broker_url: str = ""  # the last full stack's broker, for the round-trip floor


def launch_modelserve(ctx: Context, inline: bool, web_processes: int = 1,
                      workers: int | None = None, env: dict[str, str] | None = None
                      ) -> tuple[str, str, Started]:
    """Start `modelserve up` (full stack or --inline), with settings `env` on top of the
    home's, wait for /v2/health/ready; return its URL, its command line and the process
    (the root of the stack's process tree)."""
    port = free_port()
    argv = [str(ctx.venv / "bin" / "modelserve"), "up", "--port", str(port),
            "--web-processes", str(web_processes)]
    argv += ["--inline"] if inline else ["--broker-port", str(free_broker_port())]
    argv += ["--workers", str(workers)] if workers else []
    name = f"modelserve-{'inline' if inline else 'up'}-{web_processes}"
    entry = ctx.procs.start(name, argv, {**ctx.env, **(env or {})}, REPO)
    base = f"http://127.0.0.1:{port}"
    wait_ready(base + "/v2/health/ready", entry, ctx.procs, ctx.ready_timeout)
    if not inline:
        ctx.broker_url = stack_broker_url(ctx.env, int(argv[argv.index("--broker-port") + 1]))
    shown = [f"{key}={value}" for key, value in (env or {}).items()]
    return base, " ".join([*shown, "modelserve", *argv[1:]]), entry


def stack_broker_url(env: dict[str, str], port: int) -> str:
    """The URL of the private broker `modelserve up` started (its generated credentials)."""
    home = Path(env["MODELSERVE_HOME"])
    credentials = json.loads((home / "broker" / "credentials.json").read_text())
    return f"amqp://{credentials['user']}:{credentials['password']}@127.0.0.1:{port}//"


def start_modelserve(ctx: Context, inline: bool, web_processes: int = 1,
                     env: dict[str, str] | None = None) -> tuple[str, str]:
    """Start `modelserve up` (full stack or --inline) and wait for /v2/health/ready."""
    base, settings, _ = launch_modelserve(ctx, inline, web_processes, env=env)
    return base, settings


def peer_venv(peer: str) -> Path:
    """Where a peer's venv lives: bench/work/<peer>-venv."""
    return REPO / "bench" / "work" / f"{peer}-venv"


def requirements_stamp(peer: str) -> str:
    """Hash a peer's pinned requirements, to know when its venv must be brought up to date."""
    return hashlib.sha256((PEERS / f"{peer}-requirements.txt").read_bytes()).hexdigest()


def ensure_venv(peer: str) -> Path:
    """Create (or update) bench/work/<peer>-venv from peers/<peer>-requirements.txt."""
    venv = peer_venv(peer)
    stamp = venv / ".requirements-sha256"
    if stamp.is_file() and stamp.read_text().strip() == requirements_stamp(peer):
        return venv
    print(f"building {venv} (a few minutes) ...", flush=True)
    begun = time.monotonic()
    if not (venv / "bin" / "python").exists():
        base_python = getattr(sys, "_base_executable", sys.executable)
        subprocess.run([base_python, "-m", "venv", str(venv)], check=True)
    pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "-q",
           "--disable-pip-version-check"]
    subprocess.run([*pip, "-r", str(PEERS / f"{peer}-requirements.txt")], check=True,
                   timeout=1800)
    stamp.write_text(requirements_stamp(peer) + "\n")
    print(f"built {venv} in {time.monotonic() - begun:.0f} s", flush=True)
    return venv


def start_bentoml(ctx: Context) -> tuple[str, str]:
    """Start BentoML on the same model.keras, adaptive batching on, and wait for /readyz."""
    venv = ensure_venv("bentoml")
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


def start_echo_wsgi(ctx: Context) -> tuple[str, str]:
    """Start the WSGI echo under gunicorn's sync workers (the project's venv)."""
    port = free_port()
    argv = [str(ctx.venv / "bin" / "gunicorn"), "-k", "sync", "-w", str(ECHO_WORKERS),
            "-b", f"127.0.0.1:{port}", "--no-control-socket", "echo_app:wsgi_app"]
    entry = ctx.procs.start("echo-wsgi", argv, ctx.env, PEERS)
    base = f"http://127.0.0.1:{port}"
    wait_ready(base + PATH, entry, ctx.procs, ctx.ready_timeout, body=BODY)
    return base, f"gunicorn -k sync -w {ECHO_WORKERS} echo_app:wsgi_app"


def start_echo_asgi(ctx: Context) -> tuple[str, str]:
    """Start the bare ASGI echo under granian (its own venv)."""
    venv = ensure_venv("granian")
    port = free_port()
    argv = [str(venv / "bin" / "granian"), "--interface", "asgi", "--workers",
            str(ECHO_WORKERS), "--host", "127.0.0.1", "--port", str(port), "--no-ws",
            "--log-level", "warning", "echo_app:asgi_app"]
    entry = ctx.procs.start("echo-asgi", argv, ctx.env, PEERS)
    base = f"http://127.0.0.1:{port}"
    wait_ready(base + PATH, entry, ctx.procs, ctx.ready_timeout, body=BODY)
    return base, f"granian --interface asgi --workers {ECHO_WORKERS} echo_app:asgi_app"


def plan_of(ctx: Context) -> Path:
    """The numpy weights the peers without TensorFlow compute with: model.keras's plan.npz."""
    plan = ctx.model.with_name("plan.npz")
    if not plan.is_file():
        raise BenchError(f"{plan} is missing: the model has no numpy plan for the peers")
    return plan


def peer_env(ctx: Context, **extra: str) -> dict[str, str]:
    """The environment of a peer that imports the modules in peers/ (dense.py)."""
    return dict(ctx.env, PYTHONPATH=str(PEERS), BENCH_PLAN_PATH=str(plan_of(ctx)), **extra)


def start_ray(ctx: Context) -> tuple[str, str]:
    """Start Ray Serve (@serve.batch) on loopback and wait for a real prediction."""
    venv = ensure_venv("ray")
    port = free_port()
    # With this off, Ray takes 127.0.0.1 as the node's address and binds its services there.
    temp = WORK / "ray"
    shutil.rmtree(temp, ignore_errors=True)
    # RAY_AUTH_MODE: no token written to ~/.ray for a cluster that lives for one benchmark.
    env = peer_env(ctx, BENCH_PORT=str(port), BENCH_RAY_TEMP=str(temp),
                   RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER="0", RAY_USAGE_STATS_ENABLED="0",
                   RAY_AUTH_MODE="disabled", **RAY_BATCH)
    entry = ctx.procs.start("ray", [str(venv / "bin" / "python"), "ray_service.py"], env, PEERS)
    base = f"http://127.0.0.1:{port}"
    wait_ready(base + PATH, entry, ctx.procs, ctx.ready_timeout, body=BODY)
    batch = ", ".join(f"{k.removeprefix('BENCH_').lower()}={v}" for k, v in RAY_BATCH.items())
    return base, f"ray_service.py: 1 replica, @serve.batch({batch}), max_ongoing_requests=256"


def write_mlserver_config(ctx: Context, folder: Path, ports: tuple[int, int, int]) -> None:
    """Write settings.json (everything on loopback, no access log) and model-settings.json."""
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    http_port, grpc_port, metrics_port = ports
    settings = {"debug": False, "host": "127.0.0.1", "http_port": http_port,
                "grpc_port": grpc_port, "metrics_port": metrics_port,
                "parallel_workers": MLSERVER_BATCH["parallel_workers"]}
    model = {"name": V2_MODEL, "implementation": "mlserver_runtime.DenseRuntime",
             "max_batch_size": MLSERVER_BATCH["max_batch_size"],
             "max_batch_time": MLSERVER_BATCH["max_batch_time"],
             "parameters": {"uri": str(plan_of(ctx))}}
    (folder / "settings.json").write_text(json.dumps(settings, indent=2))
    (folder / "model-settings.json").write_text(json.dumps(model, indent=2))


def start_mlserver(ctx: Context) -> tuple[str, str]:
    """Start MLServer with the custom runtime, adaptive batching on, and wait for it."""
    venv = ensure_venv("mlserver")
    ports = (free_port(), free_port(), free_port())
    folder = WORK / "mlserver"
    write_mlserver_config(ctx, folder, ports)
    argv = [str(venv / "bin" / "mlserver"), "start", str(folder)]
    entry = ctx.procs.start("mlserver", argv, peer_env(ctx), PEERS)
    base = f"http://127.0.0.1:{ports[0]}"
    wait_ready(base + V2_PATH, entry, ctx.procs, ctx.ready_timeout, body=V2_BODY)
    batch = ", ".join(f"{k}={v}" for k, v in MLSERVER_BATCH.items())
    return base, f"mlserver start, mlserver_runtime.DenseRuntime ({batch})"


def stop_by_sigint(process: subprocess.Popen) -> None:
    """Stop PyTriton as Ctrl-C would, so that it takes tritonserver and its workspace down."""
    signal_quietly(signal.SIGINT, pids=(process.pid,))
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(30)


def start_pytriton(ctx: Context) -> tuple[str, str]:
    """Start Triton through PyTriton (dynamic batching) on loopback and wait for it."""
    venv = ensure_venv("pytriton")
    ports = (free_port(), free_port(), free_port())
    # tritonserver's Python-backend stub must find this Python's libpython, not Debian's.
    python_lib = Path(getattr(sys, "_base_executable", sys.executable)).resolve().parents[1]
    env = peer_env(ctx, BENCH_HTTP_PORT=str(ports[0]), BENCH_GRPC_PORT=str(ports[1]),
                   BENCH_METRICS_PORT=str(ports[2]), BENCH_WORKSPACE=str(WORK / "pytriton"),
                   LD_LIBRARY_PATH=str(python_lib / "lib"), **PYTRITON_BATCH)
    shutil.rmtree(WORK / "pytriton", ignore_errors=True)
    argv = [str(venv / "bin" / "python"), "pytriton_service.py"]
    entry = ctx.procs.start("pytriton", argv, env, PEERS, stop=stop_by_sigint)
    base = f"http://127.0.0.1:{ports[0]}"
    wait_ready(base + V2_PATH, entry, ctx.procs, ctx.ready_timeout, body=V2_BODY)
    batch = ", ".join(f"{k.removeprefix('BENCH_').lower()}={v}"
                      for k, v in PYTRITON_BATCH.items())
    return base, f"pytriton_service.py: @batch, DynamicBatcher ({batch})"


@dataclass(frozen=True)
class Server:
    """One server of the table: its label, how to start it, and what it is asked."""

    label: str
    start: Callable[[Context], tuple[str, str]]
    endpoint: Endpoint = JSON_API


LOG_OFF = {"MODELSERVE_PREDICTION_LOG": "off"}


@dataclass(frozen=True)
class ShadowHome:
    """A copy of the home (a rollout must not reach the other servers) holding the
    development seed beside the live production one, and the commands of its rollout."""

    env: dict[str, str]
    settings: Settings
    candidate: str  # the development seed's version
    modelserve: str

    @classmethod
    def make(cls, ctx: Context) -> ShadowHome:
        """Copy the home and import the development seed into the copy."""
        home = Path(ctx.env["MODELSERVE_HOME"])
        copy = home.with_name("home-shadow")
        shutil.rmtree(copy, ignore_errors=True)
        shutil.copytree(home, copy, symlinks=True,
                        ignore=shutil.ignore_patterns("broker", "log"))
        env = {**ctx.env, "MODELSERVE_HOME": str(copy)}
        modelserve = str(ctx.venv / "bin" / "modelserve")
        seed = ctx.data / "seed-model" / "development"
        run_checked([modelserve, "model", "import-legacy", str(seed / "model.json"),
                     str(seed / "model.h5")], env, "modelserve model import-legacy")
        settings = Settings(home=copy)
        candidate = json.loads((settings.registry_dir / "history.jsonl").read_text()
                               .splitlines()[-1])["version"]
        return cls(env, settings, candidate, modelserve)

    def begin(self) -> str:
        """Let the candidate shadow every request, never decided within the run (the cost
        measured is that of a shadow under way); the command, as shown in the report."""
        name = self.settings.model_name
        run_checked([self.modelserve, "models", "shadow", name, self.candidate,
                     "--policy", "min_requests=1000000000"], self.env, "modelserve models shadow")
        return f"modelserve models shadow {name} {self.candidate}"

    def abort(self) -> str:
        """End the shadow (live stays); the command, as shown in the report."""
        name = self.settings.model_name
        run_checked([self.modelserve, "models", "abort", name], self.env,
                    "modelserve models abort")
        return f"modelserve models abort {name}"

    def answers(self) -> int:
        """How many copies the candidate answered, from the prediction log (written in full
        once the stack stopped): evidence that the shadow cells had their shadow."""
        path = self.settings.prediction_log_file
        if path is None or not path.exists():
            return 0
        traffic = PredictionLog(path).traffic(self.settings.model_name, 0.0)
        return sum(t.requests - t.errors for t in traffic if t.version == self.candidate)


def start_shadowed(ctx: Context) -> tuple[str, str]:
    """The 2-web-process stack while the development seed shadows every request."""
    home = ShadowHome.make(ctx)
    shown = home.begin()
    base, settings, _ = launch_modelserve(replace(ctx, env=home.env), inline=False,
                                          web_processes=2)
    return base, f"{settings} (after: {shown})"


STARTERS: dict[str, Server] = {
    "full": Server("modelserve up (full stack)", lambda ctx: start_modelserve(ctx, inline=False)),
    "full2": Server("modelserve up, 2 web processes",
                    lambda ctx: start_modelserve(ctx, inline=False, web_processes=2)),
    "full2-nolog": Server("modelserve up, 2 web processes, prediction log off",
                          lambda ctx: start_modelserve(ctx, inline=False, web_processes=2,
                                                       env=LOG_OFF)),
    "full2-shadow": Server("modelserve up, 2 web processes, a shadow of every request",
                           start_shadowed),
    "inline": Server("modelserve up --inline (in-process)",
                     lambda ctx: start_modelserve(ctx, inline=True)),
    "inline2": Server("modelserve up --inline, 2 web processes (ceiling)",
                      lambda ctx: start_modelserve(ctx, inline=True, web_processes=2)),
    "echo-wsgi": Server("WSGI JSON echo, gunicorn -w 2 (sync)", start_echo_wsgi, ECHO_API),
    "echo-asgi": Server("ASGI JSON echo, granian 2 workers", start_echo_asgi, ECHO_API),
    "bentoml": Server("BentoML, adaptive batching", start_bentoml),
    "ray": Server("Ray Serve, @serve.batch", start_ray),
    "mlserver": Server("MLServer, adaptive batching (V2)", start_mlserver, V2_API),
    "pytriton": Server("Triton via PyTriton, dynamic batching (V2)", start_pytriton, V2_API),
    "original": Server("original design (Celery rpc://)", start_original),
}


# ---------------------------------------------------------------- wrk


def run_wrk(base: str, connections: int, seconds: int, timeout: float,
            paths: list[str] | None = None, endpoint: Endpoint = JSON_API) -> dict:
    """Run wrk with one thread per connection and return post.lua's WRK_JSON figures; with
    paths, each connection rotates through them (post.lua's second argument); a body other
    than the JSON API's goes as post.lua's third."""
    url = base + (paths[0] if paths else endpoint.path)
    argv = ["wrk", "-t", str(connections), "-c", str(connections), "-d", f"{seconds}s",
            "--timeout", f"{timeout:g}s", "-s", str(POST_LUA), url, "--", f"{timeout:g}"]
    argv += [",".join(paths or [])] if paths or endpoint.body != BODY else []
    argv += [endpoint.body.decode()] if endpoint.body != BODY else []
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


def measure_cell(base: str, connections: int, args: argparse.Namespace,
                 paths: list[str] | None = None, endpoint: Endpoint = JSON_API,
                 procs: Processes | None = None) -> dict:
    """Settle the server, warm it up at this concurrency, settle again, then measure."""
    waited = settle(base, endpoint=endpoint)
    if args.warmup > 0:
        run_wrk(base, connections, args.warmup, args.timeout, paths, endpoint)
        # The warm-up's last requests may leave work queued (the original design keeps
        # running tasks whose callers left): let it drain so the cell starts clean.
        waited += settle(base, endpoint=endpoint)
    cpu_before = server_cpu_seconds(procs) if procs else 0.0
    record = summarize(run_wrk(base, connections, args.duration, args.timeout, paths,
                               endpoint))
    # The server's CPU per answer: steadier than req/s on a machine wrk shares.
    spent = server_cpu_seconds(procs) - cpu_before if procs else 0.0
    record["cpu_ms_per_request"] = 1000 * spent / record["raw"]["ok"] if procs and \
        record["raw"]["ok"] else None
    record["settle_s"] = waited
    return record


def measure_floor(ctx: Context, result: dict) -> None:
    """Beside the full stack's cells: the broker round trip alone, and RabbitMQ's share of it."""
    if ctx.broker_url:
        result["floor"] = floor.measure(ctx.broker_url, ROW)
        print(f"   {floor.describe(result['floor'])}", flush=True)


def bench_server(name: str, ctx: Context, args: argparse.Namespace, reference: float,
                 round_: int = 1) -> dict:
    """Start one server, check its answer, measure every concurrency, stop it."""
    server = STARTERS[name]
    label = server.label + (f", round {round_}" if args.rounds > 1 else "")
    result: dict = {"name": name, "label": label, "round": round_, "cells": {},
                    "path": server.endpoint.path, "body": server.endpoint.body.decode()}
    try:
        print(f"== {label}: starting", flush=True)
        begun = time.monotonic()
        base, settings = server.start(ctx)
        result["startup_s"] = time.monotonic() - begun
        result["settings"] = settings
        result["probability"] = check_answer(base, reference, server.endpoint)
        print(f"   answer checked: {result['probability']}", flush=True)
        for connections in args.connections:
            cell = measure_cell(base, connections, args, endpoint=server.endpoint,
                                procs=ctx.procs)
            result["cells"][connections] = cell
            print(f"   {connections:>3} conns  {format_cell(cell)}", flush=True)
            ctx.procs.check_alive(f"the {connections}-connection cell")
        if name == "full":
            measure_floor(ctx, result)
    except Exception as error:  # noqa: BLE001 (one server failing must not stop the others)
        result["error"] = f"{type(error).__name__}: {error}"
        print(f"   FAILED: {error}", flush=True)
    finally:
        ctx.procs.stop_all()
    return result


AB_OFF, AB_ON = "full2-ab", "full2-ab-shadow"  # the two halves of the toggled stack


def bench_shadow_toggled(ctx: Context, args: argparse.Namespace, reference: float,
                         round_: int = 1) -> list[dict]:
    """One 2-web-process stack measured without and with a shadow of every request, cell by
    cell at each concurrency (the rollout begun and aborted between the two): the same
    processes, seconds apart, so the difference is the shadow's and not the stack's."""
    suffix = f", round {round_}" if args.rounds > 1 else ""
    off: dict = {"name": AB_OFF, "round": round_, "cells": {}, "path": PATH,
                 "body": BODY.decode(),
                 "label": f"modelserve up, 2 web processes, no rollout (toggled){suffix}"}
    on: dict = {**off, "name": AB_ON, "cells": {},
                "label": f"the same stack, a shadow of every request (toggled){suffix}"}
    home: ShadowHome | None = None
    try:
        print(f"== {off['label']}: starting", flush=True)
        begun = time.monotonic()
        home = ShadowHome.make(ctx)
        base, settings, _ = launch_modelserve(replace(ctx, env=home.env), inline=False,
                                              web_processes=2)
        off["startup_s"] = on["startup_s"] = time.monotonic() - begun
        off["probability"] = on["probability"] = check_answer(base, reference)
        for index, connections in enumerate(args.connections):
            # Which half goes first alternates (by round and concurrency): neither gains from
            # a stack still warming up, nor from the machine's drift.
            for half in (off, on) if (round_ + index) % 2 else (on, off):
                if half is on:
                    begin = home.begin()
                # The rollout is re-read every 0.25 s: the cell's settle and warm-up outlast it.
                cell = measure_cell(base, connections, args, procs=ctx.procs)
                half["cells"][connections] = cell
                print(f"   {connections:>3} conns  {format_cell(cell)}  ({half['name']})",
                      flush=True)
                if half is on:
                    abort = home.abort()
            ctx.procs.check_alive(f"the {connections}-connection cells")
        on["settings"] = f"{settings} (before each cell: {begin}; after it: {abort})"
        off["settings"] = settings
    except Exception as error:  # noqa: BLE001 (one server failing must not stop the others)
        off["error"] = on["error"] = f"{type(error).__name__}: {error}"
        print(f"   FAILED: {error}", flush=True)
    finally:
        ctx.procs.stop_all()
    if home is not None and "error" not in on:
        on["shadow_answers"] = home.answers()
    return [off, on]


def bench_named(name: str, ctx: Context, args: argparse.Namespace, reference: float,
                round_: int) -> list[dict]:
    """The results of one name of --only: one server's, or the toggled stack's two halves."""
    if name == AB_OFF:
        return bench_shadow_toggled(ctx, args, reference, round_)
    return [bench_server(name, ctx, args, reference, round_)]


# ---------------------------------------------------------------- many models


def model_names(count: int) -> list[str]:
    """The models of a count-model run: the home's default model, then m01, m02, ..."""
    return [DEFAULTS.model_name] + [f"m{number:02d}" for number in range(1, count)]


def model_paths(names: list[str]) -> list[str]:
    """Each model's JSON predict route."""
    return [MODEL_PATH.format(name=name) for name in names]


def capacity_for(count: int) -> int:
    """The models a worker keeps loaded: the default cap, raised so that all count fit."""
    return max(DEFAULTS.max_loaded_models, count)


def prepare_models_home(venv: Path, seed_home: Path, home: Path, count: int) -> dict[str, str]:
    """Copy the one-model home and serve its checked version under count - 1 more names.

    The version directory is copied into registry/models/<name>/versions/ (catalog.py's
    layout) and activated by the CLI, so that no model pays the ~20 s sandbox check again.
    """
    shutil.rmtree(home, ignore_errors=True)
    shutil.copytree(seed_home, home, symlinks=True)
    registry = home / "registry"
    version = Path(os.readlink(registry / "active")).name
    env = dict(os.environ, MODELSERVE_HOME=str(home), TF_CPP_MIN_LOG_LEVEL="2",
               MODELSERVE_MAX_LOADED_MODELS=str(capacity_for(count)))
    for name in model_names(count)[1:]:
        shutil.copytree(registry / "versions" / version,
                        registry / "models" / name / "versions" / version, symlinks=True)
        run_checked([str(venv / "bin" / "modelserve"), "models", "activate", name, version],
                    env, f"modelserve models activate {name}")
    return env


def read_argv(pid: int) -> list[str]:
    """A process's command line, or nothing when it is gone."""
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")
    except OSError:
        return []


def rss_mib(pid: int) -> float | None:
    """A process's resident set (VmRSS) in MiB, or None when it is gone."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    kib = next((int(line.split()[1]) for line in status.splitlines()
                if line.startswith("VmRSS:")), None)
    return None if kib is None else kib / 1024


def stack_memory(root: int) -> dict:
    """The RSS of a stack's worker processes (`modelserve worker --name wN`) and web processes
    (gunicorn: master and its workers), found among the descendants of `modelserve up`."""
    workers, web = {}, {}
    for pid in descendants(root):
        argv, rss = read_argv(pid), rss_mib(pid)
        if rss is None:
            continue
        if "modelserve" in argv and "worker" in argv:
            name = argv[argv.index("--name") + 1] if "--name" in argv[:-1] else str(pid)
            workers[name] = {"pid": pid, "rss_mib": rss}
        elif any("gunicorn" in part for part in argv):
            web[str(pid)] = {"pid": pid, "rss_mib": rss}
    return {
        "workers": dict(sorted(workers.items())),
        "workers_sum_mib": sum(w["rss_mib"] for w in workers.values()),
        "web_sum_mib": sum(w["rss_mib"] for w in web.values()),
        "web_processes": len(web),
    }


def batch_totals(base: str) -> tuple[float, float] | None:
    """The web process's modelserve_batch_rows sum and count (rows sent, batches sent)."""
    status, body = http(base + "/metrics")
    if status != 200:
        return None
    values = {}
    for line in body.decode(errors="replace").splitlines():
        name, _, value = line.partition(" ")
        if name in ("modelserve_batch_rows_sum", "modelserve_batch_rows_count"):
            values[name] = float(value)
    if len(values) < 2:
        return None
    return values["modelserve_batch_rows_sum"], values["modelserve_batch_rows_count"]


def rows_per_batch(before: tuple[float, float] | None,
                   after: tuple[float, float] | None) -> float | None:
    """The mean rows per batch sent between two readings of batch_totals."""
    if before is None or after is None or after[1] <= before[1]:
        return None
    return (after[0] - before[0]) / (after[1] - before[1])


def bench_models(count: int, ctx: Context, args: argparse.Namespace, reference: float) -> dict:
    """Serve count models from one stack, check each, measure every concurrency spread over
    all of them, read the processes' RSS, stop the stack."""
    names = model_names(count)
    result: dict = {"models": count, "names": names, "cells": {},
                    "max_loaded_models": capacity_for(count), "workers": MODELS_WORKERS}
    try:
        print(f"== {count} model(s): preparing", flush=True)
        env = prepare_models_home(ctx.venv, WORK / "home", WORK / f"home-{count}-models", count)
        begun = time.monotonic()
        base, settings, entry = launch_modelserve(replace(ctx, env=env), inline=False,
                                                  workers=MODELS_WORKERS)
        result["startup_s"] = time.monotonic() - begun
        result["settings"] = f"{settings} (MODELSERVE_MAX_LOADED_MODELS={capacity_for(count)})"
        paths = model_paths(names)
        for name, path in zip(names, paths, strict=True):
            check_answer(base, reference, Endpoint(path), name)
        # Others share this machine: the load around the cells says how much they took.
        result["load_before"] = os.getloadavg()[0]
        for connections in args.connections:
            # One web process batches every request, so its counters are the whole stack's.
            before = batch_totals(base)
            cell = measure_cell(base, connections, args, paths, procs=ctx.procs)
            cell["rows_per_batch"] = rows_per_batch(before, batch_totals(base))
            result["cells"][connections] = cell
            print(f"   {connections:>3} conns  {format_cell(cell)}", flush=True)
            ctx.procs.check_alive(f"the {connections}-connection cell")
        if name == "full":
            measure_floor(ctx, result)
        result["load_after"] = os.getloadavg()[0]
        result["memory"] = stack_memory(entry.process.pid)
        print(f"   workers' RSS {format_memory(result['memory'])}", flush=True)
    except Exception as error:  # noqa: BLE001 (one count failing must not stop the others)
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
            f"p99 {format_ms(cell['p99_ms'])} ms  errors {cell['errors']}  "
            f"CPU {format_cpu(cell)} ms/req")


def format_cpu(cell: dict) -> str:
    """The server's CPU milliseconds per answer, or a dash where it was not measured."""
    spent = cell.get("cpu_ms_per_request")
    return "–" if spent is None else f"{spent:.3f}"


def format_codes(cell: dict) -> str:
    """Show the non-2xx count with its status codes, e.g. `46 (503×46)`."""
    codes = ", ".join(f"{code}×{n}" for code, n in sorted(cell["non_2xx_codes"].items()))
    return f"{cell['non_2xx']:,}" + (f" ({codes})" if codes else "")


def table(results: list[dict], connections: list[int]) -> list[str]:
    """The Markdown table: one row per server and concurrency."""
    lines = [
        "| server | conns | req/s (2xx) | p50 ms | p99 ms | errors | non-2xx | socket | timeouts "
        "| server CPU ms/req |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for result in results:
        if "error" in result and not result["cells"]:
            reason = result["error"].splitlines()[0]
            lines.append(f"| {result['label']} | – | did not run: {reason} | | | | | | | |")
            continue
        for c in connections:
            cell = result["cells"].get(c)
            if cell is None:
                lines.append(f"| {result['label']} | {c} | not measured | | | | | | | |")
                continue
            lines.append(
                f"| {result['label']} | {c} | {cell['rps']:,.1f} | {format_ms(cell['p50_ms'])} "
                f"| {format_ms(cell['p99_ms'])} | {cell['errors']:,} | {format_codes(cell)} "
                f"| {cell['socket']:,} | {cell['timeouts']:,} | {format_cpu(cell)} |"
            )
    return lines


def format_memory(memory: dict) -> str:
    """The workers' RSS on one line, e.g. `w1 240 MiB, w2 238 MiB (sum 478 MiB)`."""
    each = ", ".join(f"{name} {w['rss_mib']:,.0f} MiB" for name, w in memory["workers"].items())
    return f"{each or 'no worker found'} (sum {memory['workers_sum_mib']:,.0f} MiB)"


def ratio(value: float | None, base: float | None) -> str:
    """value / base as `0.93×`, or a dash when either is missing."""
    return f"{value / base:.2f}×" if value is not None and base else "–"


def baseline(results: list[dict]) -> dict | None:
    """The one-model result of this run (the first, if the counts repeat 1), if it ran."""
    return next((r for r in results if r["models"] == 1 and r["cells"]), None)


def models_table(results: list[dict], connections: list[int]) -> list[str]:
    """The Markdown table: one row per model count and concurrency, ratios against one model."""
    one = baseline(results)
    lines = [
        "| models | conns | req/s (2xx) | req/s vs 1 model | p50 ms | p99 ms | p99 vs 1 model "
        "| errors | non-2xx | rows per batch |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for result in results:
        if "error" in result and not result["cells"]:
            reason = result["error"].splitlines()[0]
            lines.append(f"| {result['models']} | – | did not run: {reason} | | | | | | | |")
            continue
        for c in connections:
            cell = result["cells"].get(c)
            if cell is None:
                lines.append(f"| {result['models']} | {c} | not measured | | | | | | | |")
                continue
            base = one["cells"].get(c) if one else None
            per_batch = cell.get("rows_per_batch")
            lines.append(
                f"| {result['models']} | {c} | {cell['rps']:,.1f} "
                f"| {ratio(cell['rps'], base and base['rps'])} | {format_ms(cell['p50_ms'])} "
                f"| {format_ms(cell['p99_ms'])} | {ratio(cell['p99_ms'], base and base['p99_ms'])} "
                f"| {cell['errors']:,} | {format_codes(cell)} "
                f"| {'–' if per_batch is None else f'{per_batch:.1f}'} |"
            )
    return lines


def memory_table(results: list[dict]) -> list[str]:
    """The RSS of the workers (and of the web processes) after each model count's run."""
    lines = ["| models | loaded per worker (cap) | RSS per worker MiB | workers' sum MiB "
             "| web processes' sum MiB |", "|---:|---|---|---:|---:|"]
    for r in results:
        memory = r.get("memory")
        if not memory:
            lines.append(f"| {r['models']} | – | not measured | | |")
            continue
        each = ", ".join(f"{n} {w['rss_mib']:,.1f}" for n, w in memory["workers"].items())
        loaded = min(r["models"], r["max_loaded_models"])
        lines.append(f"| {r['models']} | {loaded} ({r['max_loaded_models']}) | {each} "
                     f"| {memory['workers_sum_mib']:,.0f} | {memory['web_sum_mib']:,.0f} "
                     f"({memory['web_processes']} processes) |")
    return lines


def mean_worker_rss(result: dict) -> float | None:
    """The mean RSS of one worker process after a run, if it was read."""
    workers = (result.get("memory") or {}).get("workers") or {}
    return sum(w["rss_mib"] for w in workers.values()) / len(workers) if workers else None


def models_verdict(results: list[dict], connections: list[int]) -> list[str]:
    """The issue's goal (the most models cost <= 20% throughput against one) and the
    per-model memory cost, in words; a one-model run repeated later is compared too, since
    the difference between the two shows how far the machine drifted meanwhile."""
    ones = [r for r in results if r["models"] == 1 and r["cells"]]
    most = max((r for r in results if r["cells"]), key=lambda r: r["models"], default=None)
    if not ones or most is None or most["models"] == 1:
        return ["Goal not judged: the run needs one model and more than one model measured."]
    lines = []
    for c in connections:
        cell = most["cells"].get(c)
        shares = [cell["rps"] / one["cells"][c]["rps"] for one in ones
                  if cell and one["cells"].get(c) and one["cells"][c]["rps"]]
        if shares:
            verdict = "met" if shares[0] >= 0.8 else "not met"
            again = (f"; {', '.join(f'{x:.0%}' for x in shares[1:])} against the one-model "
                     "run repeated later" if len(shares) > 1 else "")
            lines.append(f"- {c} connection(s): {most['models']} models give {shares[0]:.0%} "
                         f"of the one-model req/s (goal >= 80%: {verdict}){again}.")
    small, large = mean_worker_rss(ones[0]), mean_worker_rss(most)
    if small is not None and large is not None:
        lines.append(f"- Memory: a worker holds {large:,.1f} MiB with {most['models']} models "
                     f"loaded against {small:,.1f} MiB with one: "
                     f"{(large - small) / (most['models'] - 1):,.2f} MiB per extra model.")
    return lines


def models_report(results: list[dict], info: dict, args: argparse.Namespace,
                  model: dict) -> list[str]:
    """The many-models document: throughput by model count, memory, the goal, the method."""
    counts = ", ".join(str(r["models"]) for r in results)
    lines = [f"# Serving benchmark, many models ({counts}), {info['date']}", "",
             *models_table(results, args.connections), "",
             "## Goal: many models cost <= 20% throughput against one", "",
             *models_verdict(results, args.connections), "",
             "## Workers' memory after each run (VmRSS)", "", *memory_table(results), "",
             "## How it was measured", "", *machine_lines(info)]
    lines += [
        f"- Models: for each count N a fresh MODELSERVE_HOME serving N models, `diabetes` (the "
        f"production seed model imported by the CLI, version {model['version']}) and m01, "
        "m02, ...: the same checked version directory copied under each name and activated "
        "with `modelserve models activate`, so every model is the same small numpy plan and "
        "the counts differ only in how many models there are.",
        f"- Stack: `modelserve up` (one web process, {MODELS_WORKERS} workers, its own RabbitMQ "
        "node), started afresh for each N; MODELSERVE_MAX_LOADED_MODELS is the default "
        f"({DEFAULTS.max_loaded_models}) unless N is larger, then N (10 for 10 models), so "
        "every worker keeps every model loaded (workers load the served models at start).",
        f"- Load: `POST /api/v1/models/<name>/predict` `{BODY.decode()}`; each wrk connection "
        "rotates through the N routes request by request (post.lua's second argument), "
        "connection k starting at model k, so every count gets the same load spread evenly. "
        "Before measuring, every model's answer was checked (its name, and the probability "
        f"against `modelserve predict`: {model['probability']:.7f}, within {TOLERANCE:g}).",
        *counting_lines(args),
        "- rows per batch: the mean rows in each message the web process sent to the workers "
        "during the cell (its warm-up and settling included), from the modelserve_batch_rows "
        "histogram of /metrics: a batch holds one model's rows only, so N models split the "
        "same load into smaller batches.",
        "- Memory: VmRSS from /proc/<pid>/status of each `modelserve worker` process (and of "
        "gunicorn's processes), descendants of `modelserve up`, read after the last cell.",
        "- The machine is shared: the load average around each count's cells is in the last "
        "column below (2 cores; wrk and the stack alone make about 2).",
        "",
        "| models | settings | start-up s | settle s per cell | load average (1 min) "
        "before, after |",
        "|---:|---|---:|---|---|",
    ]
    for r in results:
        settles = ", ".join(f"{c['settle_s']:.1f}" for c in r["cells"].values()) or "–"
        startup = f"{r['startup_s']:.1f}" if "startup_s" in r else "–"
        load = (f"{r['load_before']:.1f}, {r['load_after']:.1f}" if "load_after" in r else "–")
        lines.append(f"| {r['models']} | {r.get('settings', '–')} | {startup} | {settles} "
                     f"| {load} |")
    failures = [r for r in results if "error" in r]
    if failures:
        lines += ["", "## Failures", ""]
        for r in failures:
            lines += [f"{r['models']} model(s):", "", "```", r["error"], "```", ""]
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
    ours = ["modelserve", "tensorflow-cpu", "keras", "numpy", "flask", "gunicorn", "uvicorn",
            "aio-pika", "celery"]
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "memory_gib": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "project": package_versions(venv / "bin" / "python", ours),
        "peer_venvs": {peer: package_versions(peer_venv(peer) / "bin" / "python",
                                              PEER_PACKAGES[peer]) for peer in PEER_VENVS},
        "wrk": debian_version("wrk"),
        "rabbitmq": debian_version("rabbitmq-server"),
    }


def machine_lines(info: dict) -> list[str]:
    """The bullets on the machine and the software, shared by both reports."""
    project = ", ".join(f"{k} {v}" for k, v in info["project"].items())
    peers = "; ".join(
        f"{peer} venv: {', '.join(f'{k} {v}' for k, v in versions.items()) or 'not built'}"
        for peer, versions in info["peer_venvs"].items())
    return [
        f"- Machine: {info['cpu']}, {info['cores']} cores, {info['memory_gib']} GiB, "
        f"Linux {info['kernel']}; wrk runs on the same cores as the server.",
        f"- Software: Python {info['python']}; project venv: {project}; {peers}; "
        f"wrk {info['wrk']}; RabbitMQ {info['rabbitmq']}.",
    ]


def counting_lines(args: argparse.Namespace) -> list[str]:
    """The bullets on how wrk measured and what the columns count, shared by both reports."""
    return [
        f"- wrk: one thread per connection, {args.duration} s per cell after a "
        f"{args.warmup} s warm-up at the same concurrency; before the warm-up and "
        "again before the measurement the server is settled (one request must answer within "
        "2 s, so work queued by requests whose clients left drains first).",
        f"- req/s counts 2xx answers within the {args.timeout:g} s timeout. errors = non-2xx "
        "+ socket errors (connect, read, write) + timeouts (answers later than the timeout, "
        "plus requests still unanswered at the end and older than the timeout). p50/p99 are "
        "exact percentiles of the 2xx answers' latencies, timed per connection by post.lua "
        "(wrk's own, with its coordinated-omission correction, are in the .json).",
    ]


def report(results: list[dict], info: dict, args: argparse.Namespace, model: dict) -> list[str]:
    """The whole Markdown document: table, then how it was measured."""
    lines = [f"# Serving benchmark, {info['date']}", "", *table(results, args.connections), ""]
    lines += [
        "## How it was measured",
        "",
        *machine_lines(info),
        f"- Model: the production seed model imported into a fresh MODELSERVE_HOME "
        f"(version {model['version']}); modelserve, BentoML and the original design serve "
        "its model.keras (modelserve through the numpy plan it derives from it); Ray Serve, "
        "MLServer and Triton compute with the same plan.npz's weights in numpy "
        "(peers/dense.py), having no TensorFlow. The request "
        f"`POST {PATH}` `{BODY.decode()}`; every server's answer was checked against "
        f"`modelserve predict` ({model['probability']:.7f}) within {TOLERANCE:g}.",
        f"- MLServer and Triton speak the V2 (Open Inference) protocol: wrk sends them "
        f"`POST {V2_PATH}` `{V2_BODY.decode()}` instead (the same row; post.lua's third "
        "argument), and their check reads outputs[0].data[0].",
        "- The echoes (WSGI under gunicorn's sync workers, bare ASGI under granian) parse the "
        "same JSON body and answer a fixed-shape JSON (the row count, one dummy score per row) "
        "with no model: the HTTP layer's own limit. Their check is that they counted one row.",
        *counting_lines(args),
        *floor_lines(results),
        *cost_lines(results, args.connections, "full2-nolog", "The prediction log's cost (the "
                    "2-web-process stack, log on as by default, against the same stack with "
                    "MODELSERVE_PREDICTION_LOG=off)", 0.10),
        *cost_lines(results, args.connections, "full2-shadow", "A shadow's cost to live (the "
                    "2-web-process stack, against the same stack while a shadow rollout gets a "
                    "copy of every request, scored by the same two workers)", 0.25),
        *cost_lines(results, args.connections, AB_ON, "A shadow's cost to live on one stack "
                    "(the 2-web-process stack measured without and with a shadow of every "
                    "request at each concurrency, which first alternating, the rollout begun "
                    "and aborted between the two cells: the same processes, seconds apart)",
                    0.25, base=AB_OFF),
        *shadow_lines(results),
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


def shadow_lines(results: list[dict]) -> list[str]:
    """Whether the toggled stack's shadow cells had their shadow: copies answered by the
    candidate, beside the answers of those cells (warm-ups and settling answered more)."""
    rounds = [r for r in results if r["name"] == AB_ON and "shadow_answers" in r]
    if not rounds:
        return []
    shown = "; ".join(
        f"{r['shadow_answers']:,} copies answered by the candidate, "
        f"{sum(c['raw']['ok'] for c in r['cells'].values()):,} answers measured"
        for r in rounds)
    return [f"- The toggled stack's shadow cells, per round: {shown}."]


def floor_lines(results: list[dict]) -> list[str]:
    """The broker round trip measured beside the full stack, if it was."""
    found = next((r["floor"] for r in results if "floor" in r), None)
    if found is None:
        return []
    worker, echo = found["worker"], found["echo"]
    return [f"- The broker round trip alone, beside the full stack's cells (bench/serve/"
            f"floor.py: {worker['count']} one-row task messages published one at a time with "
            "confirms to the stack's RabbitMQ, answered by its Celery workers; no HTTP): "
            f"p50 {worker['p50_ms']:.2f} ms, p99 {worker['p99_ms']:.2f} ms. No 1-connection "
            "p50 through the broker can be below it. The same messages answered by a bare kombu "
            "consumer sending each body back (RabbitMQ's two hops, no Celery): "
            f"p50 {echo['p50_ms']:.2f} ms, p99 {echo['p99_ms']:.2f} ms; the difference is the "
            "Celery worker's."]


def cost_lines(results: list[dict], connections: list[int], variant: str, what: str,
               goal: float, base: str = "full2") -> list[str]:
    """What a variant of the 2-web-process stack costs against it (full2, or the toggled
    stack's half without the shadow), per connection count: in throughput and in the server's
    CPU per answer, each round's variant against the same round's base, and the median of the
    rounds judged against the goal. The variant's figures are the ones without the cost
    (full2-nolog) or with it (the shadows)."""
    pairs = cost_pairs(results, variant, base)
    parts = []
    for count in connections:
        cells = [(paying["cells"][count], free["cells"][count]) for paying, free in pairs
                 if count in paying["cells"] and count in free["cells"]]
        costs = [1 - paying["rps"] / free["rps"] for paying, free in cells if free["rps"]]
        if not costs:
            continue
        cpu = [paying["cpu_ms_per_request"] / free["cpu_ms_per_request"] - 1
               for paying, free in cells
               if paying.get("cpu_ms_per_request") and free.get("cpu_ms_per_request")]
        cost = statistics.median(costs)
        shown = ", ".join(f"{c:+.1%}" for c in costs)
        line = (f"{count} conn: throughput cost {cost:+.1%}"
                + (f" (median of {len(costs)} rounds: {shown})" if len(costs) > 1 else
                   f" ({cells[0][0]['rps']:,.0f} vs {cells[0][1]['rps']:,.0f} req/s, p99 "
                   f"{format_ms(cells[0][0]['p99_ms'])} vs {format_ms(cells[0][1]['p99_ms'])}"
                   " ms)")
                + (f", CPU per answer {statistics.median(cpu):+.1%}" if cpu else "")
                + f", goal <= {goal:.0%}: {'met' if cost <= goal else 'not met'}")
        parts.append(line)
    return [f"- {what}: " + "; ".join(parts) + "."] if parts else []


def cost_pairs(results: list[dict], variant: str, base_name: str = "full2"
               ) -> list[tuple[dict, dict]]:
    """Per round that ran both: (the stack that pays the cost, the one that does not)."""
    pairs = []
    for round_ in sorted({r.get("round", 1) for r in results}):
        by_name = {r["name"]: r for r in results if r.get("round", 1) == round_}
        base, other = by_name.get(base_name), by_name.get(variant)
        if base is None or other is None or "error" in base or "error" in other:
            continue
        pairs.append((base, other) if variant.endswith("nolog") else (other, base))
    return pairs


def write_results(lines: list[str], results: list[dict], info: dict, model: dict,
                  stem: str) -> Path:
    """Write the Markdown report and the raw figures under bench/results/."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{stem}.md"
    path.write_text("\n".join(lines) + "\n")
    path.with_suffix(".json").write_text(
        json.dumps({"machine": info, "model": model, "results": results}, indent=2,
                   default=str) + "\n"
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
    parser.add_argument("--many-models", metavar="COUNTS",
                        help="instead of the servers: the full stack serving each count of "
                             "models, load spread over them, e.g. 1,3,10")
    parser.add_argument("--rounds", type=int, default=1,
                        help="run the servers this many times, interleaved; the costs are "
                             "the medians of the rounds")
    parser.add_argument("--tag", default="", help="suffix for the results' file names, e.g. run2")
    args = parser.parse_args()
    args.connections = [int(c) for c in args.connections.split(",") if c.strip()]
    if not args.connections or min(args.connections) < 1 or args.duration < 1:
        parser.error("--connections needs positive integers and --duration at least 1")
    if args.rounds < 1 or (args.rounds > 1 and args.many_models):
        parser.error("--rounds needs a positive count, and does not go with --many-models")
    if args.many_models and args.only:
        parser.error("--many-models runs the full stack only: leave --only out")
    args.counts = [int(c) for c in (args.many_models or "").split(",") if c.strip()]
    if args.many_models and (not args.counts or not 1 <= min(args.counts) <= max(args.counts)
                             <= 48):
        parser.error("--many-models needs counts from 1 to 48, e.g. 1,3,10")
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
            ctx = Context(args.venv, env, model, procs, args.ready_timeout, args.data)
            if args.counts:
                results = [bench_models(count, ctx, args, probability) for count in args.counts]
            else:
                # Rounds interleave the servers, so that a slow spell of the machine falls
                # on all of them alike rather than on one.
                results = [result for round_ in range(1, args.rounds + 1)
                           for name in args.names
                           for result in bench_named(name, ctx, args, probability, round_)]
    except KeyboardInterrupt:
        sys.exit("interrupted: every process started was stopped; nothing written")
    info = machine(args.venv) | {"date": datetime.now(UTC).strftime("%Y-%m-%d")}
    model_facts = {"version": version, "probability": probability}
    parts = ["serve-models" if args.counts else "serve", info["date"],
             args.only and args.only.replace(",", "-"), args.tag]
    stem = "-".join(part for part in parts if part)
    if args.counts:
        lines, shown = models_report(results, info, args, model_facts), models_table
    else:
        lines, shown = report(results, info, args, model_facts), table
    path = write_results(lines, results, info, model_facts, stem)
    print("\n".join(shown(results, args.connections)))
    print(f"results written to {path}")


if __name__ == "__main__":
    main()
