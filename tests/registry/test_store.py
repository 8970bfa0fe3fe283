"""The registry on a real file system, with real processes racing and being killed."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from modelserve.model.bundle import MODEL_FILE, BundleError
from modelserve.registry import Registry, RegistryError

Spawn = Callable[..., subprocess.Popen[str]]
EVENT_KEYS = {"at", "action", "version", "previous", "source", "reason", "user", "host", "pid"}


def wait_for(path: Path, timeout: float = 30.0) -> None:
    """Wait until a file appears (a subprocess reached a point), failing after timeout."""
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert time.monotonic() < deadline, f"{path} did not appear within {timeout}s"
        time.sleep(0.02)


def staging_entries(registry: Registry) -> list[str]:
    """Return what is left in the staging directory."""
    staging = registry.root / "staging"
    return sorted(os.listdir(staging)) if staging.is_dir() else []


def assert_nothing_visible(registry: Registry) -> None:
    """Check that no version, activation, or history is visible."""
    assert registry.list_versions() == []
    assert registry.active_version() is None
    assert registry.active_dir() is None
    assert registry.history() == []


def test_readers_of_a_missing_store_see_nothing_and_create_nothing(registry: Registry) -> None:
    assert_nothing_visible(registry)
    assert not registry.root.exists()


def test_add_list_activate_rollback_history_round_trip(registry: Registry, bundles: Any) -> None:
    (path1, v1), (path2, v2) = bundles.make(1), bundles.make(2)
    info1 = registry.add(path1, source=str(path1), reason="first")
    assert registry.add(path2, source=str(path2)).version == v2
    assert (info1.version, info1.active) == (v1, False)
    assert info1.path == registry.root / "versions" / v1
    assert info1.manifest["metrics"]["accuracy"] == pytest.approx(0.701)
    assert [info.version for info in registry.list_versions()] == [v1, v2]

    assert registry.activate(v1, source="cli", reason="go").active
    assert registry.activate(v2, source="cli").active
    assert [info.active for info in registry.list_versions()] == [False, True]
    assert registry.active_dir() == registry.root / "versions" / v2
    assert os.readlink(registry.root / "active") == f"versions/{v2}"  # relative link

    back = registry.rollback(source="cli", reason="bad model")
    assert (back.version, registry.active_version()) == (v1, v1)

    events = registry.history()
    assert [(e["action"], e["version"], e["previous"]) for e in events] == [
        ("add", v1, None),
        ("add", v2, None),
        ("activate", v1, None),
        ("activate", v2, v1),
        ("rollback", v1, v2),
    ]
    assert all(set(event) == EVENT_KEYS for event in events)
    assert (events[0]["source"], events[0]["reason"]) == (str(path1), "first")
    assert (events[4]["source"], events[4]["reason"]) == ("cli", "bad model")
    assert events[0]["at"].endswith("+00:00") and events[0]["pid"] == os.getpid()


def test_stored_version_holds_the_listed_files_and_survives_its_source(
    registry: Registry, bundles: Any
) -> None:
    path, version = bundles.make(1)
    (path / "notes.txt").write_text("not part of the bundle")
    info = registry.add(path, source="test")
    assert sorted(os.listdir(info.path)) == ["manifest.json", MODEL_FILE]
    (path / MODEL_FILE).write_bytes(b"overwritten later")
    assert (info.path / MODEL_FILE).read_bytes().startswith(b"model number 1")


def test_adding_the_same_version_again_copies_and_records_nothing(
    registry: Registry, bundles: Any, tmp_path: Path, spawn: Spawn
) -> None:
    path, version = bundles.make(1)
    first = registry.add(path, source="a")
    twin_dir = tmp_path / "twin"
    assert bundles.make_at(twin_dir, 1) == version  # same content elsewhere: same version
    again = registry.add(twin_dir, source="b")
    assert again == first
    assert [event["action"] for event in registry.history()] == ["add"]
    assert os.listdir(registry.root / "versions") == [version]


def test_activating_the_active_version_records_nothing(registry: Registry, bundles: Any) -> None:
    path, version = bundles.make(1)
    registry.add(path, source="test")
    registry.activate(version, source="cli")
    assert registry.activate(version[:6], source="cli").active
    assert [event["action"] for event in registry.history()] == ["add", "activate"]


def test_prefixes_resolve_when_unique_and_are_refused_otherwise(
    registry: Registry, bundles: Any
) -> None:
    (path_a, va), (path_b, vb) = bundles.colliding_pair()
    assert va[:4] == vb[:4] and va != vb
    registry.add(path_a, source="test")
    registry.add(path_b, source="test")

    assert registry.resolve(va) == va
    assert registry.resolve(va.upper()) == va
    distinct = next(n for n in range(5, 13) if va[:n] != vb[:n])
    assert registry.resolve(vb[:distinct]) == vb
    with pytest.raises(RegistryError, match="is ambiguous: it matches") as error:
        registry.resolve(va[:4])
    assert va in str(error.value) and vb in str(error.value)
    with pytest.raises(RegistryError, match="unknown model version 'ffffffff'"):
        registry.resolve("ffffffff" if not va.startswith("ffff") else "00000000")


@pytest.mark.parametrize(
    "text", ["../x", "..", "../../etc/passwd", f"{'a' * 4}/../..", "/etc", "abc", "", "zzzz"]
)
def test_anything_but_hex_is_not_a_version(registry: Registry, bundles: Any, text: str) -> None:
    path, version = bundles.make(1)
    registry.add(path, source="test")
    with pytest.raises(RegistryError, match="is not a model version"):
        registry.resolve(text)
    with pytest.raises(RegistryError, match="is not a model version"):
        registry.activate(text, source="cli")
    assert registry.active_version() is None


def test_a_model_file_with_a_flipped_byte_is_refused(registry: Registry, bundles: Any) -> None:
    path, _version = bundles.make(1)
    data = bytearray((path / MODEL_FILE).read_bytes())
    data[10] ^= 0x01
    (path / MODEL_FILE).write_bytes(bytes(data))
    with pytest.raises(BundleError, match="model.keras does not match its sha256") as error:
        registry.add(path, source="test")
    assert str(path) in str(error.value)
    assert_nothing_visible(registry)


def test_an_edited_manifest_is_refused(registry: Registry, bundles: Any) -> None:
    path, _version = bundles.make(1)
    manifest = json.loads((path / "manifest.json").read_text())
    manifest["metrics"]["accuracy"] = 0.99
    (path / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(BundleError, match="the manifest was edited"):
        registry.add(path, source="test")
    assert_nothing_visible(registry)


def test_a_bundle_the_checker_refuses_leaves_nothing_and_names_the_bundle(
    registry_root: Path, bundles: Any
) -> None:
    def refusing_checker(staged: Path) -> None:
        (staged / "plan.npz").write_bytes(b"half written")
        raise BundleError(f"{staged}: the model does not load (test)")

    registry = Registry(registry_root, checker=refusing_checker)
    path, _version = bundles.make(1)
    with pytest.raises(BundleError) as error:
        registry.add(path, source="test")
    assert str(error.value) == f"{path}: the model does not load (test)"
    assert_nothing_visible(registry)
    assert staging_entries(registry) == []


def test_the_checker_output_is_stored_with_the_version(
    registry_root: Path, bundles: Any, checker: Callable[[Path], None]
) -> None:
    def planning_checker(staged: Path) -> None:
        checker(staged)
        (staged / "plan.npz").write_bytes(b"derived")

    path, version = bundles.make(1)
    info = Registry(registry_root, checker=planning_checker).add(path, source="test")
    assert (info.path / "plan.npz").read_bytes() == b"derived"


def _add_three(registry: Registry, bundles: Any) -> list[str]:
    """Add bundles 1, 2 and 3; return their versions in that order."""
    versions = []
    for number in (1, 2, 3):
        path, version = bundles.make(number)
        registry.add(path, source="test")
        versions.append(version)
    return versions


def test_rollback_walks_back_the_activations(registry: Registry, bundles: Any) -> None:
    v1, v2, v3 = _add_three(registry, bundles)
    with pytest.raises(RegistryError, match="^nothing to roll back to"):
        registry.rollback(source="cli")
    for version in (v1, v2, v3):
        registry.activate(version, source="cli")
    assert registry.rollback(source="cli").version == v2
    assert registry.rollback(source="cli").version == v1
    with pytest.raises(RegistryError, match="^nothing to roll back to"):
        registry.rollback(source="cli")
    registry.activate(v3, source="cli")  # activating again pushes: rollback returns to v1
    assert registry.rollback(source="cli").version == v1
    assert registry.active_version() == v1


def test_fallbacks_walk_back_the_activations_and_damage_names_the_file(
    registry: Registry, bundles: Any
) -> None:
    """What a worker serves when the active version cannot be loaded, and why it cannot."""
    v1, v2, v3 = _add_three(registry, bundles)
    for version in (v1, v2, v1, v3):
        registry.activate(version, source="cli")
    assert registry.fallbacks(v3) == [v1, v2]  # most recent first, each once
    assert registry.fallbacks(v1) == [v3, v2]
    assert registry.damage(v3) is None
    model = registry.root / "versions" / v3 / MODEL_FILE
    model.write_bytes(b"X" + model.read_bytes()[1:])
    damage = registry.damage(v3)
    assert damage is not None and damage.endswith(
        f"{v3}: {MODEL_FILE} does not match its sha256 in the manifest (corrupt?)")


def test_a_torn_last_history_line_is_skipped_and_repaired(registry: Registry, bundles: Any) -> None:
    (path1, v1), (path2, v2) = bundles.make(1), bundles.make(2)
    registry.add(path1, source="test")
    registry.add(path2, source="test")
    registry.activate(v1, source="cli")
    history_file = registry.root / "history.jsonl"
    with open(history_file, "ab") as stream:
        stream.write(b'{"at": "2026-01-01T00:00:00+00:00", "action": "activ')  # killed mid-write
    assert [event["action"] for event in registry.history()] == ["add", "add", "activate"]

    registry.activate(v2, source="cli")
    lines = history_file.read_text().splitlines()
    assert [json.loads(line)["action"] for line in lines] == ["add", "add", "activate", "activate"]
    assert registry.rollback(source="cli").version == v1


def _append_event(registry: Registry, **fields: object) -> None:
    """Append an event as a process would that died right after writing it."""
    event = {"at": "2026-01-01T00:00:00.000+00:00", "source": "cli", "reason": "", **fields}
    with open(registry.root / "history.jsonl", "a") as stream:
        stream.write(json.dumps(event) + "\n")


def test_an_activation_interrupted_before_its_switch_is_undone(
    registry: Registry, bundles: Any
) -> None:
    v1, v2, v3 = _add_three(registry, bundles)
    registry.activate(v1, source="cli")
    registry.activate(v2, source="cli")
    _append_event(registry, action="activate", version=v3, previous=v2)  # then killed
    assert registry.active_version() == v2  # the link is the truth

    assert registry.rollback(source="cli").version == v1  # not v2: v3 was never served
    recover = registry.history()[-2]
    assert (recover["action"], recover["version"], recover["undo"]) == ("recover", v2, True)
    assert recover["reason"].startswith("recovered: the activate to")


def test_a_rollback_interrupted_before_its_switch_is_undone(
    registry: Registry, bundles: Any
) -> None:
    versions = _add_three(registry, bundles)
    for version in versions:
        registry.activate(version, source="cli")
    _append_event(registry, action="rollback", version=versions[1], previous=versions[2])
    assert registry.rollback(source="cli").version == versions[1]
    assert registry.rollback(source="cli").version == versions[0]


def test_a_link_changed_outside_is_recorded_as_a_recovery(registry: Registry, bundles: Any) -> None:
    (path1, v1), (path2, v2) = bundles.make(1), bundles.make(2)
    registry.add(path1, source="test")
    registry.add(path2, source="test")
    registry.activate(v1, source="cli")
    os.symlink(f"versions/{v2}", registry.root / "other")
    os.replace(registry.root / "other", registry.root / "active")  # an admin's `ln -sfn`

    assert registry.rollback(source="cli").version == v1
    actions = [(e["action"], e["version"]) for e in registry.history()[-2:]]
    assert actions == [("recover", v2), ("rollback", v1)]


def test_a_leftover_activation_link_is_removed_and_recorded(
    registry: Registry, bundles: Any
) -> None:
    (path1, v1), (path2, v2) = bundles.make(1), bundles.make(2)
    registry.add(path1, source="test")
    registry.add(path2, source="test")
    registry.activate(v1, source="cli")
    os.symlink(f"versions/{v2}", registry.root / ".active-tmp-0123456789abcdef")  # then killed
    registry.activate(v2, source="cli")
    assert not list(registry.root.glob(".active-tmp-*"))
    cleanup = registry.history()[-2]
    assert (cleanup["action"], cleanup["version"], cleanup["previous"]) == ("cleanup", None, v1)
    assert cleanup["reason"] == ("recovered: removed .active-tmp-0123456789abcdef (left by an "
                                 "activation interrupted before its switch)")
    assert registry.rollback(source="cli").version == v1  # replaying ignores the cleanup


def test_a_version_renamed_in_without_its_add_event_is_recorded(
    registry: Registry, bundles: Any
) -> None:
    (path1, v1), (path2, v2) = bundles.make(1), bundles.make(2)
    registry.add(path1, source="test")
    history_file = registry.root / "history.jsonl"
    history_file.write_text("")  # as if killed between the rename and the append
    registry.add(path2, source="test")
    adds = [(e["version"], e["source"]) for e in registry.history() if e["action"] == "add"]
    assert adds == [(v1, "recovery"), (v2, "test")]


KILLED_ADD = """
marker = Path(sys.argv[3])
def slow_checker(staged):
    verify_integrity(staged)
    (staged / "plan.npz").write_bytes(b"partial")
    marker.write_text(str(staged))
    time.sleep(60)
Registry(root, checker=slow_checker).add(Path(sys.argv[2]), source="doomed")
"""


def test_kill_9_in_the_middle_of_add_leaves_no_version(
    registry: Registry, bundles: Any, tmp_path: Path, spawn: Spawn
) -> None:
    path, version = bundles.make(1)
    marker = tmp_path / "checking"
    process = spawn(KILLED_ADD, str(registry.root), str(path), str(marker))
    try:
        wait_for(marker)
        os.kill(process.pid, signal.SIGKILL)
    finally:
        process.kill()
        process.communicate()
    assert process.returncode == -signal.SIGKILL
    assert Path(marker.read_text()).is_dir()  # the half-done staging copy is really there
    assert_nothing_visible(registry)

    info = registry.add(path, source="retry")
    assert info.version == version
    assert staging_entries(registry) == []
    cleanup, add = registry.history()
    assert (add["action"], add["source"]) == ("add", "retry")
    # The next mutation says what it removed, in the history and to its caller.
    staged = Path(marker.read_text()).relative_to(registry.root)
    assert (cleanup["action"], cleanup["source"]) == ("cleanup", "recovery")
    assert cleanup["reason"] == f"recovered: removed {staged} (left by an add that was interrupted)"
    assert registry.recoveries == [cleanup["reason"]]


WAITING_ADD = """
started, release = Path(sys.argv[3]), Path(sys.argv[4])
def waiting_checker(staged):
    verify_integrity(staged)
    started.write_text(str(staged))
    while not release.exists():
        time.sleep(0.02)
Registry(root, checker=waiting_checker).add(Path(sys.argv[2]), source="slow")
"""


def test_a_slow_check_neither_blocks_activation_nor_is_cleaned_away(
    registry: Registry, bundles: Any, tmp_path: Path, spawn: Spawn
) -> None:
    (path1, v1), (path2, v2) = bundles.make(1), bundles.make(2)
    registry.add(path1, source="test")
    started, release = tmp_path / "started", tmp_path / "release"
    process = spawn(WAITING_ADD, str(registry.root), str(path2), str(started), str(release))
    try:
        wait_for(started)
        began = time.monotonic()
        registry.activate(v1, source="cli")  # runs the stale-staging cleanup, too
        assert time.monotonic() - began < 5
        assert Path(started.read_text()).is_dir()  # a live writer's staging is left alone
        release.touch()
        _out, err = process.communicate(timeout=30)
    finally:
        process.kill()
    assert process.returncode == 0, err
    assert [info.version for info in registry.list_versions()] == [v1, v2]
    assert staging_entries(registry) == []


READER = """
import hashlib, json
stop, ready = Path(sys.argv[2]), Path(sys.argv[3])
expected = set(sys.argv[4:])
registry = Registry(root)
seen = {}
while not stop.exists():
    directory = registry.active_dir()
    if directory is None or not (root / "active" / "manifest.json").is_file():
        sys.exit("the active model was missing")
    manifest = json.loads((directory / "manifest.json").read_text())
    digest = hashlib.sha256((directory / "model.keras").read_bytes()).hexdigest()
    if manifest["version"] != directory.name or directory.name not in expected:
        sys.exit(f"mixed state: {directory} holds {manifest['version']}")
    if digest != manifest["files"]["model.keras"]["sha256"]:
        sys.exit(f"mixed state: {directory} model does not match its manifest")
    seen[directory.name] = seen.get(directory.name, 0) + 1
    ready.touch()
print(json.dumps(seen))
"""


def test_readers_never_see_a_missing_or_mixed_model_while_it_flips(
    registry: Registry, bundles: Any, tmp_path: Path, spawn: Spawn
) -> None:
    (path1, v1), (path2, v2) = bundles.make(1), bundles.make(2)
    registry.add(path1, source="test")
    registry.add(path2, source="test")
    registry.activate(v1, source="cli")
    stop, ready = tmp_path / "stop", tmp_path / "ready"
    reader = spawn(READER, str(registry.root), str(stop), str(ready), v1, v2)
    try:
        wait_for(ready)
        for flip in range(200):
            registry.activate(v2 if flip % 2 == 0 else v1, source="flipper")
            assert reader.poll() is None, reader.communicate()[1]
        stop.touch()
        out, err = reader.communicate(timeout=30)
    finally:
        reader.kill()
    assert reader.returncode == 0, err
    seen = json.loads(out)
    assert set(seen) == {v1, v2}, seen


ACTIVATOR = """
go, ready = Path(sys.argv[2]), Path(sys.argv[5])
first, second = sys.argv[3], sys.argv[4]
registry = Registry(root)
ready.touch()
while not go.exists():
    time.sleep(0.005)
for i in range(25):
    registry.activate(first if i % 2 == 0 else second, source=f"proc {first}", reason=str(i))
"""


def test_concurrent_activations_are_all_recorded_in_order(
    registry: Registry, bundles: Any, tmp_path: Path, spawn: Spawn
) -> None:
    versions = []
    for number in (1, 2, 3, 4):
        path, version = bundles.make(number)
        registry.add(path, source="test")
        versions.append(version)
    go, ready = tmp_path / "go", [tmp_path / "ready-a", tmp_path / "ready-b"]
    # Disjoint pairs, alternated: no activation can be a no-op, so each must leave an event.
    processes = [
        spawn(ACTIVATOR, str(registry.root), str(go), *versions[0:2], str(ready[0])),
        spawn(ACTIVATOR, str(registry.root), str(go), *versions[2:4], str(ready[1])),
    ]
    for path in ready:  # start both at once, so that they really contend for the lock
        wait_for(path)
    go.touch()
    for process in processes:
        _out, err = process.communicate(timeout=60)
        assert process.returncode == 0, err

    lines = (registry.root / "history.jsonl").read_text().splitlines()
    events = [json.loads(line) for line in lines]  # every line parses
    activations = [event for event in events if event["action"] == "activate"]
    assert len(activations) == 50
    by_pid = {process.pid: 0 for process in processes}
    for event in activations:
        by_pid[event["pid"]] += 1
    assert list(by_pid.values()) == [25, 25]
    previous = [None] + [event["version"] for event in activations[:-1]]
    assert [event["previous"] for event in activations] == previous  # serialized by the lock
    assert registry.active_version() == activations[-1]["version"]
    assert not [event for event in events if event["action"] == "recover"]
