"""Token format, hashing, scopes and expiry: pure logic, no files, no processes."""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from enum import StrEnum

from modelserve.errors import UserError

PREFIX = "mst_"  # a recognisable prefix, so that secret scanners and people spot a leaked token
TOKEN_BYTES = 32  # 256 random bits: a hash of them is all the store needs to keep
TOKEN_RE = re.compile(r"mst_[A-Za-z0-9_-]{43}")
NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
MAX_EXPIRY_DAYS = 3650


class Scope(StrEnum):
    """What a token may do: `predict` reads and scores, `operate` may do everything."""

    PREDICT = "predict"
    OPERATE = "operate"

    def allows(self, needed: Scope) -> bool:
        """Tell whether a token of this scope may do what needs `needed`."""
        return self is Scope.OPERATE or needed is Scope.PREDICT


@dataclass(frozen=True)
class TokenRecord:
    """What the store keeps of one token: never the token itself, only its sha256."""

    name: str
    scope: Scope
    digest: str  # hex sha256 of the token
    created: datetime
    expires: datetime | None = None
    revoked: datetime | None = None
    id: str = ""  # random, names the token in login sessions (it is not derived from it)

    def usable(self, now: datetime) -> bool:
        """Tell whether the token may be used at `now` (neither revoked nor expired)."""
        return self.revoked is None and (self.expires is None or now < self.expires)

    def state(self, now: datetime) -> str:
        """`valid`, `revoked` or `expired`, for listings."""
        if self.revoked is not None:
            return "revoked"
        return "valid" if self.usable(now) else "expired"

    def revoke(self, now: datetime) -> TokenRecord:
        """The same record, revoked at `now`."""
        return replace(self, revoked=self.revoked or now)


def new_token() -> str:
    """A fresh random token (shown once, then only its hash is kept)."""
    return PREFIX + secrets.token_urlsafe(TOKEN_BYTES)


def digest(token: str) -> str:
    """The hex sha256 under which a token is stored (a 256-bit secret needs no slow hash)."""
    return hashlib.sha256(token.encode()).hexdigest()


def looks_like_token(text: str) -> bool:
    """Tell whether text has a token's shape (checked before any lookup)."""
    return TOKEN_RE.fullmatch(text) is not None


def find(records: list[TokenRecord], token: str, now: datetime) -> TokenRecord | None:
    """The usable record of this token, comparing every digest in constant time."""
    if not looks_like_token(token):
        return None
    wanted = digest(token)
    found = None
    for record in records:  # no early exit: the time taken says nothing of which record matched
        if hmac.compare_digest(record.digest, wanted):
            found = record
    return found if found is not None and found.usable(now) else None


def make_record(name: str, scope: str, expires_days: int | None, now: datetime,
                token: str) -> TokenRecord:
    """A new record for `token`, refusing a bad name, scope or lifetime in one line."""
    check_name(name)
    if expires_days is not None and not 1 <= expires_days <= MAX_EXPIRY_DAYS:
        raise UserError(f"--expires-days must be between 1 and {MAX_EXPIRY_DAYS}")
    expires = now + timedelta(days=expires_days) if expires_days is not None else None
    return TokenRecord(name, parse_scope(scope), digest(token), now, expires,
                       id=secrets.token_hex(16))


def check_name(name: str) -> None:
    """Refuse a token name that is not a short plain name."""
    if not NAME_RE.fullmatch(name):
        raise UserError(f"token name {name[:40]!r} must be 1-64 letters, digits, '.', '_' or '-'")


def parse_scope(text: str) -> Scope:
    """The scope named by text, or a one-line refusal."""
    try:
        return Scope(text)
    except ValueError:
        raise UserError(f"unknown scope {text[:20]!r}: use predict or operate") from None


def utcnow() -> datetime:
    """Now, in UTC, to the second (what the store writes)."""
    return datetime.now(UTC).replace(microsecond=0)


def to_json(record: TokenRecord) -> dict:
    """The record as the store's JSON object."""
    def stamp(moment: datetime | None) -> str | None:
        return moment.isoformat() if moment else None

    return {"name": record.name, "scope": record.scope.value, "sha256": record.digest,
            "id": record.id, "created": stamp(record.created), "expires": stamp(record.expires),
            "revoked": stamp(record.revoked)}


def from_json(item: dict) -> TokenRecord:
    """A record from the store's JSON object (KeyError/ValueError on a damaged one)."""
    def moment(text: str | None) -> datetime | None:
        return datetime.fromisoformat(text) if text else None

    return TokenRecord(item["name"], Scope(item["scope"]), item["sha256"],
                       datetime.fromisoformat(item["created"]), moment(item.get("expires")),
                       moment(item.get("revoked")), item.get("id", ""))
