"""The sandbox's last root stage: build a read-only root, set limits, drop to the sandbox uid, exec.

Run by `unshare` inside new network, mount, ipc and uts namespaces, as root, with a new pid
namespace for its children: `python -I -m modelserve.sandbox.confine PLAN_JSON -- JOB...`.
It forks the job as PID 1 of that namespace, so that nothing the job starts outlives it.
The job then sees a root of its own: /usr, /etc, /lib* and the interpreter's directories
read-only, a private /tmp (its workspace, size-limited), a few device nodes and a /proc of its
own namespace; no /home, /root, /var, /srv, /run, nor the serving account's MODELSERVE_HOME,
wherever that is. With `isolate` false (the rlimits backend) only the limits, the empty
environment and no_new_privs apply.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import platform
import pwd
import resource
import signal
import sys
import time
from pathlib import Path

from modelserve.sandbox.policy import JOB_ENVIRONMENT, SYSTEM_PATHS, ConfinePlan, Limits

MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC = 1, 2, 4, 8
MS_REMOUNT, MS_BIND, MS_REC, MS_PRIVATE = 32, 4096, 16384, 1 << 18
MNT_DETACH = 2
PR_SET_NO_NEW_PRIVS = 38
PR_SET_PDEATHSIG = 1
PR_SET_CHILD_SUBREAPER = 36
PIVOT_ROOT = {"x86_64": 155, "aarch64": 41}  # syscall numbers; elsewhere chroot serves
DEVICES = ("null", "zero", "full", "random", "urandom")
NEW_ROOT = "/tmp"  # noqa: S108 (a mount point inside our private mount namespace only)
_libc = ctypes.CDLL(None, use_errno=True)


def _check(result: int, what: str) -> None:
    """Raise OSError with errno when a libc call failed."""
    if result != 0:
        error = ctypes.get_errno()
        raise OSError(error, f"{what}: {os.strerror(error)}")


def mount(source: str, target: str, fstype: str | None, flags: int, data: str = "") -> None:
    """mount(2)."""
    _check(_libc.mount(source.encode(), target.encode(), fstype.encode() if fstype else None,
                       ctypes.c_ulong(flags), data.encode() or None), f"mount {target}")


def bind_read_only(source: str, target: str, device: bool = False) -> None:
    """Bind a directory or file at target, read-only, without set-uid (or device) files."""
    mount(source, target, None, MS_BIND)
    flags = MS_REMOUNT | MS_BIND | MS_RDONLY | MS_NOSUID | (0 if device else MS_NODEV)
    mount("none", target, None, flags)


def build_root(root: str, plan: ConfinePlan) -> None:
    """Mount a fresh root at `root` holding only what the job may see."""
    # Open the interpreter's directories before the tmpfs hides them (/tmp may hold a venv).
    sources = [(path, os.open(path, os.O_PATH | os.O_DIRECTORY)) for path in _exposed(plan)]
    mount("none", "/", None, MS_REC | MS_PRIVATE)
    mount("sandbox-root", root, "tmpfs", MS_NOSUID | MS_NODEV, "mode=0755,size=4m")
    for path in SYSTEM_PATHS:
        _add_system_path(root, path)
    # The workspace first: a venv or a clone under /tmp is bound inside it, not hidden by it.
    size = f"size={plan.limits.workspace_bytes}"
    mount("sandbox-tmp", _make_dir(root, "/tmp"), "tmpfs", MS_NOSUID | MS_NODEV,  # noqa: S108
          f"mode=1777,{size},nr_inodes=4096")
    for path, fd in sources:
        target = _make_dir(root, path)
        bind_read_only(f"/proc/self/fd/{fd}", target)
        os.close(fd)
    _add_devices(root)
    mount("proc", _make_dir(root, "/proc"), "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC)
    mount("none", root, None, MS_REMOUNT | MS_RDONLY | MS_NOSUID | MS_NODEV, "mode=0755")


def _exposed(plan: ConfinePlan) -> list[str]:
    """The plan's directories that the system paths do not already hold."""
    return [path for path in plan.exposed if os.path.isdir(path)
            and not any(path == top or path.startswith(top + "/") for top in SYSTEM_PATHS)]


def _add_system_path(root: str, path: str) -> None:
    """Mirror /usr, /etc, /lib...: a symbolic link as a link (merged /usr), a directory bound."""
    if os.path.islink(path):
        os.symlink(os.readlink(path), root + path)
    elif os.path.isdir(path):
        bind_read_only(path, _make_dir(root, path))


def _add_devices(root: str) -> None:
    """A /dev of a few harmless character devices and a small /dev/shm."""
    dev = _make_dir(root, "/dev")
    mount("sandbox-dev", dev, "tmpfs", MS_NOSUID | MS_NOEXEC, "mode=0755,size=64k")
    for name in DEVICES:
        Path(dev, name).touch()
        bind_read_only(f"/dev/{name}", f"{dev}/{name}", device=True)
    mount("sandbox-shm", _make_dir(root, "/dev/shm"), "tmpfs",  # noqa: S108 (ours)
          MS_NOSUID | MS_NODEV | MS_NOEXEC, "mode=1777,size=16m")


def _make_dir(root: str, path: str) -> str:
    """Create root + path (parents 0755) and return it."""
    target = root + path
    os.makedirs(target, mode=0o755, exist_ok=True)
    return target


def enter_root(root: str) -> None:
    """Make `root` the root directory, the old one detached (chroot where pivot_root is unknown)."""
    os.chdir(root)
    number = PIVOT_ROOT.get(platform.machine())
    if number is None:
        os.chroot(".")
    else:
        _check(_libc.syscall(number, b".", b"."), "pivot_root")
        _check(_libc.umount2(b".", MNT_DETACH), "umount old root")
    os.chdir("/")


def set_limits(limits: Limits, own_uid: bool = True) -> None:
    """Apply the job's rlimits (soft = hard, but one more CPU second before SIGKILL).

    RLIMIT_NPROC counts every process of the uid: only with a uid of its own does it bound
    the job alone (with the caller's uid it would count the serving processes too).
    """
    pairs = {
        resource.RLIMIT_AS: limits.memory_bytes,
        resource.RLIMIT_NOFILE: limits.open_files,
        resource.RLIMIT_FSIZE: limits.workspace_bytes,
        resource.RLIMIT_CORE: 0,
    }
    if own_uid:
        pairs[resource.RLIMIT_NPROC] = limits.processes
    for kind, value in pairs.items():
        resource.setrlimit(kind, (value, value))
    resource.setrlimit(resource.RLIMIT_CPU, (limits.cpu_seconds, limits.cpu_seconds + 1))


def drop_privileges(user: str) -> None:
    """Become the sandbox user for good: no groups, no capabilities, no way back up."""
    entry = pwd.getpwnam(user)
    if entry.pw_uid == 0:
        raise PermissionError(f"the sandbox user {user} must not be root")
    os.setgroups([])
    os.setresgid(entry.pw_gid, entry.pw_gid, entry.pw_gid)
    os.setresuid(entry.pw_uid, entry.pw_uid, entry.pw_uid)
    no_new_privileges()
    if os.getuid() != entry.pw_uid or os.geteuid() != entry.pw_uid:
        raise PermissionError("could not drop to the sandbox user")


def no_new_privileges() -> None:
    """Set no_new_privs: no set-uid binary or file capability can raise the job's rights."""
    _check(_libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), "prctl(PR_SET_NO_NEW_PRIVS)")


def job_environment(workspace: str) -> dict[str, str]:
    """The job's whole environment."""
    return {**JOB_ENVIRONMENT, "HOME": workspace, "TMPDIR": workspace}


def run_isolated(plan: ConfinePlan, command: list[str]) -> int:
    """Fork the job as PID 1 of the new pid namespace; wait; exit as it did (128 + signal).

    This process stays root outside that namespace and only waits: killed, it takes the job
    (and with it the whole namespace) along through the job's parent-death signal.
    """
    child = os.fork()
    if child == 0:
        try:
            build_root(NEW_ROOT, plan)
            enter_root(NEW_ROOT)
            set_limits(plan.limits)
            drop_privileges(plan.user)
            # After the uid change, which clears it; kept across the exec of our interpreter.
            _check(_libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0), "prctl(PDEATHSIG)")
            workspace = "/tmp"  # noqa: S108 (the sandbox's own tmpfs)
            os.chdir(workspace)
            os.execve(command[0], command, job_environment(workspace))  # noqa: S606
        except BaseException as error:  # noqa: BLE001 (the child must never return into main)
            print(f"the sandbox could not be set up: {error}", file=sys.stderr)
        os._exit(127)
    return _wait(child, time.monotonic() + plan.limits.wall_seconds)


def run_limited(plan: ConfinePlan, command: list[str]) -> int:
    """The rlimits backend: the job forked with limits, no_new_privs and the empty environment.

    No pid namespace here, so this process adopts whatever the job leaves behind (a child
    subreaper) and, at the wall time or when the job ends, kills it all.
    """
    _check(_libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0), "prctl(PR_SET_CHILD_SUBREAPER)")
    child = os.fork()
    if child == 0:
        try:
            set_limits(plan.limits, own_uid=False)
            no_new_privileges()
            os.chdir(plan.workspace)
            os.execve(command[0], command, job_environment(plan.workspace))  # noqa: S606
        except BaseException as error:  # noqa: BLE001 (the child must never return into main)
            print(f"the sandbox could not be set up: {error}", file=sys.stderr)
        os._exit(127)
    code = _wait(child, time.monotonic() + plan.limits.wall_seconds)
    _kill_adopted()
    return code


def _wait(child: int, deadline: float) -> int:
    """Wait for the job until the deadline (then kill it); return its exit code, 128 + signal."""
    while True:
        pid, status = os.waitpid(child, os.WNOHANG)
        if pid:
            return os.waitstatus_to_exitcode(status) if os.WIFEXITED(status) \
                else 128 + os.WTERMSIG(status)
        if time.monotonic() > deadline:
            os.kill(child, signal.SIGKILL)
        time.sleep(0.02)


def _kill_adopted() -> None:
    """Kill and reap every process left whose parent is this one (what the job started)."""
    me = str(os.getpid())
    for _round in range(100):
        adopted = [int(entry.name) for entry in Path("/proc").iterdir()
                   if entry.name.isdigit() and _parent(entry) == me]
        if not adopted:
            return
        for pid in adopted:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        for pid in adopted:
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, 0)


def _parent(entry: Path) -> str | None:
    """The parent pid of a /proc entry (None when it is gone)."""
    try:
        return entry.joinpath("stat").read_text().rsplit(")", 1)[1].split()[1]
    except (OSError, IndexError):
        return None


def main(argv: list[str]) -> int:
    """Set up the sandbox described by argv[0] and run the command after `--` in it."""
    if len(argv) < 3 or argv[1] != "--":
        print("usage: python -m modelserve.sandbox.confine PLAN -- COMMAND...", file=sys.stderr)
        return 2
    plan, command = ConfinePlan.from_json(argv[0]), argv[2:]
    return run_isolated(plan, command) if plan.isolate else run_limited(plan, command)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
