"""gunicorn's worker for the ASGI app: uvicorn on uvloop and httptools, set for this app.

gunicorn stays the process manager (TLS options, worker respawn, graceful stop, signals);
each worker runs one event loop, on which web/fast.py answers predictions.
"""

from __future__ import annotations

from typing import Any, ClassVar

from uvicorn_worker import UvicornWorker  # type: ignore[import-untyped]


class Worker(UvicornWorker):
    """uvicorn's gunicorn worker: no Server header, no proxy header trusted, no access log."""

    CONFIG_KWARGS: ClassVar[dict[str, Any]] = {
        "loop": "uvloop",
        "http": "httptools",
        "lifespan": "on",  # the predictor starts and stops with the worker's loop
        "server_header": False,
        # The peer address decides auth on loopback and rate-limit budgets: never a header.
        "proxy_headers": False,
        "access_log": False,
    }

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # In-flight requests get gunicorn's --graceful-timeout to finish on a stop.
        self.config.timeout_graceful_shutdown = self.cfg.graceful_timeout
