"""A broker with a TLS listener on this machine and a worker host in a network namespace.

The broker (the stack's own BrokerNode, given a TlsListener) listens with TLS on the root
namespace's end of a veth pair and plainly on loopback only, as the Ansible rabbitmq role sets
up production; the worker host is a NetnsHost (tests/delivery/hosts.py) that reaches it over
the veth. The CA and certificates are made as the role makes them (pki.py), and the worker
host's account gets the role's own permissions (read from its defaults).
"""

from __future__ import annotations

import json
import os
import re
import secrets
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import jinja2
import pytest
import yaml
from cli_helpers import run_cli
from delivery.hosts import NetnsHost
from serving.conftest import prepare_home, version_of_seed
from serving.stack_helpers import free_port, http
from tiers import needs

from broker.pki import REPO, Authority, Identity, client_identity, make_authority, server_identity
from modelserve.config import Settings
from modelserve.stack.rabbitmq import BrokerNode, TlsListener, free_broker_port

CTL = "/usr/lib/rabbitmq/bin/rabbitmqctl"  # not /usr/sbin's wrapper: it would become rabbitmq
ANSIBLE = REPO / "deploy" / "ansible"
HANDSHAKE = Path(__file__).with_name("handshake.py")
WORKER_ACCOUNT = "worker-worker1"  # what modelserve_worker_broker_user makes of "worker1"
READY_SECONDS = 90


def role_permissions() -> tuple[str, str, str]:
    """The configure, write and read expressions the rabbitmq role grants a worker host."""
    role = ANSIBLE / "roles" / "rabbitmq"
    defaults = yaml.safe_load((role / "defaults" / "main.yml").read_text())
    shared = yaml.safe_load((ANSIBLE / "group_vars" / "all.yml").read_text())
    env = jinja2.Environment(undefined=jinja2.StrictUndefined, autoescape=False)  # noqa: S701
    env.filters["regex_escape"] = re.escape  # what Ansible's filter is
    values = {name: shared[name] for name in ("modelserve_broker_queue", "modelserve_own_queues")}
    values["rabbitmq_worker_queue_pattern"] = env.from_string(
        defaults["rabbitmq_worker_queue_pattern"]).render(values)
    return tuple(env.from_string(defaults[f"rabbitmq_worker_{kind}"]).render(values)
                 for kind in ("configure", "write", "read"))


@dataclass
class TlsBroker:
    """The running node, the worker host, and the identities made for them."""

    node: BrokerNode
    process: subprocess.Popen
    host: NetnsHost
    authority: Authority
    worker: Identity
    web: Identity
    password: str  # the worker host's account's
    folder: Path

    @property
    def tls(self) -> TlsListener:
        """The node's TLS listener."""
        assert self.node.tls is not None
        return self.node.tls

    def ctl(self, *args: str, stdin: str | None = None) -> str:
        """Run rabbitmqctl against the node; return its output."""
        done = subprocess.run([CTL, "-q", "-n", self.node.nodename, *args], input=stdin,
                              env=self.node.environment(), capture_output=True, text=True,
                              timeout=60, check=False)
        assert done.returncode == 0, done.stderr
        return done.stdout

    def url(self, user: str, password: str, vhost: str = "/") -> str:
        """The amqps:// URL of the TLS listener for an account."""
        return (f"amqps://{quote(user, safe='')}:{quote(password, safe='')}@"
                f"{self.tls.address}:{self.tls.port}/{quote(vhost, safe='')}")

    def admin_url(self) -> str:
        """The node's own account over TLS (what the web app uses here)."""
        return self.url("modelserve", self.node.credentials()["password"])

    def worker_env(self, identity: Identity | None, home: Path) -> dict[str, str]:
        """The environment a worker host's service gets from the worker role."""
        env = dict(os.environ, MODELSERVE_HOME=str(home),
                   MODELSERVE_BROKER_URL=self.url(WORKER_ACCOUNT, self.password),
                   MODELSERVE_BROKER_CA=str(self.authority.cert))
        if identity is not None:
            env.update(MODELSERVE_BROKER_CERT=str(identity.cert),
                       MODELSERVE_BROKER_KEY=str(identity.key))
        return env

    def handshakes(self, cases: list[dict]) -> list[str]:
        """Run handshake.py inside the worker host; the outcome of each case."""
        done = self.host.exec(sys.executable, HANDSHAKE, json.dumps(cases))
        return json.loads(done.stdout)

    def connections(self) -> list[dict]:
        """The broker's client connections: account, TLS or not, protocol, peer address."""
        listed = self.ctl("list_connections", "user", "ssl", "ssl_protocol", "peer_host",
                          "--no-table-headers")
        keys = ("user", "ssl", "protocol", "peer")
        return [dict(zip(keys, line.split("\t"), strict=True))
                for line in listed.splitlines() if line.strip()]


@pytest.fixture(scope="module")
@needs("RabbitMQ and a network namespace (root)")
def tls_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TlsBroker]:
    """A node with a TLS listener facing a worker host, and that host's own account."""
    folder = tmp_path_factory.mktemp("tls-broker")
    with NetnsHost() as host:
        authority = make_authority(folder / "ca")
        server = server_identity(authority, folder / "server",
                                 ["localhost", "127.0.0.1", host.host_address])
        tls = TlsListener(host.host_address, free_broker_port(), authority.cert, server.cert,
                          server.key)
        node = BrokerNode(folder / "node", free_broker_port(), tls)
        process = node.start()
        try:
            node.wait_until_listening(process, 60)
            broker = TlsBroker(node, process, host, authority,
                               client_identity(authority, folder / "worker1", WORKER_ACCOUNT),
                               client_identity(authority, folder / "web", "web"),
                               secrets.token_urlsafe(24), folder)
            _wait_for_tls_port(broker)
            _add_worker_account(broker)
            yield broker
        finally:
            node.stop(process)


def _wait_for_tls_port(broker: TlsBroker, timeout: float = 30) -> None:
    """The TLS listener opens a moment after the plain one."""
    deadline = time.monotonic() + timeout
    case = {"address": broker.tls.address, "port": broker.tls.port}
    while broker.handshakes([case]) != ["ok"]:
        assert time.monotonic() < deadline, "the TLS listener did not open"
        time.sleep(0.3)


def _add_worker_account(broker: TlsBroker) -> None:
    """Add the worker host's account as the role does: password on stdin, its permissions."""
    broker.ctl("add_user", WORKER_ACCOUNT, stdin=broker.password)
    broker.ctl("set_permissions", "-p", "/", WORKER_ACCOUNT, *role_permissions())


@pytest.fixture(scope="module")
@needs("root (the model sandbox checks the seed model it registers)")
def model_home(tmp_path_factory: pytest.TempPathFactory, shared_data: Path,
               pima_csv: Path) -> Path:
    """A home with the production seed model active (the worker host's copy of production's)."""
    home = tmp_path_factory.mktemp("worker-host") / "home"
    prepare_home(home, shared_data, pima_csv)
    result = run_cli("models", "activate", version_of_seed(home, "production"), home=home)
    assert result.returncode == 0, result.stderr
    return home


@dataclass
class Service:
    """A process of ours and its log file."""

    process: subprocess.Popen
    log_path: Path

    def log(self) -> str:
        """What it printed so far."""
        return self.log_path.read_text(errors="replace")

    def stop(self) -> None:
        """SIGTERM its process group, SIGKILL it if it lingers."""
        if self.process.poll() is None:
            os.killpg(self.process.pid, 15)
        try:
            self.process.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, 9)
            self.process.wait()


def start_service(argv: list[str], env: dict[str, str], log_path: Path) -> Service:
    """Start a command in its own session, its output to a log file."""
    with open(log_path, "wb") as log:
        process = subprocess.Popen(argv, env=env, stdout=log, stderr=subprocess.STDOUT,  # noqa: S603
                                   start_new_session=True)
    return Service(process, log_path)


def start_worker(broker: TlsBroker, home: Path, identity: Identity | None, name: str) -> Service:
    """A real `modelserve worker` on the worker host, over amqps as its own account."""
    argv = ["ip", "netns", "exec", broker.host.name, sys.executable, "-m", "modelserve",
            "worker", "--name", name, "--loglevel", "INFO"]
    return start_service(argv, broker.worker_env(identity, home),
                         broker.folder / f"worker-{name}.log")


def start_web(broker: TlsBroker, home: Path) -> tuple[Service, str]:
    """A real `modelserve web` on this machine, over amqps too; its service and base URL."""
    port = free_port()
    env = dict(os.environ, MODELSERVE_HOME=str(home), MODELSERVE_BROKER_URL=broker.admin_url(),
               MODELSERVE_BROKER_CA=str(broker.authority.cert),
               MODELSERVE_BROKER_CERT=str(broker.web.cert),
               MODELSERVE_BROKER_KEY=str(broker.web.key))
    argv = [sys.executable, "-m", "modelserve", "web", "--host", "127.0.0.1", "--port", str(port)]
    return start_service(argv, env, broker.folder / "web.log"), f"http://127.0.0.1:{port}"


def wait_for_workers(url: str, count: int, web: Service, timeout: float = READY_SECONDS) -> dict:
    """Wait until the web app's readiness counts `count` workers on the queue."""
    deadline = time.monotonic() + timeout
    status: dict = {}
    while time.monotonic() < deadline:
        assert web.process.poll() is None, web.log()
        try:
            answer = http("GET", f"{url}/v2/health/ready", timeout=3)
            status = answer.json()
            if answer.status == 200 and status.get("workers") == count:
                return status
        except (OSError, ValueError):
            pass
        time.sleep(0.3)
    raise AssertionError(f"not {count} workers: {status}\n{web.log()}")


def default_settings() -> Settings:
    """The settings of a host that sets nothing but its home."""
    return Settings(home=Path())
