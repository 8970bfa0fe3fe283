"""Security of a running stack: CSRF on forms, no debug server, a private broker, no traversal."""

from __future__ import annotations

import re
import socket
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from urllib.parse import urlencode

import amqp
import pytest
from cli_helpers import run_cli

from modelserve.web import csrf
from serving.stack_helpers import ROW, RunningStack, cmdline, http, http_server

pytestmark = pytest.mark.slow  # the shared serving stack and Chromium

REPO = Path(__file__).resolve().parents[2]
TOKEN_FIELD = re.compile(r'name="csrf-token" value="([0-9a-f]{64})"')
FEATURES = ("pregnancies", "glucose", "blood_pressure", "skin_thickness", "insulin", "bmi",
            "diabetes_pedigree", "age")


def form_session(stack: RunningStack) -> tuple[str, str]:
    """Open the page as a browser would: its CSRF cookie and the form's token."""
    page = http("GET", f"{stack.url}/")
    cookie = page.headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie, cookie
    nonce = re.match(rf"{csrf.COOKIE}=([^;]+)", cookie).group(1)
    return nonce, TOKEN_FIELD.search(page.body.decode()).group(1)


def post_form(stack: RunningStack, fields: dict[str, str], cookie: str | None = None,
              headers: dict[str, str] | None = None):
    """POST the predict form, url-encoded, with an optional CSRF cookie."""
    sent = dict(headers or {})
    if cookie:
        sent["Cookie"] = f"{csrf.COOKIE}={cookie}"
    return http("POST", f"{stack.url}/", urlencode(fields).encode(),
                "application/x-www-form-urlencoded", headers=sent)


def patient(token: str | None = None) -> dict[str, str]:
    """The predict form filled with the dataset's first patient (and a token if given)."""
    fields = {name: str(value) for name, value in zip(FEATURES, ROW, strict=True)}
    return fields | ({csrf.FIELD: token} if token else {})


def test_form_posts_need_this_sites_token(stack, reliability):
    """No token, a token for another cookie, a forged token, a cross-site post: all 403."""
    nonce, token = form_session(stack)
    other_nonce, other_token = form_session(stack)
    assert nonce != other_nonce
    accepted = post_form(stack, patient(token), cookie=nonce)
    assert accepted.status == 200 and b'id="probability"' in accepted.body
    refused = {
        "no token": post_form(stack, patient(), cookie=nonce),
        "no cookie": post_form(stack, patient(token)),
        "another browser's token": post_form(stack, patient(other_token), cookie=nonce),
        "forged token": post_form(stack, patient("0" * 64), cookie=nonce),
        "cross-site": post_form(stack, patient(token), cookie=nonce,
                                headers={"Sec-Fetch-Site": "cross-site"}),
        "same-site, other origin": post_form(stack, patient(token), cookie=nonce,
                                             headers={"Sec-Fetch-Site": "same-site"}),
        "other Origin": post_form(stack, patient(token), cookie=nonce,
                                  headers={"Origin": "http://evil.example"}),
        "opaque Origin": post_form(stack, patient(token), cookie=nonce,
                                   headers={"Origin": "null"}),
    }
    for kind, answer in refused.items():
        assert answer.status == 403, (kind, answer.status)
        assert b"reload the page" in answer.body or b"other sites" in answer.body, kind
        assert b'id="probability"' not in answer.body, kind
    reliability.record("Security", "CSRF on the predict form", refused=len(refused),
                       accepted_with_token=1, note=", ".join(refused))


def test_an_upload_without_token_is_refused_and_stores_nothing(stack):
    """The CSV upload (it writes a result file) is refused without a token; nothing is written."""
    results = stack.home / "results"
    before = sorted(results.glob("*.csv")) if results.exists() else []
    boundary = "modelservetest"
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; "
            f"filename=\"rows.csv\"\r\nContent-Type: text/csv\r\n\r\n"
            f"{','.join(map(str, ROW))}\r\n--{boundary}--\r\n").encode()
    answer = http("POST", f"{stack.url}/predictions/upload", body,
                  f"multipart/form-data; boundary={boundary}")
    assert answer.status == 403
    after = sorted(results.glob("*.csv")) if results.exists() else []
    assert after == before


class _AttackerPage(BaseHTTPRequestHandler):
    """Another origin's page whose form posts to the stack as soon as it loads."""

    target = ""

    def do_GET(self) -> None:  # noqa: N802 (http.server's name)
        inputs = "".join(f'<input name="{n}" value="{v}">' for n, v in patient().items())
        page = (f'<form id="f" method="post" action="{self.target}/">{inputs}</form>'
                "<script>document.getElementById('f').submit()</script>")
        self.send_response(200)
        self.send_header("Content-Type", "text/html")
        self.end_headers()
        self.wfile.write(page.encode())

    def log_message(self, *args) -> None:
        """Stay quiet."""


def attacker_site(target: str):
    """Serve the attacker's page on another port of this host (a context manager)."""
    return http_server(type("Handler", (_AttackerPage,), {"target": target}))


def test_a_real_browser_posting_from_another_site_is_refused(browser, stack):
    """Chromium, having visited our page, is made to post our form by another site: 403."""
    context = browser.new_context()
    try:
        page = context.new_page()
        page.goto(f"{stack.url}/")  # the victim has our cookie
        with attacker_site(stack.url) as attacker:
            with page.expect_response(lambda r: r.url == f"{stack.url}/" and
                                      r.request.method == "POST") as answer:
                page.goto(f"{attacker}/")
        assert answer.value.status == 403
        assert b"other sites" in answer.value.body()  # refused on its origin, before the token
    finally:
        context.close()


def test_no_debug_server_anywhere(stack, reliability):
    """gunicorn (uvicorn workers) serves the app; no Werkzeug debugger or reloader; errors
    carry no traceback; no Server header names the software."""
    answer = http("GET", f"{stack.url}/console")
    assert answer.status == 404 and b"Werkzeug" not in answer.body
    assert answer.headers.get("Server") is None, answer.headers.items()
    command_lines = [cmdline(pid).replace(b"\0", b" ").decode() for pid in stack.children()]
    assert any("gunicorn" in line and "modelserve.web.serve.Worker" in line
               for line in command_lines)
    assert not any(word in line for line in command_lines
                   for word in ("--reload", "flask run", "--debug"))
    sources = [path for path in (REPO / "src").rglob("*.py")]
    risky = [f"{path.name}: {line.strip()}" for path in sources
             for line in path.read_text().splitlines()
             if re.search(r"debug\s*=\s*True|\.run\(\s*(debug|host)|use_reloader", line)]
    assert not risky, risky
    reliability.record("Security", "no debug server", processes_checked=len(command_lines),
                       source_files_scanned=len(sources), findings=len(risky),
                       note="gunicorn only; /console 404; no --reload/--debug")


def _listening_addresses(port: int) -> set[str]:
    """The local addresses of TCP sockets listening on a port (IPv4 and IPv6)."""
    found = set()
    for table, width in (("/proc/net/tcp", 8), ("/proc/net/tcp6", 32)):
        for line in Path(table).read_text().splitlines()[1:]:
            local, state = line.split()[1], line.split()[3]
            address, hex_port = local.split(":")
            if state == "0A" and int(hex_port, 16) == port:  # 0A: LISTEN
                found.add(_address(address, width))
    return found


def _address(hex_address: str, width: int) -> str:
    """/proc/net/tcp's little-endian hex address as text."""
    raw = bytes.fromhex(hex_address)
    if width == 8:
        return socket.inet_ntop(socket.AF_INET, raw[::-1])
    words = b"".join(raw[i:i + 4][::-1] for i in range(0, 16, 4))
    return socket.inet_ntop(socket.AF_INET6, words)


def test_the_broker_listens_on_loopback_only_and_refuses_guest(stack, reliability):
    """AMQP, Erlang distribution and epmd: loopback only; guest/guest is refused; 0600 secrets."""
    ports = {"amqp": stack.broker_port, "erlang distribution": stack.broker_port + 20000,
             "epmd": stack.broker_port + 19000}
    for use, port in ports.items():
        addresses = _listening_addresses(port)
        assert addresses, f"nothing listens on the {use} port {port}"
        assert addresses <= {"127.0.0.1", "::1"}, (use, addresses)
    guest = amqp.Connection(f"127.0.0.1:{stack.broker_port}", userid="guest",
                            password="guest", connect_timeout=5)  # noqa: S106 (must fail)
    with pytest.raises(amqp.exceptions.AccessRefused):
        guest.connect()
    secrets_files = [stack.home / "broker" / "credentials.json", stack.home / csrf.KEY_FILE]
    modes = {path.name: oct(path.stat().st_mode & 0o777) for path in secrets_files}
    assert set(modes.values()) == {"0o600"}, modes
    reliability.record("Security", "broker and stored secrets", ports_checked=len(ports),
                       off_loopback=0, guest_login="refused",
                       note=", ".join(f"{name} {mode}" for name, mode in modes.items()))


TRAVERSALS = [
    "/v2/models/..%2F..%2Fregistry/versions/..%2F..%2Fhistory.jsonl",
    "/v2/models/diabetes/versions/..%2F..%2F..%2Fetc%2Fpasswd",
    "/v2/models/diabetes/versions/....%2F%2Factive/infer",
    "/predictions/results/..%2F..%2Fregistry%2Fhistory.jsonl.csv",
    "/predictions/results/%2e%2e%2f%2e%2e%2fbroker%2fcredentials.json.csv",
    "/static/..%2F..%2F..%2Fregistry%2Fhistory.jsonl",
    "/static/../../web-secret",
]


def test_paths_out_of_place_are_404(stack, reliability):
    """Encoded and plain traversal through model names, versions and files: 404, no content."""
    for path in TRAVERSALS:
        answer = http("GET", f"{stack.url}{path}")
        assert answer.status == 404, (path, answer.status, answer.body[:200])
        assert b"password" not in answer.body and b'"action"' not in answer.body, path
    reliability.record("Security", "path traversal in URLs", urls=len(TRAVERSALS),
                       answered_with_content=0, note="model names, versions, result files, static")


NOT_VERSIONS = ["../../etc/passwd", "active", "..", "78a1/../78a1", "versions/../active"]


def test_model_commands_take_only_version_ids(stack, reliability):
    """`models activate` with a path for a version: one clear line each, nothing changes."""
    link = stack.home / "registry" / "active"
    before = link.readlink()
    for version in NOT_VERSIONS:
        result = run_cli("models", "activate", version, home=stack.home)
        assert result.returncode == 1 and "Traceback" not in result.stderr, version
        assert len(result.stderr.strip().splitlines()) == 1, result.stderr
        assert link.readlink() == before, version
    reliability.record("Security", "path traversal in model commands",
                       commands=len(NOT_VERSIONS), refused=len(NOT_VERSIONS), registry_changes=0)


def test_uploads_over_the_limit_are_refused_with_413(stack, reliability):
    """A CSV upload over max_upload_bytes (16 MiB) and an API body over max_body_bytes: 413."""
    nonce, token = form_session(stack)
    boundary = "modelservetest"
    head = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"{csrf.FIELD}\"\r\n\r\n"
            f"{token}\r\n--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; "
            "filename=\"big.csv\"\r\nContent-Type: text/csv\r\n\r\n").encode()
    line = (",".join(map(str, ROW)) + "\n").encode()
    rows = line * ((17 << 20) // len(line))
    page = http("POST", f"{stack.url}/predictions/upload",
                head + rows + f"\r\n--{boundary}--\r\n".encode(),
                f"multipart/form-data; boundary={boundary}",
                headers={"Cookie": f"{csrf.COOKIE}={nonce}"}, timeout=60)
    assert page.status == 413 and b"larger than the 16777216 bytes allowed" in page.body
    api = http("POST", f"{stack.url}/api/v1/predict", b'{"rows": [' + b"[1,2,3,4,5,6,7,8],"
               * 200_000 + b"[1,2,3,4,5,6,7,8]]}", "application/json", timeout=60)
    assert api.status == 413 and "larger than" in api.json()["error"]
    reliability.record("Security", "upload and body size limits", refused=2,
                       note="17 MiB CSV upload and 3.6 MB JSON body: 413 with the limit named")


def test_a_browser_uploading_too_big_a_file_reads_the_413_page(browser, stack, tmp_path):
    """Chromium sends a 17 MiB CSV through the form: it shows our 413 page, not a reset."""
    big = tmp_path / "big.csv"
    line = ",".join(map(str, ROW)) + "\n"
    big.write_text(line * ((17 << 20) // len(line)))
    context = browser.new_context(base_url=stack.url)
    try:
        page = context.new_page()
        page.goto("/predictions")
        page.set_input_files("#upload-form input[type=file]", str(big))
        with page.expect_response(lambda r: r.request.method == "POST") as answer:
            page.click("#upload-form button[type=submit]")
        assert answer.value.status == 413
        assert "larger than the 16777216 bytes allowed" in page.content()
    finally:
        context.close()


HEADER_PATHS = ["/", "/predictions", "/accuracy", "/models", "/no-such-page", "/v2/health/ready",
                "/api/v1/nothing", "/openapi.json", "/metrics"]


def test_every_answer_carries_the_security_headers(stack, reliability):
    """Pages, error pages, API answers: nosniff, no framing, no referrer, a strict CSP."""
    from modelserve.web import SECURITY_HEADERS

    for path in HEADER_PATHS:
        answer = http("GET", f"{stack.url}{path}")
        missing = {name: value for name, value in SECURITY_HEADERS.items()
                   if answer.headers.get(name) != value}
        assert not missing, (path, answer.status, missing)
    refused = post_form(stack, patient())
    assert refused.status == 403 and refused.headers.get("X-Frame-Options") == "DENY"
    reliability.record("Security", "security headers", answers_checked=len(HEADER_PATHS) + 1,
                       missing=0, note=", ".join(SECURITY_HEADERS))
