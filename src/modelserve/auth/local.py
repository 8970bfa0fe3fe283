"""The serving account's own token, for its local processes (the post-receive hook).

The hook confirms a new model by calling /api/v1/predict, which needs a credential when the
stack is exposed. It reads auth/local-token (0600, made on first use, scope predict): any
process that can read it could already read the token store and the registry, so the file
gives the serving account's processes nothing they did not have, and gives others nothing.
"""

from __future__ import annotations

import os
from pathlib import Path

from modelserve.auth.store import TokenStore, auth_dir
from modelserve.auth.tokens import Scope, looks_like_token
from modelserve.errors import UserError
from modelserve.fsutil import atomic_write_text

LOCAL_TOKEN_FILE = "local-token"  # noqa: S105 (a file name)
LOCAL_TOKEN_NAME = "local-serving-account"  # noqa: S105 (the token's name)


def local_token(home: Path) -> str:
    """The local token, made (or remade, if revoked) on first use."""
    store = TokenStore(home)
    path = auth_dir(home) / LOCAL_TOKEN_FILE
    try:
        token = path.read_text().strip()
    except FileNotFoundError:
        token = ""
    if looks_like_token(token) and store.find(token) is not None:
        return token
    if any(r.name == LOCAL_TOKEN_NAME and r.revoked is None for r in store.records()):
        store.revoke(LOCAL_TOKEN_NAME)  # its file was lost or replaced: make a new pair
    token, _record = store.create(LOCAL_TOKEN_NAME, Scope.PREDICT.value)
    atomic_write_text(path, token + "\n")  # mkstemp: 0600 from the start
    os.chmod(path, 0o600)
    return token


def local_auth_headers(home: Path) -> dict[str, str]:
    """An Authorization header with the local token; none if the store cannot be used."""
    try:
        return {"Authorization": f"Bearer {local_token(home)}"}
    except (OSError, UserError):  # unreadable store: ask anyway; an open stack still answers
        return {}
