"""The token store: $MODELSERVE_HOME/auth/tokens.json, 0600, written atomically under a lock.

Every web process reads it and re-reads it when the file changes (a new inode after each
atomic write), so a revocation counts from the next request on, in every process.
"""

from __future__ import annotations

import fcntl
import json
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from modelserve.auth import tokens
from modelserve.auth.tokens import TokenRecord
from modelserve.errors import UserError
from modelserve.fsutil import atomic_write_text

AUTH_DIR = "auth"
TOKENS_FILE = "tokens.json"
LOCK_FILE = ".tokens.lock"


class StoreError(UserError):
    """The token file cannot be read: every token is refused until it is repaired."""


def auth_dir(home: Path) -> Path:
    """The directory of the token store (0700)."""
    return home / AUTH_DIR


class TokenStore:
    """The tokens of one MODELSERVE_HOME: create, list, revoke, and find by token."""

    def __init__(self, home: Path):
        self.path = auth_dir(home) / TOKENS_FILE
        self._cache: tuple[tuple | None, list[TokenRecord]] = (None, [])
        self._cache_lock = threading.Lock()

    def records(self) -> list[TokenRecord]:
        """Every record, re-read only when the file changed since the last call."""
        stamp = self._stamp()
        with self._cache_lock:
            if stamp != self._cache[0]:
                self._cache = (stamp, self._read() if stamp else [])
            return self._cache[1]

    def find(self, token: str) -> TokenRecord | None:
        """The usable record of a presented token, or None."""
        return tokens.find(self.records(), token, tokens.utcnow())

    def by_id(self, record_id: str) -> TokenRecord | None:
        """The usable record with this id (what a login session remembers), or None."""
        now = tokens.utcnow()
        return next((r for r in self.records() if r.id == record_id and r.usable(now)), None)

    def create(self, name: str, scope: str,
               expires_days: int | None = None) -> tuple[str, TokenRecord]:
        """Make a token; return it (to be shown once) and its record."""
        token = tokens.new_token()
        record = tokens.make_record(name, scope, expires_days, tokens.utcnow(), token)
        with self._locked():
            current = self._read()
            if any(r.name == name and r.revoked is None for r in current):
                raise UserError(f"a token named {name!r} exists; revoke it first or pick "
                                "another name")
            self._write([*current, record])
        return token, record

    def revoke(self, name: str) -> TokenRecord:
        """Revoke the token of this name (the record stays, marked revoked)."""
        tokens.check_name(name)
        with self._locked():
            current = self._read()
            live = [r for r in current if r.name == name and r.revoked is None]
            if not live:
                raise UserError(f"no unrevoked token named {name!r}; `modelserve tokens list` "
                                "shows them")
            now = tokens.utcnow()
            self._write([r.revoke(now) if r in live else r for r in current])
        return live[0].revoke(now)

    @contextmanager
    def _locked(self) -> Iterator[None]:
        """Hold the store's lock: one writer at a time, reading what the last one wrote."""
        directory = self.path.parent
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.chmod(directory, 0o700)
        descriptor = os.open(directory / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX)
            yield
        finally:
            os.close(descriptor)

    def _stamp(self) -> tuple | None:
        """What changes when the file is rewritten (None while it does not exist)."""
        try:
            info = os.stat(self.path)
        except FileNotFoundError:
            return None
        return (info.st_ino, info.st_mtime_ns, info.st_size)

    def _read(self) -> list[TokenRecord]:
        """Parse the file; a damaged one is an error, never an empty store."""
        try:
            document = json.loads(self.path.read_text())
        except FileNotFoundError:
            return []
        except (OSError, ValueError) as error:
            raise StoreError(f"the token store cannot be read ({type(error).__name__})") from None
        try:
            return [tokens.from_json(item) for item in document["tokens"]]
        except (KeyError, TypeError, ValueError):
            raise StoreError("the token store is damaged; restore auth/tokens.json") from None

    def _write(self, records: list[TokenRecord]) -> None:
        """Replace the file atomically, readable by this account only."""
        text = json.dumps({"tokens": [tokens.to_json(r) for r in records]}, indent=2) + "\n"
        atomic_write_text(self.path, text)  # mkstemp: created 0600
        os.chmod(self.path, 0o600)
