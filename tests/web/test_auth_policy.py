"""Tokens, scopes, expiry, modes and the token store, without any server process."""

from __future__ import annotations

import json
import os
import stat
import threading
from datetime import timedelta
from pathlib import Path

import pytest

from modelserve.auth import policy, tokens
from modelserve.auth.local import LOCAL_TOKEN_FILE, local_auth_headers, local_token
from modelserve.auth.policy import AuthMode
from modelserve.auth.store import StoreError, TokenStore
from modelserve.auth.tokens import Scope
from modelserve.errors import UserError
from modelserve.web.api import without_paths


def test_tokens_are_256_random_bits_with_a_prefix():
    """Each token is new, has the documented shape, and is stored only as its sha256."""
    made = {tokens.new_token() for _ in range(200)}
    assert len(made) == 200
    assert all(tokens.looks_like_token(t) and t.startswith("mst_") for t in made)
    token = made.pop()
    assert len(tokens.digest(token)) == 64 and token not in tokens.digest(token)


def test_find_needs_the_exact_token_and_a_usable_record():
    """A near miss, another shape, a revoked or expired record: no match."""
    now = tokens.utcnow()
    token = tokens.new_token()
    record = tokens.make_record("alice", "predict", 1, now, token)
    assert tokens.find([record], token, now) == record
    assert tokens.find([record], token[:-1] + ("A" if token[-1] != "A" else "B"), now) is None
    assert tokens.find([record], "Bearer " + token, now) is None
    assert tokens.find([record.revoke(now)], token, now) is None
    assert tokens.find([record], token, now + timedelta(days=1, seconds=1)) is None
    assert record.state(now + timedelta(days=2)) == "expired"


@pytest.mark.parametrize(("granted", "needed", "allowed"), [
    (Scope.PREDICT, Scope.PREDICT, True), (Scope.PREDICT, Scope.OPERATE, False),
    (Scope.OPERATE, Scope.PREDICT, True), (Scope.OPERATE, Scope.OPERATE, True),
])
def test_operate_includes_predict(granted, needed, allowed):
    """`operate` may do everything; `predict` only what needs predict."""
    assert granted.allows(needed) is allowed


@pytest.mark.parametrize(("endpoint", "needed"), [
    ("api.live", None), ("api.ready", None), ("auth.login", None), ("static", None),
    ("api.predict_v1", Scope.PREDICT), ("api.infer", Scope.PREDICT), ("ui.index", Scope.PREDICT),
    ("ui.download", Scope.PREDICT), ("api.model_metadata", Scope.PREDICT),
    ("api.prometheus_metrics", Scope.OPERATE), ("ui.models", Scope.OPERATE),
    (None, Scope.PREDICT),  # an unknown path tells a stranger nothing: 401 first
])
def test_scope_of_each_endpoint(endpoint, needed):
    """Probes and the login are open, /metrics and /models need operate, the rest predict."""
    assert policy.needed_scope(endpoint) == needed


@pytest.mark.parametrize(("mode", "host", "resolved"), [
    ("auto", "127.0.0.1", AuthMode.OFF), ("auto", "127.0.0.2", AuthMode.OFF),
    ("auto", "::1", AuthMode.OFF), ("auto", "localhost", AuthMode.OFF),
    ("auto", "0.0.0.0", AuthMode.REQUIRED), ("auto", "", AuthMode.REQUIRED),  # noqa: S104
    ("auto", "10.1.2.3", AuthMode.REQUIRED), ("auto", "::", AuthMode.REQUIRED),
    ("auto", "server.example", AuthMode.REQUIRED), ("AUTO", "::ffff:127.0.0.1", AuthMode.OFF),
    ("required", "127.0.0.1", AuthMode.REQUIRED), ("off", "0.0.0.0", AuthMode.OFF),  # noqa: S104
])
def test_auto_means_required_off_loopback(mode, host, resolved):
    """`auto` resolves from the listen address; explicit modes stay."""
    assert policy.resolve_mode(policy.parse_mode(mode), host) is resolved


def test_unresolved_auto_trusts_only_loopback_peers_and_bad_modes_are_refused():
    """Started by hand (auto unresolved): loopback peers go free, others authenticate."""
    assert not policy.required_for_request(AuthMode.AUTO, "127.0.0.1")
    assert policy.required_for_request(AuthMode.AUTO, "192.0.2.7")
    assert policy.required_for_request(AuthMode.AUTO, None)
    assert policy.required_for_request(AuthMode.REQUIRED, "127.0.0.1")
    with pytest.raises(UserError, match="use auto, required or off"):
        policy.parse_mode("yes")


def test_rate_limit_defaults_where_auth_is_required():
    """Unset: 600/minute with auth, none on an open loopback stack; `off` is off."""
    assert policy.effective_rate_limit("", True) == "600/minute"
    assert policy.effective_rate_limit("", False) is None
    assert policy.effective_rate_limit("off", True) is None
    assert policy.effective_rate_limit("5/second", False) == "5/second"


def test_the_store_keeps_hashes_in_a_private_file(tmp_path: Path):
    """create, find, list, revoke: the file is 0600 in a 0700 folder and never holds a token."""
    store = TokenStore(tmp_path)
    token, record = store.create("ci-bot", "operate", expires_days=30)
    assert store.find(token) == record and record.expires is not None
    text = store.path.read_text()
    assert token not in text and tokens.digest(token) in text
    assert stat.S_IMODE(store.path.stat().st_mode) == 0o600
    assert stat.S_IMODE(store.path.parent.stat().st_mode) == 0o700
    with pytest.raises(UserError, match="exists"):
        store.create("ci-bot", "predict")
    with pytest.raises(UserError, match="unknown scope"):
        store.create("other", "admin")
    with pytest.raises(UserError, match="must be 1-64"):
        store.create("../../etc", "predict")
    other = TokenStore(tmp_path)  # another process's view, loaded before the revocation
    assert other.find(token) == record
    store.revoke("ci-bot")
    assert other.find(token) is None and other.by_id(record.id) is None  # re-read on change
    with pytest.raises(UserError, match="no unrevoked token"):
        store.revoke("ci-bot")
    assert store.create("ci-bot", "predict")[0] != token  # the name is free again


def test_concurrent_creates_lose_nothing(tmp_path: Path):
    """Writers under the lock: 20 threads creating at once leave 20 records."""
    store = TokenStore(tmp_path)
    threads = [threading.Thread(target=store.create, args=(f"t{i}", "predict"))
               for i in range(20)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(r.name for r in TokenStore(tmp_path).records()) == sorted(
        f"t{i}" for i in range(20))


def test_a_damaged_store_refuses_every_token(tmp_path: Path):
    """A garbled file is an error (one line), never an empty store or a traceback."""
    store = TokenStore(tmp_path)
    token, _ = store.create("alice", "predict")
    store.path.write_text('{"tokens": [{"name": 1}]}')
    with pytest.raises(StoreError, match="damaged"):
        store.find(token)
    store.path.write_text("{not json")
    with pytest.raises(StoreError, match="cannot be read"):
        store.records()


def test_the_local_token_is_made_once_and_remade_when_revoked(tmp_path: Path):
    """The hook's credential: a 0600 file, scope predict, the same on every call."""
    first = local_token(tmp_path)
    path = tmp_path / "auth" / LOCAL_TOKEN_FILE
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert local_token(tmp_path) == first
    store = TokenStore(tmp_path)
    assert store.find(first).scope is Scope.PREDICT
    store.revoke(store.find(first).name)
    second = local_token(tmp_path)
    assert second != first and store.find(second) is not None
    assert local_auth_headers(tmp_path) == {"Authorization": f"Bearer {second}"}
    store.path.write_text("garbage")
    assert local_auth_headers(tmp_path) == {}


def test_expiry_is_checked_at_each_use(tmp_path: Path):
    """A record whose expiry passed (rewritten in the file) no longer authenticates."""
    store = TokenStore(tmp_path)
    token, _ = store.create("short", "predict", expires_days=1)
    document = json.loads(store.path.read_text())
    document["tokens"][0]["expires"] = (tokens.utcnow() - timedelta(seconds=1)).isoformat()
    store.path.write_text(json.dumps(document))
    os.utime(store.path, ns=(1, 1))  # another stamp, as an atomic rewrite gives
    assert store.find(token) is None


def test_paths_are_cut_from_probe_texts():
    """Readiness problems keep their meaning and lose every absolute path."""
    text = ("the active version 3f is damaged: /srv/ms/home/registry/versions/3f/model.keras "
            "does not match its sha256; workers serve 2a ('/root/.ssh/id')")
    scrubbed = without_paths(text)
    assert "/srv" not in scrubbed and "/root" not in scrubbed
    assert "model.keras does not match" in scrubbed and "serve 2a" in scrubbed
    assert without_paths("ratio 1/2 at http://host/x") == "ratio 1/2 at http://host/x"
