"""Scored CSV results on disk: per-owner folders, a disk quota, an expiry: no Flask here.

A result lives at results/<owner>/<id>.csv, where <owner> is a hash of the random owner id
kept in the uploader's session: another session computes another folder, so it cannot find
the file even with its link. A result older than its lifetime is deleted when it is asked
for and at every upload.
"""

from __future__ import annotations

import hashlib
import re
import secrets
import time
from dataclasses import dataclass
from pathlib import Path

RESULT_ID = re.compile(r"[0-9a-f]{32}")
OWNER_DIR = re.compile(r"[0-9a-f]{32}")
COUNT_CHUNK = 1 << 20


class QuotaExceeded(Exception):
    """The results folder holds as much as the quota allows."""


@dataclass(frozen=True)
class ResultStore:
    """The results folder and its rules."""

    root: Path
    quota_bytes: int
    lifetime_seconds: int

    def owner_dir(self, owner: str) -> Path:
        """The folder of one session's results (named by a hash of its owner id)."""
        return self.root / hashlib.sha256(owner.encode()).hexdigest()[:32]

    def new_path(self, owner: str) -> tuple[str, Path]:
        """A fresh result id and where its file goes."""
        result_id = secrets.token_hex(16)
        folder = self.owner_dir(owner)
        folder.mkdir(parents=True, exist_ok=True)
        return result_id, folder / f"{result_id}.csv"

    def find(self, owner: str | None, result_id: str, now: float | None = None) -> Path | None:
        """The owner's unexpired result of this id; an expired one is deleted on the way."""
        if not owner or not RESULT_ID.fullmatch(result_id):
            return None
        path = self.owner_dir(owner) / f"{result_id}.csv"
        try:
            age = (now or time.time()) - path.stat().st_mtime
        except FileNotFoundError:
            return None
        if age > self.lifetime_seconds:
            path.unlink(missing_ok=True)
            return None
        return path

    def files(self) -> list[Path]:
        """Every stored result (scratch folders of uploads in progress are not results)."""
        return [path for folder in self.root.glob("*") if OWNER_DIR.fullmatch(folder.name)
                for path in folder.glob("*.csv")]

    def remove_expired(self, now: float | None = None) -> int:
        """Delete results past their lifetime; return how many."""
        cutoff = (now or time.time()) - self.lifetime_seconds
        removed = 0
        for path in self.files():
            try:
                if path.stat().st_mtime < cutoff:
                    path.unlink()
                    removed += 1
            except FileNotFoundError:
                continue
        return removed

    def used_bytes(self) -> int:
        """The bytes the stored results take."""
        total = 0
        for path in self.files():
            try:
                total += path.stat().st_size
            except FileNotFoundError:
                continue
        return total

    def check_room(self, adding: int = 0) -> None:
        """Refuse when the results (plus `adding` bytes) would pass the quota."""
        if self.used_bytes() + adding > self.quota_bytes:
            raise QuotaExceeded(
                f"the results storage is full ({self.quota_bytes} bytes); try again when older "
                f"results expire (after {self.lifetime_seconds} s)")


def count_rows(path: Path, has_header: bool) -> int:
    """An upper bound on the data rows of a CSV file: its lines, counted in chunks.

    Blank lines and quoted cells spanning lines count too, so a file under the bound is
    certainly within the limit (a numeric table has neither); counting 16 MiB takes ~10 ms.
    """
    lines, last = 0, b""
    with open(path, "rb") as stream:
        while chunk := stream.read(COUNT_CHUNK):
            lines += chunk.count(b"\n")
            last = chunk[-1:]
    if last not in (b"\n", b""):
        lines += 1  # a last line without its newline
    return max(0, lines - (1 if has_header else 0))
