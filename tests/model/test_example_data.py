"""The built-in example: the Pima CSV ships in the package and `data example` stores it offline."""

from __future__ import annotations

import fnmatch
import hashlib
import json
import os
import shutil
import socket
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from contextlib import contextmanager
from importlib import resources
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

import modelserve
from modelserve.cli import main
from modelserve.model import examples
from modelserve.model.dataset import (
    DATA_FILE,
    RECORD_FILE,
    DatasetError,
    import_dataset,
    stored_dataset,
)
from modelserve.model.examples import EXAMPLE_FILE, EXAMPLE_SHA256, EXAMPLE_SOURCE

REPO = Path(__file__).resolve().parents[2]
PIMA_ROWS = 765
# What any connection attempt raises as an audit event: a name lookup, a connect, a request.
NETWORK_EVENTS = frozenset({
    "socket.connect", "socket.getaddrinfo", "socket.gethostbyname", "socket.gethostbyname_ex",
    "urllib.Request", "http.client.connect",
})
_network_log: list[str] | None = None


def _audit(event: str, _args: tuple) -> None:
    """Note network audit events while a `network_calls()` block runs (cheap otherwise)."""
    if _network_log is not None and event in NETWORK_EVENTS:
        _network_log.append(event)


sys.addaudithook(_audit)  # audit hooks cannot be removed; this one is idle outside the block


@contextmanager
def network_calls() -> Iterator[list[str]]:
    """Collect every network audit event raised in this process inside the block."""
    global _network_log
    _network_log = seen = []
    try:
        yield seen
    finally:
        _network_log = None


def invoke(*args: str) -> Result:
    """Run `modelserve ARGS` in this process (MODELSERVE_HOME comes from the `home` fixture)."""
    return CliRunner().invoke(main, list(args))


def expected_report(home: Path, data: bytes) -> str:
    """What storing the example prints."""
    positives = sum(line.endswith(",1") for line in data.decode().splitlines())
    return (
        f"stored {PIMA_ROWS} rows ({positives} positive) from {EXAMPLE_SOURCE}\n"
        f"  file:   {home / 'data' / DATA_FILE}\n"
        f"  sha256: {EXAMPLE_SHA256}\n"
    )


def test_the_example_is_package_data_with_the_checked_sha256(pima_csv: Path) -> None:
    """importlib.resources finds the CSV; it is the shared file, and the wheel includes it."""
    shipped = resources.files(examples).joinpath(EXAMPLE_FILE).read_bytes()
    assert shipped == pima_csv.read_bytes()
    assert hashlib.sha256(shipped).hexdigest() == EXAMPLE_SHA256
    # The wheel takes package data from these globs: the CSV and its licence note must match.
    globs = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"][
        "package-data"]["modelserve"]
    for name in (EXAMPLE_FILE, "README.md"):
        assert (Path(examples.__file__).parent / name).is_file()
        assert any(fnmatch.fnmatch(f"model/examples/{name}", glob) for glob in globs), globs


def test_example_stores_the_shipped_copy_with_no_network(home: Path, pima_csv: Path) -> None:
    """`data example` stores a byte-identical copy and opens no connection; fetch needs one."""
    with socket.socket() as closed:  # bound, never listening: a download from it is refused
        closed.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{closed.getsockname()[1]}/pima.csv"
        with network_calls() as fetching:
            fetched = invoke("data", "fetch", "--url", url, "--timeout", "5")
        with network_calls() as storing:
            result = invoke("data", "example")
    assert fetched.exit_code == 1
    assert f"could not download {url}: " in fetched.output
    assert "socket.connect" in fetching  # the audit hook sees a download attempt
    assert result.exit_code == 0, result.output
    assert storing == []
    assert result.output == expected_report(home, pima_csv.read_bytes())
    assert (home / "data" / DATA_FILE).read_bytes() == pima_csv.read_bytes()
    record = json.loads((home / "data" / RECORD_FILE).read_text())
    assert (record["source"], record["sha256"], record["rows"]) == (
        EXAMPLE_SOURCE, EXAMPLE_SHA256, PIMA_ROWS)


def test_if_missing_keeps_a_stored_dataset(home: Path, pima_csv: Path, tmp_path: Path) -> None:
    """`--if-missing` (what ./dev up runs) keeps an imported dataset; `example` replaces it."""
    own = tmp_path / "own.csv"  # the same rows in reverse order: valid, and other bytes
    own.write_text("".join(reversed(pima_csv.read_text().splitlines(keepends=True))))
    import_dataset(own, home / "data")
    kept = invoke("data", "example", "--if-missing")
    assert kept.exit_code == 0, kept.output
    assert kept.output == f"a dataset is already stored; keeping it: {home / 'data' / DATA_FILE}\n"
    assert (home / "data" / DATA_FILE).read_bytes() == own.read_bytes()
    replaced = invoke("data", "example")
    assert replaced.exit_code == 0, replaced.output
    assert (home / "data" / DATA_FILE).read_bytes() == pima_csv.read_bytes()


def test_if_missing_stores_the_example_in_an_empty_home(home: Path, pima_csv: Path) -> None:
    """With nothing stored, `--if-missing` stores the example."""
    result = invoke("data", "example", "--if-missing")
    assert result.exit_code == 0, result.output
    assert result.output == expected_report(home, pima_csv.read_bytes())


def test_no_dataset_message_names_the_example() -> None:
    """Training with nothing stored says that `data example` makes a dataset offline."""
    with pytest.raises(DatasetError, match=r"`modelserve data example` \(the built-in copy\)"):
        stored_dataset(Path("/nonexistent/data"))


def _package_copy(tmp_path: Path) -> Path:
    """Copy our package to a directory that can be put first on PYTHONPATH, to damage it."""
    root = tmp_path / "site"
    shutil.copytree(Path(modelserve.__file__).parent, root / "modelserve",
                    ignore=shutil.ignore_patterns("__pycache__"), symlinks=True)
    return root


def _run_copy(root: Path, home: Path) -> subprocess.CompletedProcess:
    """Run `python -m modelserve data example` from the copy in a fresh process."""
    env = dict(os.environ, MODELSERVE_HOME=str(home), PYTHONPATH=str(root))
    return subprocess.run([sys.executable, "-m", "modelserve", "data", "example"], env=env,
                          capture_output=True, text=True, timeout=120, check=False)


@pytest.mark.parametrize("damage", ["changed", "missing"])
def test_a_damaged_install_is_refused_in_one_line(tmp_path: Path, damage: str) -> None:
    """A changed example (still valid CSV) or a missing one is refused; nothing is stored."""
    root = _package_copy(tmp_path)
    shipped = root / "modelserve" / "model" / "examples" / EXAMPLE_FILE
    if damage == "changed":  # one label flipped: it would pass validation, not the checksum
        shipped.write_bytes(shipped.read_bytes().replace(b",50,1\n", b",50,0\n", 1))
        fragment = f"sha256 {hashlib.sha256(shipped.read_bytes()).hexdigest()} is not the shipped"
    else:
        shipped.unlink()
        fragment = "is missing from this install"
    result = _run_copy(root, tmp_path / "home")
    assert result.returncode == 1, result.stdout + result.stderr
    assert result.stderr.startswith(f"Error: {EXAMPLE_SOURCE}"), result.stderr
    assert fragment in result.stderr and result.stderr.count("\n") == 1, result.stderr
    assert not (tmp_path / "home" / "data").exists()
