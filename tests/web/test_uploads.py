"""Result files: per-owner folders, expiry at download, the quota, the row count bound."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from modelserve.web.uploads import QuotaExceeded, ResultStore, count_rows


def _store(tmp_path: Path, quota: int = 10_000, lifetime: int = 3600) -> ResultStore:
    return ResultStore(tmp_path / "results", quota, lifetime)


def test_only_the_owner_finds_a_result(tmp_path: Path):
    """Another owner id, no owner, or a malformed id: not found."""
    store = _store(tmp_path)
    result_id, path = store.new_path("owner-a")
    path.write_text("probability,label\n0.5,1\n")
    assert store.find("owner-a", result_id) == path
    assert store.find("owner-b", result_id) is None
    assert store.find(None, result_id) is None
    assert store.find("owner-a", "../" + result_id) is None
    assert path.parent.name != "owner-a" and len(path.parent.name) == 32  # a hash of it


def test_an_expired_result_is_deleted_when_asked_for(tmp_path: Path):
    """Age is checked at download: an old file answers nothing and is gone afterwards."""
    store = _store(tmp_path, lifetime=60)
    result_id, path = store.new_path("owner")
    path.write_text("x\n")
    old = time.time() - 61
    os.utime(path, (old, old))
    assert store.find("owner", result_id) is None and not path.exists()


def test_sweep_and_quota(tmp_path: Path):
    """remove_expired deletes only old files; check_room refuses past the quota."""
    store = _store(tmp_path, quota=100, lifetime=60)
    _, fresh = store.new_path("a")
    fresh.write_bytes(b"x" * 60)
    _, stale = store.new_path("b")
    stale.write_bytes(b"x" * 30)
    os.utime(stale, (time.time() - 120, time.time() - 120))
    (store.root / ".upload-scratch").mkdir()
    (store.root / ".upload-scratch" / "upload.csv").write_bytes(b"x" * 500)  # not a result
    assert store.used_bytes() == 90
    store.check_room()
    with pytest.raises(QuotaExceeded, match="full"):
        store.check_room(adding=11)
    assert store.remove_expired() == 1 and not stale.exists() and fresh.exists()


@pytest.mark.parametrize(("text", "header", "rows"), [
    (b"1,2\n3,4\n", False, 2), (b"1,2\n3,4", False, 2), (b"a,b\n1,2\n", True, 1),
    (b"", False, 0), (b"a,b\n", True, 0), (b"1,2\r\n3,4\r\n", False, 2),
])
def test_count_rows_bounds_the_data_rows(tmp_path: Path, text: bytes, header: bool, rows: int):
    """Lines, less the header, with or without a final newline."""
    path = tmp_path / "f.csv"
    path.write_bytes(text)
    assert count_rows(path, header) == rows


def test_count_rows_is_fast_on_a_full_upload(tmp_path: Path):
    """16 MiB of rows counted in well under a second, across chunk boundaries."""
    path = tmp_path / "big.csv"
    line = b"6,148,72,35,0,33.6,0.627,50\n"
    path.write_bytes(line * ((16 << 20) // len(line)))
    started = time.perf_counter()
    assert count_rows(path, False) == (16 << 20) // len(line)
    assert time.perf_counter() - started < 1.0
