"""Ports: refuse a taken one up front, wait for a service to accept connections."""

from __future__ import annotations

import socket
import subprocess
import time

from modelserve.errors import UserError


class PortError(UserError):
    """A port is taken, or nothing answers on it."""


def port_is_free(port: int, host: str = "127.0.0.1") -> bool:
    """Tell whether a server could bind the port now (a TIME_WAIT leftover does not count)."""
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as servers bind
        try:
            probe.bind((host, port))
        except OSError:
            return False
    return True


def ensure_port_free(port: int, owner: str, host: str = "127.0.0.1") -> None:
    """Refuse to start when a port is taken, naming what wanted it."""
    if not port_is_free(port, host):
        raise PortError(f"port {port} ({owner}) is already in use on {host}")


def wait_for_port(port: int, timeout: float, process: subprocess.Popen | None = None,
                  name: str = "the service", host: str = "127.0.0.1") -> None:
    """Wait until something accepts connections on a port, or the process exits."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise PortError(f"{name} exited (code {process.returncode}) while starting")
        with socket.socket() as probe:
            probe.settimeout(0.5)
            if probe.connect_ex((host, port)) == 0:
                return
        time.sleep(0.1)
    raise PortError(f"{name} did not answer on port {port} within {timeout:.0f} s")
