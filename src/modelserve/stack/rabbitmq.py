"""A private RabbitMQ node: own directories, ports and generated credentials, loopback only."""

from __future__ import annotations

import json
import os
import random
import secrets
import shutil
import signal
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote

from modelserve.errors import UserError
from modelserve.fsutil import atomic_write_text
from modelserve.stack.children import signal_group, wait_or_kill
from modelserve.stack.ports import PortError, ensure_port_free, port_is_free, wait_for_port

SERVER = "/usr/lib/rabbitmq/bin/rabbitmq-server"
USER = "modelserve"
EPMD_OFFSET, DIST_OFFSET = 19000, 20000
EPHEMERAL_PORTS = Path("/proc/sys/net/ipv4/ip_local_port_range")
# How the Erlang VM, RabbitMQ's boot and its start script begin the line that says why it ended.
FATAL_MARKS = ("Kernel pid terminated", "BOOT FAILED", "Error", "ERROR")


class BrokerError(UserError):
    """The broker cannot be started or reached."""


@dataclass(frozen=True)
class TlsListener:
    """A TLS listener: its address and port, and the files that prove and check identities.

    Clients must present a certificate signed by `ca` (verify_peer, fail_if_no_peer_cert), as
    the Ansible rabbitmq role configures production's broker; TLS 1.2 and 1.3 only.
    """

    address: str
    port: int
    ca: Path
    cert: Path
    key: Path

    def config_lines(self) -> list[str]:
        """The rabbitmq.conf lines of this listener."""
        return [
            f"listeners.ssl.1 = {self.address}:{self.port}",
            f"ssl_options.cacertfile = {self.ca}",
            f"ssl_options.certfile = {self.cert}",
            f"ssl_options.keyfile = {self.key}",
            "ssl_options.verify = verify_peer",
            "ssl_options.fail_if_no_peer_cert = true",
            "ssl_options.versions.1 = tlsv1.3",
            "ssl_options.versions.2 = tlsv1.2",
        ]


@dataclass
class BrokerNode:
    """Where a private node keeps its state, the ports it uses, and its epmd once started.

    With `tls`, the node also listens with TLS there; its plain listener stays on loopback.
    """

    base: Path
    port: int
    tls: TlsListener | None = None
    epmd: subprocess.Popen | None = field(default=None, repr=False, compare=False)
    log_start: int = field(default=0, repr=False, compare=False)

    @property
    def dist_port(self) -> int:
        """Erlang distribution port (node-to-tool traffic)."""
        return self.port + DIST_OFFSET

    @property
    def epmd_port(self) -> int:
        """A private Erlang port mapper, so stopping the node stops it too."""
        return self.port + EPMD_OFFSET

    def ports(self) -> tuple[int, int, int]:
        """Every port the node listens on."""
        return self.port, self.dist_port, self.epmd_port

    @property
    def nodename(self) -> str:
        """A node name that cannot collide with another modelserve node's."""
        return f"modelserve-{self.port}@localhost"

    @property
    def console_log(self) -> Path:
        """Where the node's and its epmd's output goes (appended to on every start)."""
        return self.base / "log" / "console.log"

    def url(self) -> str:
        """The AMQP URL with this node's generated credentials."""
        password = quote(self.credentials()["password"], safe="")
        return f"amqp://{USER}:{password}@127.0.0.1:{self.port}//"

    def credentials(self) -> dict:
        """Return the node's credentials, generating them (0600) on first use."""
        path = self.base / "credentials.json"
        if path.is_file():
            return json.loads(path.read_text())
        # The broker creates its default user only on a fresh database: start from one.
        shutil.rmtree(self.base / "mnesia", ignore_errors=True)
        creds = {"user": USER, "password": secrets.token_urlsafe(24)}
        self.base.mkdir(parents=True, exist_ok=True, mode=0o700)
        _write_private(path, json.dumps(creds) + "\n")
        return creds

    def _write_config(self) -> Path:
        """Write rabbitmq.conf: loopback listener, our user as the default, no guest."""
        creds = self.credentials()
        config = self.base / "rabbitmq.conf"
        lines = [f"listeners.tcp.1 = 127.0.0.1:{self.port}", f"default_user = {creds['user']}",
                 f"default_pass = {creds['password']}", "loopback_users = none"]
        if self.tls is not None:
            lines += self.tls.config_lines()
        _write_private(config, "\n".join(lines) + "\n")
        return config

    def environment(self) -> dict[str, str]:
        """The environment variables that make rabbitmq-server use this node's places."""
        loopback = "-kernel inet_dist_use_interface {127,0,0,1}"
        return dict(
            os.environ,
            RABBITMQ_MNESIA_BASE=str(self.base / "mnesia"),
            RABBITMQ_LOG_BASE=str(self.base / "log"),
            RABBITMQ_NODENAME=self.nodename,
            RABBITMQ_NODE_PORT=str(self.port),
            RABBITMQ_DIST_PORT=str(self.dist_port),
            RABBITMQ_CONFIG_FILE=str(self._write_config()),
            RABBITMQ_ENABLED_PLUGINS_FILE=str(self.base / "enabled_plugins"),
            RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS=loopback,
            ERL_EPMD_PORT=str(self.epmd_port),
            ERL_EPMD_ADDRESS="127.0.0.1",
        )

    def start(self) -> subprocess.Popen:
        """Start our own epmd, then the node, each in its own process group."""
        if not Path(SERVER).is_file():
            raise BrokerError(
                "rabbitmq-server is not installed: `sudo apt-get install rabbitmq-server`, "
                "or point MODELSERVE_BROKER_URL at a broker"
            )
        for port, use in ((self.port, "--broker-port"), (self.dist_port, "Erlang distribution"),
                          (self.epmd_port, "Erlang port mapper")):
            ensure_port_free(port, f"the broker's {use}")
        if self.tls is not None:
            ensure_port_free(self.tls.port, "the broker's TLS listener", self.tls.address)
        env = self.environment()
        (self.base / "log").mkdir(parents=True, exist_ok=True)
        (self.base / "enabled_plugins").write_text("[].\n")
        with open(self.console_log, "ab") as log:
            self.log_start = log.tell()
            # A foreground epmd we own: the one Erlang daemonizes itself would outlive us.
            self.epmd = subprocess.Popen(  # noqa: S603 (argument list)
                [_epmd(), "-port", str(self.epmd_port), "-address", "127.0.0.1"],
                env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
            )
            wait_for_port(self.epmd_port, 10, self.epmd, "epmd")
            return subprocess.Popen(  # noqa: S603 (fixed path, argument list)
                [SERVER], env=env, cwd=self.base, stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def wait_until_listening(self, process: subprocess.Popen, timeout: float) -> None:
        """Wait until the node accepts connections; if it stops booting, say why from its log."""
        try:
            wait_for_port(self.port, timeout, process, "the broker")
        except PortError as error:
            if process.poll() is None:
                raise
            # rabbitmq-server exits 0 whatever ended the node: the reason is only in the log.
            raise BrokerError(f"the broker stopped while starting: {self.stop_reason()} "
                              f"(its log: {self.console_log})") from error

    def stop_reason(self) -> str:
        """The line of the node's console output since its last start that says why it stopped."""
        try:
            with open(self.console_log, "rb") as log:
                log.seek(self.log_start)
                lines = log.read().decode(errors="replace").splitlines()
        except OSError:
            lines = []
        fatal = [line.strip() for line in lines if line.startswith(FATAL_MARKS)]
        if not fatal:
            return "it gave no reason"  # killed, or out of memory: nothing left to say
        return fatal[-1] if len(fatal[-1]) <= 300 else fatal[-1][:300] + "..."

    def stop(self, process: subprocess.Popen, timeout: float = 30.0) -> None:
        """Stop the node gracefully (SIGTERM to its group), then its epmd."""
        for child, grace in ((process, timeout), (self.epmd, 5.0)):
            if child is None:
                continue
            signal_group(child.pid, signal.SIGTERM)
            wait_or_kill(child, grace)
        self.epmd = None


def _write_private(path: Path, text: str) -> None:
    """Write a file only its owner can read (it holds the broker's password)."""
    old_umask = os.umask(0o077)
    try:
        atomic_write_text(path, text)
    finally:
        os.umask(old_umask)


def _epmd() -> str:
    """The epmd binary (on Debian it is not on PATH)."""
    return shutil.which("epmd") or "/usr/lib/erlang/bin/epmd"


def free_broker_port(low: int = 10000) -> int:
    """A free node port whose Erlang companion ports are free too (tests, benchmarks).

    All three lie below the kernel's ephemeral range: a port in it can be taken by any
    outgoing connection between this check and the node's listen, and the node then dies.
    """
    high = first_ephemeral_port() - DIST_OFFSET - 1
    if high < low:
        raise BrokerError(f"the ephemeral ports ({EPHEMERAL_PORTS}) leave no room below them "
                          f"for a node port from {low} and its Erlang ports")
    for _ in range(200):
        port = random.randint(low, high)  # noqa: S311 (choosing a port, not a secret)
        if all(port_is_free(p) for p in BrokerNode(Path(), port).ports()):
            return port
    raise BrokerError(f"no free port between {low} and {high} for a RabbitMQ node")


def first_ephemeral_port() -> int:
    """Where the range the kernel picks outgoing connections' local ports from begins."""
    try:
        return int(EPHEMERAL_PORTS.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768  # Linux's default
