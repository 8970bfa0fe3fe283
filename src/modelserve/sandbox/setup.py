"""Installing the sandbox (root only): its system user, and the sudo rule for a serving account.

The rule lets one account run `python -I -m modelserve.sandbox.privileged JOB` as root, for
the three job names only. That command runs code from this installation as root, so the
rule is written only when no file of the installation can be changed by anyone but root.
"""

from __future__ import annotations

import os
import pwd
import stat
import subprocess
import tempfile
from pathlib import Path

from modelserve.errors import UserError
from modelserve.sandbox.policy import (
    SANDBOX_USER,
    SUDOERS_DIR,
    SYSTEM_PATHS,
    sudoers_path,
    sudoers_text,
)

TOOLS_ENV = {"PATH": "/usr/bin:/bin:/usr/sbin:/sbin", "LANG": "C.UTF-8"}


class SetupError(UserError):
    """The sandbox cannot be installed as asked; one line."""


def require_root(what: str) -> None:
    """Refuse unless running as root."""
    if os.geteuid() != 0:
        raise SetupError(f"refused: {what} needs root (run it with sudo)")


def ensure_sandbox_user() -> bool:
    """Create the system user jobs run as (no home, no shell, no login); True if created now."""
    if _user_exists(SANDBOX_USER):
        return False
    command = ["useradd", "--system", "--user-group", "--no-create-home", "--home-dir",
               "/nonexistent", "--shell", "/usr/sbin/nologin", "--comment",
               "modelserve model sandbox", SANDBOX_USER]
    # A fixed argument list, run with a fixed PATH.
    done = subprocess.run(command, capture_output=True, text=True, env=TOOLS_ENV,  # noqa: S603
                          check=False)
    if done.returncode != 0 and not _user_exists(SANDBOX_USER):  # another job may have won
        raise SetupError(f"cannot create the user {SANDBOX_USER}: {done.stderr.strip()}")
    return done.returncode == 0


def _user_exists(name: str) -> bool:
    """Tell whether an account exists."""
    try:
        pwd.getpwnam(name)
    except KeyError:
        return False
    return True


def install_rule(user: str, python: str | None = None,
                 trust_install: bool = False) -> tuple[Path, bool]:
    """Write, validate (visudo -c) and install the sudoers drop-in for `user`; say if it changed.

    trust_install skips the ownership check: for a developer's own checkout, whose account
    may become root anyway (sudo), never for a serving account.
    """
    require_root("installing the sandbox's sudo rule")
    from modelserve.sandbox.runner import python_path

    python = python or python_path()
    if not _user_exists(user):
        raise SetupError(f"refused: there is no account named {user!r}")
    if pwd.getpwnam(user).pw_uid == 0:
        raise SetupError("refused: root needs no sudo rule; it confines jobs itself")
    unsafe = None if trust_install else writable_by_others([python, *installation_dirs()])
    if unsafe:
        raise SetupError(f"refused: {unsafe} can be changed by a user other than root, who "
                         "could then run code as root through the rule; install modelserve "
                         "as root (e.g. in /opt) first, or pass --trust-install if that user "
                         "may become root anyway")
    text = sudoers_text(user, python)
    target = Path(sudoers_path(user))
    if target.is_file() and target.read_text() == text:
        return target, False
    target.parent.mkdir(mode=0o755, exist_ok=True)
    fd, temporary = tempfile.mkstemp(dir=SUDOERS_DIR, prefix=".modelserve-")  # ignored by sudo
    try:
        with os.fdopen(fd, "w") as file:
            file.write(text)
        os.chmod(temporary, 0o440)
        _validate(temporary)
        os.replace(temporary, target)
    finally:
        Path(temporary).unlink(missing_ok=True)
    return target, True


def _validate(path: str) -> None:
    """Refuse a drop-in that visudo does not accept (a broken one would disable sudo)."""
    done = subprocess.run(["visudo", "-c", "-q", "-f", path],  # noqa: S603,S607
                          capture_output=True, text=True, env=TOOLS_ENV, check=False)
    if done.returncode != 0:
        raise SetupError(f"visudo refused the rule: {(done.stdout + done.stderr).strip()}")


def remove_rule(user: str) -> bool:
    """Delete the drop-in for `user`; True if there was one."""
    require_root("removing the sandbox's sudo rule")
    target = Path(sudoers_path(user))
    existed = target.exists()
    target.unlink(missing_ok=True)
    return existed


def installation_dirs() -> list[str]:
    """The directories whose code the privileged entry point runs."""
    from modelserve.sandbox.runner import interpreter_paths

    return list(interpreter_paths())


def writable_by_others(paths: list[str]) -> str | None:
    """The first path, in the trees given or above them, that someone but root could change.

    Trees under the system's own directories (/usr: Debian's python3 is the base of a venv
    made with it) are the package manager's: only their top and its parents are looked at.
    """
    for path in paths:
        top = Path(path).resolve()
        for parent in reversed(top.parents):
            # A sticky directory (/tmp) lets nobody rename or remove root's entries in it.
            if _unsafe(parent.stat(), sticky_ok=True):
                return str(parent)
        system = any(top.is_relative_to(system) for system in SYSTEM_PATHS)
        found = (str(top) if _unsafe(top.stat()) else None) if system else _unsafe_in_tree(top)
        if found:
            return found
    return None


def _unsafe_in_tree(top: Path) -> str | None:
    """The first entry of a tree someone other than root could change."""
    if _unsafe(top.stat()):
        return str(top)
    if not top.is_dir():
        return None
    for directory, names, files in os.walk(top):
        for name in names + files:
            path = os.path.join(directory, name)
            info = os.lstat(path)
            if stat.S_ISLNK(info.st_mode):  # what it points at must be root's too
                target = _target(path)
                if target is None or not (stat.S_ISREG(target.st_mode)
                                          or stat.S_ISDIR(target.st_mode)):
                    continue  # dangling, or a device (a unit masked as /dev/null): no code
                info = target
            if _unsafe(info):
                return path
    return None


def _target(path: str) -> os.stat_result | None:
    """The status of a link's target, or None for a dangling link."""
    try:
        return os.stat(path)
    except OSError:
        return None


def _unsafe(info: os.stat_result, sticky_ok: bool = False) -> bool:
    """Owned by another user, or writable by others or by a group other than root's."""
    if info.st_uid != 0 or (info.st_mode & stat.S_IWGRP and info.st_gid != 0):
        return True
    sticky = stat.S_ISDIR(info.st_mode) and bool(info.st_mode & stat.S_ISVTX)
    return bool(info.st_mode & stat.S_IWOTH) and not (sticky and sticky_ok)
