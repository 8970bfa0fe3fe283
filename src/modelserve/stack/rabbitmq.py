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
from modelserve.stack.ports import ensure_port_free, port_is_free, wait_for_port

SERVER = "/usr/lib/rabbitmq/bin/rabbitmq-server"
USER = "modelserve"
EPMD_OFFSET, DIST_OFFSET = 19000, 20000


class BrokerError(UserError):
    """The broker cannot be started or reached."""


@dataclass
class BrokerNode:
    """Where a private node keeps its state, the ports it uses, and its epmd once started."""

    base: Path
    port: int
    epmd: subprocess.Popen | None = field(default=None, repr=False, compare=False)

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
        _write_private(
            config,
            f"listeners.tcp.1 = 127.0.0.1:{self.port}\n"
            f"default_user = {creds['user']}\n"
            f"default_pass = {creds['password']}\n"
            "loopback_users = none\n",
        )
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
        env = self.environment()
        (self.base / "log").mkdir(parents=True, exist_ok=True)
        (self.base / "enabled_plugins").write_text("[].\n")
        with open(self.base / "log" / "console.log", "ab") as log:
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


def free_broker_port(low: int = 20000, high: int = 45000) -> int:
    """A node port that is free, with its Erlang companion ports free too (tests, benchmarks)."""
    for _ in range(200):
        port = random.randint(low, high)  # noqa: S311 (choosing a port, not a secret)
        if all(port_is_free(p) for p in BrokerNode(Path(), port).ports()):
            return port
    raise BrokerError(f"no free port between {low} and {high} for a RabbitMQ node")
