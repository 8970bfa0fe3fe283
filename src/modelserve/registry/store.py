"""The versioned model store on disk: add, activate, roll back, and the history of changes.

Layout under the registry root:

    versions/<version>/   a checked bundle, renamed in complete and never modified afterwards
    active                relative symlink to versions/<version>, switched with os.replace()
    history.jsonl         one JSON event per line, appended and fsynced under the lock
    staging/add-<random>/ a bundle being copied and checked, flocked by its (live) writer
    .lock                 flock held around every mutation, but never while a bundle is checked

Readers take no lock: a version becomes visible only once complete, and the link always
names exactly one version. The link is the truth of what is served; the history is made to
agree with it at the start of every mutation (see _reconcile), which also removes what a
killed writer left in staging/ and records that it did. A mutation the file system refuses
(a full disk above all) is one RegistryError that says what did and did not change.
"""

from __future__ import annotations

import errno
import fcntl
import getpass
import json
import os
import re
import secrets
import shutil
import socket
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cached_property
from pathlib import Path
from typing import Any

from modelserve.errors import UserError
from modelserve.fsutil import fsync_dir
from modelserve.model.bundle import MANIFEST_FILE, BundleError, read_manifest, verify_integrity
from modelserve.model.spec import ModelSpec, SpecError, read_spec

ACTIVE_LINK = "active"
HISTORY_FILE = "history.jsonl"
LOCK_FILE = ".lock"
MIN_PREFIX = 4
_VERSION_RE = re.compile(r"[0-9a-f]{12}")
_PREFIX_RE = re.compile(r"[0-9a-f]{4,}")  # MIN_PREFIX hex digits or more
_LINK_TMP_PREFIX = ".active-tmp-"
_NO_SPACE = (errno.ENOSPC, errno.EDQUOT)
_LEFT_BY_ADD = "left by an add that was interrupted"
_LEFT_BY_LINK = "left by an activation interrupted before its switch"
# Written into a staged version by its checker only (the plan workers score with).
PLAN_FILE = "plan.npz"
DERIVED_FILES = frozenset({PLAN_FILE})

Checker = Callable[[Path], None]
Event = dict[str, Any]


class RegistryError(UserError):
    """A registry operation that cannot be done; the message is one line meant for the user."""


@dataclass(frozen=True)
class VersionInfo:
    """One registered model version."""

    version: str
    path: Path
    manifest: dict[str, Any]
    active: bool

    @cached_property  # a frozen dataclass's __dict__ still takes it: read once per info
    def spec(self) -> ModelSpec | None:
        """The version's model spec; None when its stored manifest is damaged."""
        try:
            return read_spec(self.manifest, str(self.path / MANIFEST_FILE))
        except SpecError:
            return None

    @property
    def runtime(self) -> str:
        """How workers score it: "plan" (its check derived plan.npz) or "keras" (a graph)."""
        return "plan" if (self.path / PLAN_FILE).is_file() else "keras"


def check_with_runtime(staged: Path) -> None:
    """Check a staged bundle in the sandbox and write the plan it derived beside it."""
    # Imported here: listing or activating never needs it.
    from modelserve.sandbox.confined import check_bundle_confined

    check_bundle_confined(staged, plan_out=staged / PLAN_FILE)


class Registry:
    """A versioned model store rooted at one directory (Settings.registry_dir)."""

    def __init__(self, root: Path, checker: Checker | None = None) -> None:
        self.root = Path(root).absolute()
        self._checker = checker or check_with_runtime
        self._versions = self.root / "versions"
        self._staging = self.root / "staging"
        self._history_path = self.root / HISTORY_FILE
        # What this object's mutations repaired after an earlier crash, for the user to read.
        self.recoveries: list[str] = []

    # -- reading (no lock: everything visible is complete) ---------------------------------

    def resolve(self, version_or_prefix: str) -> str:
        """Return the full version id that a version, or a unique prefix of one, names."""
        text = version_or_prefix.strip().lower()
        if not _PREFIX_RE.fullmatch(text):
            raise RegistryError(
                f"{version_or_prefix!r} is not a model version (expected at least {MIN_PREFIX} "
                "hex digits, as shown by `modelserve models list`)"
            )
        matches = [version for version in self._version_ids() if version.startswith(text)]
        if not matches:
            raise RegistryError(f"unknown model version {text!r}; see `modelserve models list`")
        if len(matches) > 1:
            raise RegistryError(
                f"model version {text!r} is ambiguous: it matches {', '.join(matches)}"
            )
        return matches[0]

    def get(self, version: str) -> VersionInfo:
        """Describe one registered version (a unique prefix is enough)."""
        version = self.resolve(version)
        return self._info(version, self.active_version())

    def list_versions(self) -> list[VersionInfo]:
        """Return every registered version, oldest first by the manifest's created_at."""
        active = self.active_version()
        infos = [self._info(version, active) for version in self._version_ids()]
        return sorted(
            infos, key=lambda info: (str(info.manifest.get("created_at", "")), info.version)
        )

    def active_version(self) -> str | None:
        """Return the version the active link names, or None when nothing is active."""
        # Strings, not Paths: every prediction asks this (twice), and pathlib costs more
        # than the readlink itself.
        try:
            target = os.readlink(os.path.join(self.root, ACTIVE_LINK))
        except OSError:  # no link yet (or not a link at all): nothing is being served
            return None
        parts = target.split("/")
        if len(parts) == 2 and parts[0] == "versions" and _VERSION_RE.fullmatch(parts[1]):
            return parts[1]
        return None

    def active_dir(self) -> Path | None:
        """Return versions/<active>; read all of a model's files through this one path."""
        # Resolving the link once, rather than opening files through it, is what keeps a
        # reader from mixing two versions when the link is switched between two reads.
        version = self.active_version()
        if version is None:
            return None
        path = self._versions / version
        return path if path.is_dir() else None

    def history(self) -> list[Event]:
        """Return every recorded change, oldest first; an unreadable (torn) line is skipped."""
        try:
            return _parse_events(self._history_path.read_bytes())
        except FileNotFoundError:
            return []

    def damage(self, version: str) -> str | None:
        """Return why a stored version's files no longer match its manifest, or None."""
        try:
            verify_integrity(self._versions / version)
        except (BundleError, OSError) as error:
            return str(error)
        return None

    def fallbacks(self, version: str) -> list[str]:
        """Return the stored versions active before `version`, most recent first, each once."""
        # The activation stack rollback walks: what to serve when `version` cannot be loaded.
        stack, _ = _activation_stack(self.history())
        earlier: list[str] = []
        for candidate in reversed(stack):
            if candidate != version and candidate not in earlier:
                if (self._versions / candidate).is_dir():
                    earlier.append(candidate)
        return earlier

    def _version_ids(self) -> list[str]:
        """Return the ids of the complete versions, sorted."""
        try:
            names = os.listdir(self._versions)
        except FileNotFoundError:
            return []
        return sorted(name for name in names if _VERSION_RE.fullmatch(name))

    def _info(self, version: str, active: str | None) -> VersionInfo:
        """Build the VersionInfo of a stored version."""
        path = self._versions / version
        return VersionInfo(version, path, _load_manifest(path), version == active)

    # -- mutations (each under the lock) ----------------------------------------------------

    def add(self, bundle: Path, *, source: str, reason: str = "") -> VersionInfo:
        """Check a bundle and store it as a new version; a version already stored is returned."""
        bundle = Path(bundle)
        version = verify_integrity(bundle).version  # cheap refusal before copying anything
        if (self._versions / version).is_dir():
            return self.get(version)
        with self._refused(f"cannot add {bundle}", lambda: self._add_outcome(version)):
            self._add(bundle, source, reason)
        return self.get(version)

    def _add(self, bundle: Path, source: str, reason: str) -> None:
        """Stage, check and publish a bundle, leaving no staging directory behind."""
        with self._mutation():
            staged, owner_fd = self._new_staging()
        published = False
        try:
            # The slow part (copy, checker) runs without the registry lock, so an activation
            # or an emergency rollback never waits for a model to be checked.
            version = self._stage(bundle, staged)
            with self._mutation():
                if not (self._versions / version).is_dir():  # another process may have won
                    self._publish(staged, version, source, reason)
                    published = True
        finally:
            if not published:
                shutil.rmtree(staged, ignore_errors=True)
            os.close(owner_fd)

    def _add_outcome(self, version: str) -> str:
        """Say whether a failed add stored its version after all (its event then comes later)."""
        if (self._versions / version).is_dir():
            return f"{version} was stored; the next change records it in the history"
        return "nothing was added"

    def activate(
        self, version: str, *, source: str, reason: str = "", pusher: str = ""
    ) -> VersionInfo:
        """Serve a registered version from now on; activating the active one changes nothing.

        pusher: who asked, when it is not this process's account (a deploy key's name).
        """
        with self._refused(f"cannot activate {version}", self._active_outcome), self._mutation():
            version = self.resolve(version)
            current = self.active_version()
            if version != current:
                # The event is durable before the switch, so an interrupted switch is detected.
                event = _event("activate", version, current, source=source, reason=reason)
                self._append(dict(event, user=pusher, account=event["user"]) if pusher else event)
                self._switch(version)
        return self.get(version)

    def rollback(self, *, source: str, reason: str = "") -> VersionInfo:
        """Re-activate the version that was active before the current activation."""
        with self._refused("cannot roll back", self._active_outcome), self._mutation() as stack:
            if len(stack) < 2:
                raise RegistryError("nothing to roll back to: no earlier activation in the history")
            target, current = stack[-2], stack[-1]
            if not (self._versions / target).is_dir():
                raise RegistryError(f"cannot roll back to {target}: it is no longer in the store")
            self._append(_event("rollback", target, current, source=source, reason=reason))
            self._switch(target)
        return self.get(target)

    def retire(self, *, source: str, reason: str = "") -> str:
        """Stop serving this model: remove its active link (its versions stay); return what
        was served. Activating a version serves it again."""
        with self._refused("cannot retire", self._active_outcome), self._mutation():
            current = self.active_version()
            if current is None:
                raise RegistryError("nothing to retire: no version of this model is active")
            # As for an activation, the event is durable before the link goes.
            self._append(_event("retire", None, current, source=source, reason=reason))
            os.unlink(self.root / ACTIVE_LINK)
            fsync_dir(self.root)
        return current

    def record(self, action: str, version: str | None, *, source: str, reason: str = "") -> None:
        """Append an event that changes nothing served (a rollout begun or aborted)."""
        with self._refused(f"cannot record the {action}", lambda: "nothing changed"), \
                self._mutation():
            self._append(_event(action, version, self.active_version(), source=source,
                                reason=reason))

    @contextmanager
    def _mutation(self) -> Iterator[list[str]]:
        """Hold the lock, clear what crashed writers left, reconcile; yield the activation stack."""
        self._versions.mkdir(parents=True, exist_ok=True)
        self._staging.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.root / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            removed = self._remove_stale_staging()
            stack = self._reconcile()  # first: it repairs a torn history before we append
            if removed:
                self._append(_cleanup_event(removed, self.active_version()))
            yield stack
        finally:
            os.close(fd)  # closing the descriptor releases the flock

    @contextmanager
    def _refused(self, attempt: str, outcome: Callable[[], str]) -> Iterator[None]:
        """Turn a file-system refusal (a full disk above all) into one line: what did not happen."""
        try:
            yield
        except OSError as error:
            where = f" ({error.filename})" if error.filename else ""
            hint = "; free some space and try again" if error.errno in _NO_SPACE else ""
            message = f"{attempt}: {error.strerror or error}{where}; {outcome()}{hint}"
            raise RegistryError(message) from None

    def _active_outcome(self) -> str:
        """Say what is active after a failed activation or rollback."""
        return f"{self.active_version() or 'nothing'} is still active"

    def _new_staging(self) -> tuple[Path, int]:
        """Create a private staging directory, flocked so cleaners can tell its writer lives."""
        # Called under the registry lock, so no cleaner sees it before it is flocked.
        staged = self._staging / f"add-{secrets.token_hex(8)}"
        staged.mkdir()
        fd = os.open(staged, os.O_RDONLY | os.O_DIRECTORY)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BaseException:
            os.close(fd)
            staged.rmdir()
            raise
        return staged, fd

    def _remove_stale_staging(self) -> list[str]:
        """Delete staging entries whose writer died (the kernel dropped its flock with it).

        Return the names of what was removed, relative to the registry root.
        """
        removed = []
        for entry in sorted(self._staging.iterdir()):
            if entry.is_dir() and not entry.is_symlink() and _writer_alive(entry):
                continue
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry, ignore_errors=True)
            else:
                entry.unlink(missing_ok=True)
            removed.append(str(entry.relative_to(self.root)))
        for link in sorted(self.root.glob(_LINK_TMP_PREFIX + "*")):  # killed before the replace
            link.unlink(missing_ok=True)
            removed.append(link.name)
        return removed

    def _stage(self, bundle: Path, staged: Path) -> str:
        """Copy a bundle's listed files, verify the copy, check it, flush it; return its version."""
        shutil.copyfile(bundle / MANIFEST_FILE, staged / MANIFEST_FILE)
        # The copy's own manifest decides what is copied: the source may change meanwhile.
        # Files it does not list (a plan.npz lying beside the model, say) are never copied.
        for name in read_manifest(staged)["files"]:
            _check_listed_name(bundle, name)
            shutil.copyfile(bundle / name, staged / name)
        try:
            version = verify_integrity(staged).version  # what is stored is what must match
            self._checker(staged)
        except BundleError as error:
            # Name the user's bundle in the message, not our private staging directory.
            raise BundleError(str(error).replace(str(staged), str(bundle))) from None
        _fsync_tree(staged)
        return version

    def _publish(self, staged: Path, version: str, source: str, reason: str) -> None:
        """Move a checked bundle into versions/ with one rename, then record it."""
        os.rename(staged, self._versions / version)
        fsync_dir(self._versions)
        fsync_dir(self._staging)
        previous = self.active_version()
        self._append(_event("add", version, previous, source=source, reason=reason))

    def _switch(self, version: str) -> None:
        """Point the active link at a version with one atomic rename."""
        tmp = self.root / f"{_LINK_TMP_PREFIX}{secrets.token_hex(8)}"
        # Relative, so the store keeps working when mounted or moved elsewhere.
        os.symlink(Path("versions") / version, tmp)
        try:
            os.replace(tmp, self.root / ACTIVE_LINK)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        fsync_dir(self.root)

    # -- history ----------------------------------------------------------------------------

    def _reconcile(self) -> list[str]:
        """Make the history agree with the disk after a crash; return the activation stack."""
        events = self._read_history_for_append()
        stack, last = _activation_stack(events)
        real, top = self.active_version(), (stack[-1] if stack else None)
        if real != top:
            recovery = _recovery_event(real, top, last)
            self._append(recovery)
            events.append(recovery)
            stack, _ = _activation_stack(events)
        recorded = {event.get("version") for event in events if event.get("action") == "add"}
        for version in self._version_ids():
            if version not in recorded:  # killed between the rename and its add event
                reason = "recovered: found in the store without an add event (an interrupted add)"
                self._append(_event("add", version, real, source="recovery", reason=reason))
        return stack

    def _read_history_for_append(self) -> list[Event]:
        """Read the history, cutting a torn last line off so the next event starts cleanly."""
        try:
            data = self._history_path.read_bytes()
        except FileNotFoundError:
            return []
        if data and not data.endswith(b"\n"):
            # A crash mid-append. Its change never happened (the link is switched only after
            # the event is durable; an add without its event is re-recorded by _reconcile).
            keep = data.rfind(b"\n") + 1
            os.truncate(self._history_path, keep)
            data = data[:keep]
        return _parse_events(data)

    def _append(self, event: Event) -> None:
        """Append one event and make it durable before anything depends on it."""
        created = not self._history_path.exists()
        line = (json.dumps(event, sort_keys=True) + "\n").encode()
        fd = os.open(self._history_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            size = os.fstat(fd).st_size
            try:
                _write_all(fd, line)
                os.fsync(fd)
            except OSError as error:
                # A full disk may take part of the line: cut it off, so the history stays
                # whole lines (shrinking a file needs no space).
                os.ftruncate(fd, size)
                raise OSError(error.errno, error.strerror, str(self._history_path)) from None
        finally:
            os.close(fd)
        if created:
            fsync_dir(self.root)
        if event.get("source") == "recovery":
            self.recoveries.append(str(event.get("reason")))


def _activation_stack(events: list[Event]) -> tuple[list[str], Event | None]:
    """Replay the history: activate pushes, rollback pops, a recovery repairs; return the stack.

    Also return the last activate/rollback if nothing changed the stack after it, since a
    recovery may have to undo exactly that one.
    """
    stack: list[str] = []
    last: Event | None = None
    saved: tuple[int, str | None] = (0, None)  # length and top before `last`, to undo it
    for event in events:
        action, version = event.get("action"), event.get("version")
        if action in ("activate", "rollback"):
            saved, last = (len(stack), stack[-1] if stack else None), event
            if action == "rollback" and stack:
                stack.pop()
            _push(stack, version)
        elif action == "retire":  # nothing is served: a rollback has nowhere to go back to
            stack.clear()
            last = None
        elif action == "recover":
            if event.get("undo") and last is not None:
                del stack[max(saved[0] - 1, 0) :]
                _push(stack, saved[1])
            elif version is None:
                stack.clear()
            else:
                _push(stack, version)
            last = None
    return stack, last


def _push(stack: list[str], version: Any) -> None:
    """Push a version unless it is already on top (or is no version at all)."""
    if isinstance(version, str) and (not stack or stack[-1] != version):
        stack.append(version)


def _recovery_event(real: str | None, top: str | None, last: Event | None) -> Event:
    """Describe how the active link and the history disagree, as a 'recover' event."""
    # If the link still names what was active before the last change, that change was
    # recorded but interrupted before its switch: undo it rather than stack a new entry,
    # so that a later rollback goes where the user expects.
    undo = last is not None and real == last.get("previous")
    if undo and last is not None:
        reason = (
            f"recovered: the {last.get('action')} to {last.get('version')} at {last.get('at')} "
            f"was interrupted; {real or 'nothing'} stayed active"
        )
    else:
        reason = (
            f"recovered: the active link names {real or 'nothing'} but the history said "
            f"{top or 'nothing'} (changed outside modelserve?)"
        )
    return dict(_event("recover", real, top, source="recovery", reason=reason), undo=undo)


def _cleanup_event(removed: list[str], active: str | None) -> Event:
    """Describe what killed writers left behind and a mutation removed, as a 'cleanup' event."""
    # Not a 'recover': replaying the history ignores it, as it changed nothing that is served.
    what = [
        f"{name} ({_LEFT_BY_LINK if name.startswith(_LINK_TMP_PREFIX) else _LEFT_BY_ADD})"
        for name in removed
    ]
    reason = f"recovered: removed {'; '.join(what)}"
    return _event("cleanup", None, active, source="recovery", reason=reason)


def _event(
    action: str, version: str | None, previous: str | None, *, source: str, reason: str
) -> Event:
    """Build a history event: what changed, when, from which source, why, and by whom."""
    return {
        "at": datetime.now(UTC).isoformat(timespec="milliseconds"),
        "action": action,
        "version": version,
        "previous": previous,
        "source": source,
        "reason": reason,
        "user": _user(),
        "host": socket.gethostname(),
        "pid": os.getpid(),
    }


def _user() -> str:
    """Return the login name, or the uid where there is none (e.g. in a container)."""
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return str(os.getuid())


def _parse_events(data: bytes) -> list[Event]:
    """Parse JSON lines, skipping any that do not parse (a torn write from a crash)."""
    events = []
    for line in data.splitlines():
        try:
            event = json.loads(line)
        except ValueError:
            continue
        if isinstance(event, dict):
            events.append(event)
    return events


def _load_manifest(version_dir: Path) -> dict[str, Any]:
    """Read a stored manifest; a damaged one reads as empty rather than hiding the others."""
    try:
        manifest = json.loads((version_dir / MANIFEST_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return manifest if isinstance(manifest, dict) else {}


def _writer_alive(directory: Path) -> bool:
    """Tell whether a staging directory's writer still holds its flock."""
    try:
        fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False


def _write_all(fd: int, data: bytes) -> None:
    """Write every byte (os.write may write part and report the rest's error on the next call)."""
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def _check_listed_name(bundle: Path, name: str) -> None:
    """Refuse a manifest entry that is not a plain name, or names a file only we derive."""
    if Path(name).name != name or name.startswith("."):
        raise BundleError(f"{bundle}: file name {name!r} in the manifest is not a plain name")
    if name in DERIVED_FILES:
        # The scoring plan answers every request without Keras: if it came with the bundle,
        # the model that was checked would not be the one that is served.
        raise BundleError(
            f"{bundle}: the manifest lists {name}, which is derived here from the checked "
            "model.keras when a bundle is added, never taken from a bundle; remove it"
        )


def _fsync_tree(directory: Path) -> None:
    """Flush every file and directory of a tree, so that a rename publishes complete data."""
    for dirpath, _dirnames, filenames in os.walk(directory):
        for name in filenames:
            fd = os.open(os.path.join(dirpath, name), os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        fsync_dir(Path(dirpath))
