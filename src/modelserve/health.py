"""Container health checks: `python -m modelserve.health [web|worker]`, exit 0 when healthy.

Docker runs this every few seconds in every container, so it imports only the standard
library: no Flask, Celery or numpy, and it answers in tens of milliseconds.
"""

from __future__ import annotations

import os
import sys
import urllib.error
import urllib.request
from pathlib import Path
from urllib.parse import urlsplit

TCP_ESTABLISHED = "01"
AMQP_PORT = 5672
AMQPS_PORT = 5671
WEB_PORT = 5100


def web_is_live(port: int, timeout: float = 3.0) -> bool:
    """Tell whether the web app answers its liveness endpoint on this container's loopback."""
    url = f"http://127.0.0.1:{port}/v2/health/live"
    try:
        with urllib.request.urlopen(url, timeout=timeout) as answer:  # noqa: S310 (our URL)
            return answer.status == 200
    except (urllib.error.URLError, OSError):
        return False


def broker_port(broker_url: str) -> int:
    """The broker's TCP port named by an amqp:// or amqps:// URL."""
    url = urlsplit(broker_url)
    return url.port or (AMQPS_PORT if url.scheme == "amqps" else AMQP_PORT)


def connected_to(port: int, proc: Path = Path("/proc")) -> bool:
    """Tell whether this network namespace holds an established TCP connection to `port`."""
    for table in ("net/tcp", "net/tcp6"):
        try:
            lines = (proc / table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            remote, state = fields[2], fields[3]
            if state == TCP_ESTABLISHED and int(remote.rsplit(":", 1)[1], 16) == port:
                return True
    return False


def role_of_container(proc: Path = Path("/proc")) -> str:
    """`web` or `worker`, read from the command line of the container's first process."""
    words = (proc / "1" / "cmdline").read_bytes().split(b"\0")
    return "worker" if b"worker" in words else "web"


def healthy(role: str, environ: dict[str, str], web_port: int = WEB_PORT) -> tuple[bool, str]:
    """Check one role; say what was checked."""
    if role == "web":
        # Liveness, not readiness: a web app with no model or no worker yet is still the
        # right process to keep, and it says why it is not ready on /v2/health/ready.
        return web_is_live(web_port), f"the web app answers /v2/health/live on port {web_port}"
    # A worker is useful when its process runs and holds its connection to the broker;
    # `celery inspect ping` would ask the same of every worker through the broker, and
    # takes seconds of imports and a broadcast round trip per check.
    port = broker_port(environ.get("MODELSERVE_BROKER_URL", ""))
    return connected_to(port), f"the worker holds a connection to the broker's port {port}"


def main(argv: list[str]) -> int:
    """Check the role named by `[web [PORT] | worker]` (else found), print, exit 0 or 1."""
    role = argv[0] if argv else role_of_container()
    if role not in ("web", "worker"):
        print(f"unknown role {role!r}: use web or worker", file=sys.stderr)
        return 2
    web_port = int(argv[1]) if len(argv) > 1 else WEB_PORT
    ok, what = healthy(role, dict(os.environ), web_port)
    print(f"{'healthy' if ok else 'unhealthy'}: checked that {what}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
