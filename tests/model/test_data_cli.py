"""`modelserve data import|fetch` in a real subprocess, fetching from a real local HTTP server."""

from __future__ import annotations

import hashlib
import json
import socket
import subprocess
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from cli_helpers import run_cli

from modelserve.model.dataset import DATA_FILE, MAX_DOWNLOAD_BYTES, RECORD_FILE, import_dataset

pytestmark = pytest.mark.slow

PIMA_ROWS = 765
CLI_TIMEOUT = 60
BAD_LABEL_ROW = 4


def bad_csv(pima: bytes) -> bytes:
    """Return the real data with the label of row BAD_LABEL_ROW set to 2."""
    lines = pima.decode().splitlines(keepends=True)
    lines[BAD_LABEL_ROW - 1] = lines[BAD_LABEL_ROW - 1].rstrip("\n")[:-1] + "2\n"
    return "".join(lines).encode()


def bad_label_message(source: object) -> str:
    """Return the refusal for bad_csv's data, read from `source`."""
    return f"{source}: row {BAD_LABEL_ROW}, column 9 (diabetes label): label '2' must be 0 or 1"


def snapshot(directory: Path) -> dict[str, bytes]:
    """Return every file under a directory with its bytes."""
    return {
        str(path.relative_to(directory)): path.read_bytes()
        for path in sorted(directory.rglob("*"))
        if path.is_file()
    }


def assert_refused(result: subprocess.CompletedProcess, *fragments: str) -> None:
    """Assert exit code 1 and one 'Error: ' line on stderr holding every fragment."""
    assert result.returncode == 1, result.stdout + result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    assert result.stderr.startswith("Error: "), result.stderr
    assert result.stderr.count("\n") == 1, result.stderr
    for fragment in fragments:
        assert fragment in result.stderr, result.stderr
    assert result.stdout == ""


class Handler(BaseHTTPRequestHandler):
    """Serve the files of DataServer, and a few broken replies a real server can give."""

    server: DataServer

    def do_GET(self) -> None:
        """Answer one request by path."""
        if self.path == "/huge.csv":
            self._send_headers(MAX_DOWNLOAD_BYTES + 1)
            chunk = b"0,0,0,0,0,0,0,0,0\n" * (1 << 14)
            left = MAX_DOWNLOAD_BYTES + 1
            while left > 0:
                left -= self.wfile.write(chunk[:left])
        elif self.path == "/cut.csv":  # promise the whole file, hang up after half its rows
            self._send_headers(len(self.server.pima))
            self.wfile.write(self.server.half)
        elif self.path == "/not-http":
            self.wfile.write(b"hello there\r\n")
        elif self.path in self.server.files:
            body = self.server.files[self.path]
            self._send_headers(len(body))
            self.wfile.write(body)
        else:
            self.send_error(404)

    def _send_headers(self, length: int) -> None:
        """Start a 200 reply of `length` bytes of CSV."""
        self.send_response(200)
        self.send_header("Content-Type", "text/csv")
        self.send_header("Content-Length", str(length))
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 (base signature)
        """Keep the test output quiet."""


class DataServer(ThreadingHTTPServer):
    """A local HTTP server holding the real and a damaged CSV."""

    daemon_threads = True

    def __init__(self, pima: bytes) -> None:
        super().__init__(("127.0.0.1", 0), Handler)
        self.pima = pima
        self.half = b"".join(pima.splitlines(keepends=True)[: PIMA_ROWS // 2])
        self.files = {"/pima.csv": pima, "/bad.csv": bad_csv(pima)}

    def url(self, path: str) -> str:
        """Return the URL of a path on this server."""
        return f"http://127.0.0.1:{self.server_address[1]}{path}"


@pytest.fixture
def server(pima_csv: Path) -> Iterator[DataServer]:
    """Run a DataServer in a thread for one test."""
    httpd = DataServer(pima_csv.read_bytes())
    thread = threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield httpd
    httpd.shutdown()
    httpd.server_close()
    thread.join(timeout=10)


@pytest.fixture
def stored(home: Path, pima_csv: Path) -> dict[str, bytes]:
    """Store the real dataset in `home` first; return the stored files' bytes."""
    import_dataset(pima_csv, home / "data")
    return snapshot(home / "data")


def expected_report(home: Path, pima: bytes, source: object) -> str:
    """Return what a successful import or fetch of the real data prints."""
    positives = sum(line.rstrip().endswith(",1") for line in pima.decode().splitlines())
    return (
        f"stored {PIMA_ROWS} rows ({positives} positive) from {source}\n"
        f"  file:   {home / 'data' / DATA_FILE}\n"
        f"  sha256: {hashlib.sha256(pima).hexdigest()}\n"
    )


def test_import_real_dataset(home: Path, pima_csv: Path) -> None:
    """Import the real CSV: report rows, file and sha256; store it byte for byte."""
    result = run_cli("data", "import", pima_csv, home=home, timeout=CLI_TIMEOUT)
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    assert result.stdout == expected_report(home, pima_csv.read_bytes(), pima_csv)
    assert (home / "data" / DATA_FILE).read_bytes() == pima_csv.read_bytes()
    assert json.loads((home / "data" / RECORD_FILE).read_text())["source"] == str(pima_csv)


def test_import_bad_file_refused(home: Path, pima_csv: Path, tmp_path: Path) -> None:
    """Refuse a bad CSV with exit code 1 and the row/column message; store nothing."""
    bad = tmp_path / "bad.csv"
    bad.write_bytes(bad_csv(pima_csv.read_bytes()))
    result = run_cli("data", "import", bad, home=home, timeout=CLI_TIMEOUT)
    assert_refused(result)
    assert result.stderr == f"Error: {bad_label_message(bad)}\n"
    assert not (home / "data").exists()


def test_import_missing_file_refused(home: Path, tmp_path: Path) -> None:
    """Refuse a path that does not exist with a one-line message."""
    result = run_cli("data", "import", tmp_path / "absent.csv", home=home, timeout=CLI_TIMEOUT)
    assert_refused(result, f"{tmp_path / 'absent.csv'}: no such file")


@pytest.mark.parametrize(
    ("content", "fragment"),
    [
        pytest.param(None, bad_label_message(""), id="bad-label"),
        pytest.param(b"\x00\x01\x02", "a binary file, not CSV text", id="binary"),
        pytest.param(b"1,2,3,4,5,6,7,8,0\n" * 200, "every label is 0", id="one-class"),
    ],
)
def test_refused_import_leaves_stored_dataset_untouched(
    home: Path,
    pima_csv: Path,
    tmp_path: Path,
    stored: dict[str, bytes],
    content: bytes | None,
    fragment: str,
) -> None:
    """Keep the stored dataset and its record byte-identical when an import is refused."""
    bad = tmp_path / "bad.csv"
    bad.write_bytes(bad_csv(pima_csv.read_bytes()) if content is None else content)
    result = run_cli("data", "import", bad, home=home, timeout=CLI_TIMEOUT)
    assert_refused(result, fragment)
    assert snapshot(home / "data") == stored


def test_fetch_real_dataset(home: Path, pima_csv: Path, server: DataServer) -> None:
    """Fetch the real CSV over HTTP and store it byte for byte, the URL as its source."""
    url = server.url("/pima.csv")
    result = run_cli("data", "fetch", "--url", url, home=home, timeout=CLI_TIMEOUT)
    assert result.returncode == 0, result.stderr
    assert result.stdout == expected_report(home, pima_csv.read_bytes(), url)
    assert (home / "data" / DATA_FILE).read_bytes() == pima_csv.read_bytes()
    assert json.loads((home / "data" / RECORD_FILE).read_text())["source"] == url


@pytest.mark.parametrize(
    ("path", "message"),
    [
        pytest.param("/bad.csv", "{url}: row 4, column 9 (diabetes label): label '2'", id="bad"),
        pytest.param("/absent.csv", "could not download {url}: Not Found", id="404"),
        pytest.param("/huge.csv", "{url}: larger than 64 MiB; not this dataset", id="too-large"),
        pytest.param("/cut.csv", "could not download {url}: got {half} of {size} bytes", id="cut"),
        pytest.param(
            "/not-http", "could not download {url}: not a valid HTTP reply", id="not-http"
        ),
    ],
)
def test_fetch_refused_leaves_stored_dataset_untouched(
    home: Path, server: DataServer, stored: dict[str, bytes], path: str, message: str
) -> None:
    """Refuse a bad download with one clear line; the stored dataset stays as it was."""
    url = server.url(path)
    result = run_cli("data", "fetch", "--url", url, home=home, timeout=CLI_TIMEOUT)
    assert_refused(result, message.format(url=url, half=len(server.half), size=len(server.pima)))
    assert snapshot(home / "data") == stored


def test_fetch_connection_refused(home: Path) -> None:
    """Say 'could not download' when nothing listens on the port."""
    with socket.socket() as reserved:  # bound, never listening: connecting is refused
        reserved.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{reserved.getsockname()[1]}/pima.csv"
        result = run_cli("data", "fetch", "--url", url, home=home, timeout=CLI_TIMEOUT)
    assert_refused(result, f"could not download {url}: ", "Connection refused")


def test_fetch_times_out(home: Path) -> None:
    """Give up on a server that accepts the connection but never answers."""
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        url = f"http://127.0.0.1:{silent.getsockname()[1]}/pima.csv"
        result = run_cli(
            "data", "fetch", "--url", url, "--timeout", "0.5", home=home, timeout=CLI_TIMEOUT
        )
    assert_refused(result, f"could not download {url}: timed out")


@pytest.mark.parametrize(
    ("url", "message"),
    [
        pytest.param(
            "file:///etc/passwd",
            "file:///etc/passwd: only http:// and https:// URLs can be fetched",
            id="file",
        ),
        pytest.param(
            "http://localhost:abc/x.csv",
            "could not download http://localhost:abc/x.csv: nonnumeric port",
            id="bad-port",
        ),
        pytest.param(
            "http://[::1/x.csv",
            "could not download http://[::1/x.csv: Invalid IPv6 URL",
            id="bad-host",
        ),
    ],
)
def test_fetch_refuses_bad_url(home: Path, url: str, message: str) -> None:
    """Refuse a non-HTTP or malformed URL with one line, not a traceback."""
    result = run_cli("data", "fetch", "--url", url, home=home, timeout=CLI_TIMEOUT)
    assert_refused(result, message)
    assert not home.exists()


def test_fetch_refuses_non_positive_timeout(home: Path) -> None:
    """Refuse --timeout 0 as a usage error (0 would mean a non-blocking socket)."""
    result = run_cli("data", "fetch", "--timeout", "0", home=home, timeout=CLI_TIMEOUT)
    assert result.returncode == 2
    assert "Invalid value for '--timeout'" in result.stderr
    assert "Traceback" not in result.stderr
