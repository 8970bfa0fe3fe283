"""The web app as served: one ASGI application, the hot path on the loop, Flask for the rest.

gunicorn runs it with uvicorn's worker (web/serve.py). The prediction endpoints are answered
by web/fast.py on the worker's event loop, where the predictor lives too; every other
request (the pages, uploads, readiness, OpenAPI, metrics, and a prediction carrying a
browser session) goes to the Flask app through a2wsgi, in a pool of threads.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from a2wsgi import WSGIMiddleware
from flask import Flask

from modelserve.config import Settings
from modelserve.web import create_app, fast
from modelserve.web.app_service import Service
from modelserve.web.predictors import STARTUP_CONNECT_SECONDS

log = logging.getLogger(__name__)
DEFAULT_THREADS = 64


class Front:
    """Route each request to the hot path or to Flask; start and stop the predictor."""

    def __init__(self, app: Flask, threads: int = DEFAULT_THREADS):
        self.flask = app
        self._service: Service = app.extensions["modelserve"]
        self._wsgi = WSGIMiddleware(app, workers=max(threads, 1))  # type: ignore[arg-type]
        self._hot = fast.HotPath(app)
        self._started = False

    async def __call__(self, scope: fast.Scope_, receive: fast.Receive,
                       send: fast.Send) -> None:
        """The ASGI entry point."""
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        if scope["type"] != "http":  # websockets are not served
            return
        self._start()
        call = fast.take(scope)
        if call is not None:
            await self._hot(call, receive, send)
        else:
            await self._wsgi(scope, receive, send)  # type: ignore[arg-type]

    def _start(self) -> None:
        """Give the predictor this process's loop before anything asks for it."""
        if not self._started:
            self._service.start(asyncio.get_running_loop())
            self._started = True

    async def _start_and_connect(self) -> None:
        """Start the predictor and wait for its broker connection (bounded) before the
        server takes requests: the lifespan's start-up comes before the first accept."""
        self._start()
        if not await self._service.predictor.wait_connected(STARTUP_CONNECT_SECONDS):
            log.warning("no broker connection within %.0f s of start; serving 503s until "
                        "there is one", STARTUP_CONNECT_SECONDS)

    async def _lifespan(self, receive: fast.Receive, send: fast.Send) -> None:
        """Start the predictor with the worker; stop it (answering its waiters) at the end."""
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await self._start_and_connect()
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self._service.aclose()
                await send({"type": "lifespan.shutdown.complete"})
                return


def create_asgi_app(settings: Settings | None = None, inline: bool = False,
                    threads: int = DEFAULT_THREADS, **_: Any) -> Front:
    """Build the served app; `inline` scores in-process instead of through the broker."""
    return Front(create_app(settings, inline=inline), threads)
