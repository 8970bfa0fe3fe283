"""`modelserve up`: a broker, N workers and the web app on one machine, supervised."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path

from kombu import Connection

from modelserve.config import Settings
from modelserve.errors import UserError
from modelserve.registry.catalog import Catalog
from modelserve.stack.children import Child, modelserve_argv, stop_all
from modelserve.stack.ports import ensure_port_free, wait_for_port
from modelserve.stack.rabbitmq import BrokerNode
from modelserve.tls import ServerTLS, client_context
from modelserve.worker.app import broker_connection

Say = Callable[[str], None]
BROKER_START_SECONDS = 60
READY_SECONDS = 60
WORKER_RESTART_LIMIT = 20  # a worker that keeps dying is a fault to report, not to hide
BROKER_RESTART_LIMIT = 5


class StackError(UserError):
    """A part of the stack cannot start or has died."""


@dataclass(frozen=True)
class StackOptions:
    """How `modelserve up` lays out the stack."""

    host: str = "127.0.0.1"
    port: int = 5100
    workers: int = os.cpu_count() or 1
    web_processes: int = 1
    web_threads: int = 64
    broker_port: int = 5673
    inline: bool = False
    tls: ServerTLS | None = None  # HTTPS with this certificate and key


class Stack:
    """Start, watch and stop the processes of one serving stack."""

    def __init__(self, settings: Settings, options: StackOptions, say: Say):
        self.settings = settings
        self.options = options
        self.say = say
        self.broker: BrokerNode | None = None
        self.broker_process: subprocess.Popen | None = None
        self.workers: list[Child] = []
        self.web: Child | None = None
        self.broker_restarts = 0

    # -- start ------------------------------------------------------------------------------

    def start(self) -> None:
        """Start every part, or stop what started and say why."""
        ensure_port_free(self.options.port, "the web app, see --port", self.options.host)
        try:
            if not self.options.inline:
                self._start_broker()
                self._start_workers()
            self._start_web()
        except BaseException:
            self.stop()
            raise

    def _start_broker(self) -> None:
        """Use MODELSERVE_BROKER_URL if set, else start a private node."""
        if self.settings.broker_url:
            check_broker(self.settings)
            self.say(f"broker: {redact(self.settings.broker_url)} (external)")
            return
        broker = BrokerNode(self.settings.home / "broker", self.options.broker_port)
        self.broker = broker
        self.say(f"broker: starting a private RabbitMQ node on 127.0.0.1:{broker.port}")
        self._launch_broker(broker)
        self.settings = replace(self.settings, broker_url=broker.url())

    def _environment(self) -> dict[str, str]:
        """What the children need to find the registry and the broker."""
        return dict(os.environ, MODELSERVE_HOME=str(self.settings.home.resolve()),
                    MODELSERVE_BROKER_URL=self.settings.broker_url,
                    MODELSERVE_AUTH=self.settings.auth)  # resolved from --host by `up`

    def _start_workers(self) -> None:
        """Start the Celery workers, one process each: N for the shared queue, and one more
        for each model with a queue of its own (MODELSERVE_OWN_QUEUES)."""
        for number in range(1, self.options.workers + 1):
            self._start_worker(f"worker {number}", "--name", f"w{number}")
        own = sorted(self.settings.own_queue_models)
        for model in own:
            self._start_worker(f"worker for {model}", "--name", f"w-{model}", "--models", model)
        extra = f", and 1 for each of {', '.join(own)} (own queues)" if own else ""
        self.say(f"workers: {self.options.workers} started{extra}")

    def _start_worker(self, role: str, *args: str) -> None:
        """Start one worker process under supervision."""
        child = Child(role, modelserve_argv("worker", *args), self._environment())
        child.start()
        self.workers.append(child)

    def _start_web(self) -> None:
        """Start the web app under gunicorn and wait until it accepts connections."""
        o = self.options
        argv = gunicorn_argv(o.host, o.port, o.web_processes, o.web_threads, o.inline, o.tls)
        self.web = Child("web", argv, self._environment())
        self.web.start()
        wait_for_port(o.port, READY_SECONDS, self.web.process, "the web app", _probe_host(o.host))

    def wait_until_ready(self) -> dict:
        """Poll the readiness endpoint; return the last status seen."""
        status: dict = {}
        deadline = time.monotonic() + READY_SECONDS
        while time.monotonic() < deadline:
            status = self.readiness()
            if status.get("ready") or not (status.get("models") or status.get("active_version")):
                return status
            self.check_children()
            time.sleep(0.2)
        return status

    def readiness(self) -> dict:
        """The web app's /v2/health/ready answer, whatever its status code."""
        url = f"{self.base_url()}/v2/health/ready"
        # Over TLS the probe trusts exactly the certificate we serve (pinned): whatever names
        # it holds, only this server has its key. It need not name the loopback address.
        context = client_context(self.options.tls.cert, check_hostname=False) \
            if self.options.tls else None
        try:
            with urllib.request.urlopen(url, timeout=5,  # noqa: S310 (our URL)
                                        context=context) as response:
                return json.load(response)
        except urllib.error.HTTPError as error:
            return json.load(error)
        except OSError as error:
            return {"ready": False, "error": str(error)}

    def base_url(self) -> str:
        """Where the pages are, as a browser on this machine reaches them."""
        scheme = "https" if self.options.tls else "http"
        return f"{scheme}://{_probe_host(self.options.host)}:{self.options.port}"

    # -- supervise --------------------------------------------------------------------------

    def check_children(self) -> None:
        """Restart dead workers; a dead broker or web app ends the stack."""
        broker, process = self.broker, self.broker_process
        if broker is not None and process is not None and process.poll() is not None:
            self._restart_broker(broker, process)
        if self.web is not None and self.web.exited() is not None:
            raise StackError(f"the web app exited (code {self.web.exited()})")
        for worker in self.workers:
            code = worker.exited()
            if code is None:
                continue
            if worker.restarts >= WORKER_RESTART_LIMIT:
                raise StackError(f"{worker.name} keeps exiting (code {code}); giving up")
            worker.restarts += 1
            self.say(f"{worker.name} exited (code {code}); restarting it")
            worker.start()

    def _restart_broker(self, broker: BrokerNode, process: subprocess.Popen) -> None:
        """Bring a dead private broker back; web and workers reconnect by themselves."""
        reason = broker.stop_reason()
        if self.broker_restarts >= BROKER_RESTART_LIMIT:
            raise StackError(f"the broker keeps stopping ({reason}); see {broker.console_log}")
        self.broker_restarts += 1
        self.say(f"the broker stopped ({reason}); restarting it")
        broker.stop(process)  # its epmd too, so that the ports are free
        self._launch_broker(broker)

    def _launch_broker(self, broker: BrokerNode) -> None:
        """Start the private node and wait until it accepts connections."""
        self.broker_process = broker.start()
        broker.wait_until_listening(self.broker_process, BROKER_START_SECONDS)

    def supervise(self, poll_seconds: float = 0.5) -> None:
        """Watch the children until interrupted or until a vital part dies."""
        while True:
            self.check_children()
            time.sleep(poll_seconds)

    # -- stop -------------------------------------------------------------------------------

    def stop(self) -> None:
        """Stop the web app first (no new work), then the workers, then the broker."""
        if self.web is not None:
            stop_all([self.web])
        stop_all(self.workers)
        if self.broker is not None and self.broker_process is not None:
            self.broker.stop(self.broker_process)
            self.broker_process = None


def gunicorn_argv(host: str, port: int, processes: int, threads: int,
                  inline: bool = False, tls: ServerTLS | None = None) -> list[str]:
    """The command line serving the web app: gunicorn managing uvicorn event-loop workers
    (the hot path on the loop; the pages in `threads` threads per process)."""
    # gunicorn hands its TLS options to the worker (TLS 1.2+, Python's default server
    # ciphers); a plain-HTTP client on that port fails the handshake and gets no answer.
    https = ["--certfile", str(tls.cert), "--keyfile", str(tls.key)] if tls else []
    return [sys.executable, "-m", "gunicorn", "--bind", f"{host}:{port}",
            "--worker-class", "modelserve.web.serve.Worker", "--workers", str(processes),
            "--graceful-timeout", "5", "--timeout", "60",
            "--keep-alive", "5", "--log-level", "warning", "--error-logfile", "-", *https,
            f"modelserve.web.asgi:create_asgi_app(inline={inline}, threads={threads})"]


def check_broker(settings: Settings, timeout: float = 3.0) -> None:
    """Refuse an external broker that does not answer (over TLS for amqps://), in one line."""
    url = settings.broker_url
    try:
        with broker_connection(settings, connect_timeout=timeout) as connection:
            connection.ensure_connection(max_retries=1, timeout=timeout)
    except UserError:  # the TLS settings themselves are wrong: their own line says so
        raise
    except Exception as error:  # kombu and amqp raise many kinds for one meaning
        raise StackError(f"the broker at {redact(url)} does not answer: {error}") from None


def redact(url: str) -> str:
    """The URL without its password."""
    return Connection(url).as_uri()


def _probe_host(host: str) -> str:
    """The address to reach a server bound to `host` from this machine."""
    return "127.0.0.1" if host in ("0.0.0.0", "") else host  # noqa: S104 (comparison only)


def registry_hint(registry_dir: Path) -> str | None:
    """Say how to get a model when no model has an active version."""
    if Catalog(registry_dir).served():
        return None
    return ("no model is active yet; in another terminal run `modelserve train --activate`, or "
            "`modelserve model import-legacy model.json model.h5 --activate`; "
            "the stack picks it up without a restart")


@contextmanager
def interrupts_stop_the_stack() -> Iterator[None]:
    """SIGINT and SIGTERM stop the stack; while it stops, further signals are ignored."""
    stop_signals = (signal.SIGINT, signal.SIGTERM)

    def interrupt(_signum, _frame):
        raise KeyboardInterrupt

    # SIGINT too: a shell that starts us in the background hands us SIGINT ignored.
    for sig in stop_signals:
        signal.signal(sig, interrupt)
    try:
        yield
    except KeyboardInterrupt:
        pass
    finally:
        # A second Ctrl-C during the stop must not leave half the stack running.
        for sig in stop_signals:
            signal.signal(sig, signal.SIG_IGN)


def restore_default_signals() -> None:
    """Let signals act normally again once everything has stopped."""
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
