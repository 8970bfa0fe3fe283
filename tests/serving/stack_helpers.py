"""Start and drive a real serving stack (`modelserve up`) in a subprocess, for tests."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from email.message import Message
from http.client import HTTPException
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from modelserve.stack.rabbitmq import free_broker_port

STARTUP_SECONDS = 90
ROW = [6, 148, 72, 35, 0, 33.6, 0.627, 50]  # the dataset's first patient


def free_port() -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@dataclass
class Response:
    """What a test needs of an HTTP answer."""

    status: int
    headers: Message  # names are case-insensitive: servers may send them in lower case
    body: bytes

    def json(self):
        """The body decoded as JSON."""
        return json.loads(self.body)


def http(method: str, url: str, body: bytes | None = None, content_type: str | None = None,
         timeout: float = 15.0, headers: dict[str, str] | None = None) -> Response:
    """One HTTP request; any status is a Response, never an exception."""
    request = urllib.request.Request(url, data=body, method=method,  # noqa: S310
                                     headers=headers or {})
    if content_type:
        request.add_header("Content-Type", content_type)
    try:
        with urllib.request.urlopen(request, timeout=timeout) as answer:  # noqa: S310
            return Response(answer.status, answer.headers, answer.read())
    except urllib.error.HTTPError as error:
        return Response(error.code, error.headers, error.read())


@contextmanager
def http_server(handler: type[BaseHTTPRequestHandler] | Callable,
                address: str = "127.0.0.1") -> Iterator[str]:
    """Run an HTTP server on address (a free port) while in the block; yield its base URL."""
    server = ThreadingHTTPServer((address, 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://{address}:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def post_json(url: str, payload, timeout: float = 15.0,
              headers: dict[str, str] | None = None) -> Response:
    """POST a JSON document (with extra headers, e.g. a token's Authorization)."""
    return http("POST", url, json.dumps(payload).encode(), "application/json", timeout, headers)


def wait_until_answering(url: str, timeout: float) -> None:
    """Poll predictions until one succeeds."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = post_json(f"{url}/api/v1/predict", {"rows": [ROW]})
        if last.status == 200:
            return
        time.sleep(0.5)
    raise AssertionError(f"no recovery: {last.status} {last.body!r}")


@dataclass
class RunningStack:
    """A `modelserve up` process and how to reach it."""

    home: Path
    port: int
    broker_port: int
    process: subprocess.Popen
    log_path: Path
    env: dict[str, str] = field(repr=False)
    address: str = "127.0.0.1"

    @property
    def url(self) -> str:
        """The web app's base URL."""
        return f"http://{self.address}:{self.port}"

    def log(self) -> str:
        """Everything the stack printed so far."""
        return self.log_path.read_text(errors="replace")

    def children(self) -> list[int]:
        """PIDs of every process started by the stack (its process tree)."""
        return _descendants(self.process.pid)

    def worker_pids(self) -> list[int]:
        """PIDs of the Celery worker processes."""
        return [pid for pid in self.children() if b"modelserve\x00worker" in cmdline(pid)]

    def wait_ready(self, timeout: float = STARTUP_SECONDS, workers: int = 1) -> dict:
        """Wait until readiness reports the given number of workers."""
        deadline = time.monotonic() + timeout
        status: dict = {}
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(f"modelserve up exited early:\n{self.log()}")
            try:
                answer = http("GET", f"{self.url}/v2/health/ready", timeout=3)
                status = answer.json()
                if answer.status == 200 and status.get("workers", 0) >= workers:
                    return status
            except (OSError, ValueError):
                pass
            time.sleep(0.2)
        raise AssertionError(f"stack not ready: {status}\n{self.log()}")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 60) -> int:
        """Stop `modelserve up` the way a user does and return its exit code."""
        if self.process.poll() is None:
            self.process.send_signal(sig)
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            raise AssertionError(f"modelserve up did not stop:\n{self.log()}") from None


def start_stack(home: Path, *args: str, env: dict[str, str] | None = None,
                prefix: tuple[str, ...] = (), address: str = "127.0.0.1") -> RunningStack:
    """Start `modelserve up` on free ports with its own MODELSERVE_HOME.

    prefix runs it elsewhere (`ip netns exec NAME`); address is where tests then reach it.
    """
    port, broker_port = free_port(), free_broker_port()
    full_env = dict(os.environ, MODELSERVE_HOME=str(home), **(env or {}))
    log_path = home.parent / f"up-{port}.log"
    with open(log_path, "wb") as log:
        process = subprocess.Popen(  # noqa: S603
            [*prefix, sys.executable, "-m", "modelserve", "up", "--port", str(port),
             "--broker-port", str(broker_port), *args],
            env=full_env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )
    return RunningStack(home, port, broker_port, process, log_path, full_env, address)


@contextmanager
def running_stack(home: Path, *args: str, workers: int,
                  env: dict[str, str] | None = None) -> Iterator[RunningStack]:
    """A stack with `workers` workers, ready (every worker consuming) while the block runs,
    stopped after it."""
    running = start_stack(home, "--workers", str(workers), *args, env=env)
    try:
        running.wait_ready(workers=workers)
        yield running
    finally:
        running.stop()


def _descendants(pid: int) -> list[int]:
    """Every process below pid, found through /proc."""
    parents: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        ppid = parent_pid(int(entry.name))
        if ppid:
            parents.setdefault(ppid, []).append(int(entry.name))
    found, todo = [], [pid]
    while todo:
        children = parents.get(todo.pop(), [])
        found.extend(children)
        todo.extend(children)
    return found


def parent_pid(pid: int) -> int:
    """A process's parent PID (0 once it is gone)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0
    return int(stat.rsplit(")", 1)[1].split()[1])


def cmdline(pid: int) -> bytes:
    """A process's command line, NUL separated ('' once it is gone)."""
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""


def alive(pid: int) -> bool:
    """Tell whether a process exists (and is not a zombie)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


# What a load's answers must say for ROW: one probability, or one per model version.
Expected = float | Callable[[str], float]
HUNG, LOST = -1, 0  # Answer.status of a request with no answer by its timeout / no answer at all


@dataclass
class Answer:
    """One request of a load: its status (or HUNG, LOST), what it said, and how long it took."""

    status: int
    body: dict | str
    seconds: float = 0.0
    started: float = 0.0  # time.monotonic() when it was sent
    headers: dict[str, str] = field(default_factory=dict, repr=False)
    asked: object = None  # what the load's request function said this request was

    @property
    def ended(self) -> float:
        """time.monotonic() when its answer (or failure) came."""
        return self.started + self.seconds


# A load's request for thread `number`: URL path, JSON body, and a tag kept with its answer.
Asking = Callable[[int], tuple[str, dict, object]]


def _one_row(_number: int) -> tuple[str, dict, object]:
    """The default request: ROW to the default model."""
    return "/api/v1/predict", {"rows": [ROW]}, None


class BoundedLoad:
    """Predictions from a few threads until stopped, or at most `seconds` or `limit` requests."""

    def __init__(self, url: str, threads: int = 4, seconds: float = 60, limit: int = 20_000,
                 request_timeout: float = 30, headers: dict[str, str] | None = None,
                 request: Asking | None = None):
        self.url, self.seconds, self.limit = url, seconds, limit
        self.request_timeout = request_timeout
        self.headers = headers or {}  # e.g. the Authorization of a stack that requires it
        self.request = request or _one_row
        self.answers: list[Answer] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, args=(number,))
                         for number in range(threads)]

    def _run(self, number: int) -> None:
        """Send predictions until told to stop or a bound is reached."""
        deadline = time.monotonic() + self.seconds
        while not self._stop.is_set() and time.monotonic() < deadline:
            answer = self._one(*self.request(number))
            with self._lock:
                self.answers.append(answer)
                if len(self.answers) >= self.limit:
                    self._stop.set()

    def _one(self, path: str, body: dict, asked: object) -> Answer:
        """One prediction; a timeout is HUNG, a connection that dies without an answer LOST."""
        started = time.monotonic()
        try:
            response = post_json(f"{self.url}{path}", body, timeout=self.request_timeout,
                                 headers=self.headers)
        except TimeoutError as error:
            return Answer(HUNG, repr(error), time.monotonic() - started, started, asked=asked)
        except (OSError, HTTPException) as error:
            # Refused, reset, or closed before the status line or in the middle of the body.
            return Answer(LOST, repr(error), time.monotonic() - started, started, asked=asked)
        try:
            answer = response.json()
        except ValueError:
            answer = response.body[:200].decode(errors="replace")
        return Answer(response.status, answer, time.monotonic() - started, started,
                      response.headers, asked)

    def __enter__(self) -> BoundedLoad:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(60)

    def wait_until_done(self, timeout: float) -> bool:
        """Wait until a bound (count or time) stopped the load; True if it did within timeout."""
        return self._stop.wait(timeout)

    def snapshot(self) -> list[Answer]:
        """The answers so far (a copy, safe to read while the load runs)."""
        with self._lock:
            return list(self.answers)

    def wrong(self, probability: Expected, tolerance: float = 1e-4) -> list[Answer]:
        """Answers that are not a 200 with this probability."""
        return [a for a in self.answers
                if a.status != 200 or self.wrong_answer(a, probability, tolerance)]

    def tally(self, probability: Expected, tolerance: float = 1e-4) -> dict[str, int]:
        """Counts for a report: sent, answered correctly, wrong, refused (by status), lost, hung."""
        counts = {"sent": len(self.answers), "correct": 0, "wrong": 0, "lost": 0, "hung": 0}
        for answer in self.answers:
            if answer.status == HUNG:
                counts["hung"] += 1
            elif answer.status == LOST:
                counts["lost"] += 1
            elif answer.status != 200:
                key = f"status {answer.status}"
                counts[key] = counts.get(key, 0) + 1
            elif self.wrong_answer(answer, probability, tolerance):
                counts["wrong"] += 1
            else:
                counts["correct"] += 1
        return counts

    @staticmethod
    def wrong_answer(answer: Answer, probability: Expected, tolerance: float = 1e-4) -> bool:
        """Tell whether a 200 carries another probability than the expected one."""
        if not isinstance(answer.body, dict):
            return True
        if callable(probability):  # one per version: the answer names the one that computed it
            probability = probability(answer.body["model_version"])
        return abs(answer.body["probabilities"][0] - probability) > tolerance
