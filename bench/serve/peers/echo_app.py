"""The echo baselines: POST /api/v1/predict parses the JSON body and answers fixed-shape JSON.

No model, no batching: what is left is the HTTP server and JSON. bench/serve/run.py serves
`wsgi_app` with `gunicorn -w 2` (sync workers, the project's venv) and `asgi_app` with
`granian --interface asgi --workers 2` (its own venv). Standard library only.
"""

from __future__ import annotations

import json

PATH = "/api/v1/predict"


def answer(body: bytes) -> tuple[int, bytes]:
    """Status and body for one request: the row count and one dummy score per row."""
    try:
        rows = json.loads(body)["rows"]
        count = len(rows)
    except (ValueError, KeyError, TypeError):
        return 400, b'{"error": "the body must be JSON with a list of rows"}'
    return 200, json.dumps({"model": "echo", "rows": count, "probabilities": [0.5] * count,
                            "labels": [1] * count}).encode()


def wsgi_app(environ, start_response):
    """WSGI: answer POST /api/v1/predict, 404 for anything else."""
    if environ["PATH_INFO"] != PATH or environ["REQUEST_METHOD"] != "POST":
        start_response("404 Not Found", [("Content-Length", "0")])
        return [b""]
    length = int(environ.get("CONTENT_LENGTH") or 0)
    status, body = answer(environ["wsgi.input"].read(length))
    start_response("200 OK" if status == 200 else "400 Bad Request",
                   [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
    return [body]


async def asgi_app(scope, receive, send):
    """Bare ASGI (no framework): the same answers as wsgi_app."""
    if scope["type"] == "lifespan":
        while (message := await receive())["type"] != "lifespan.shutdown":
            await send({"type": "lifespan.startup.complete"})
        await send({"type": "lifespan.shutdown.complete"})
        return
    body, more = b"", True
    while more:
        message = await receive()
        body += message.get("body", b"")
        more = message.get("more_body", False)
    if scope["path"] != PATH or scope["method"] != "POST":
        status, body = 404, b""
    else:
        status, body = answer(body)
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"),
                            (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})
