"""The caller's side of a confined job: pick the backend, start it, feed it, bound what comes back.

The caller enforces the wall time (the sudo entry point and systemd enforce it again on their
side), reads at most the output limit, keeps only the tail of stderr, and never trusts what
the job says beyond the protocol's rules.
"""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import modelserve
from modelserve.errors import UserError
from modelserve.sandbox import protocol
from modelserve.sandbox.policy import (
    JOB_LIMITS,
    OVERRIDE_VARIABLE,
    STATE_PATHS,
    Backend,
    Choice,
    ConfinePlan,
    Facts,
    Limits,
    choose_backend,
    confine_argv,
    exposed_paths,
    hidden_for_systemd,
    job_argv,
    privileged_argv,
    refusal,
    sudo_argv,
    sudoers_path,
    systemd_argv,
    unshare_argv,
)

TOOLS_PATH = "/usr/bin:/bin:/usr/sbin:/sbin"
# The backend's own start (sudo, systemd-run) before the job's wall time, which they enforce.
START_GRACE_SECONDS = 10.0
STDERR_TAIL_BYTES = 64 << 10
FRAMING_BYTES = 1 << 20  # tar headers and padding around the output files


class SandboxError(UserError):
    """A confined job that could not run, or ran out of its limits; one line."""


class SandboxUnavailable(SandboxError):
    """No sandbox can be had here (not root, no sudo rule); the line says what to run."""


class InputRefused(SandboxError):
    """An input the caller named is missing, not a regular file, or over the limit."""


@dataclass(frozen=True)
class Finished:
    """How the job's process ended, and what it wrote."""

    returncode: int
    stdout: bytes
    stderr_tail: str
    timed_out: bool
    overflowed: bool
    seconds: float


def gather_facts(environ: Mapping[str, str] | None = None) -> Facts:
    """Look at this process and machine: who we are, what can confine a job here."""
    env = os.environ if environ is None else environ
    uid = os.geteuid()
    try:
        user = pwd.getpwuid(uid).pw_name
    except KeyError:
        user = str(uid)
    return Facts(uid=uid, user=user, systemd_booted=Path("/run/systemd/system").is_dir(),
                 has_systemd_run=_tool("systemd-run"), has_unshare=_tool("unshare"),
                 has_sudo=_tool("sudo"), sudo_rule=_rule_may_exist(user),
                 override=env.get(OVERRIDE_VARIABLE, "").strip())


def _rule_may_exist(user: str) -> bool:
    """Tell whether our sudoers drop-in for user exists, or may (Debian's sudoers.d is 0750:
    then sudo itself says, and a refusal becomes the same one line)."""
    try:
        return Path(sudoers_path(user)).exists()
    except PermissionError:
        return True


def sudo_allows_jobs() -> bool:
    """Ask sudo (never for a password) whether this account may run the check job as root."""
    command = ["sudo", "-n", "-l", *privileged_argv(python_path(), "check")]
    done = subprocess.run(command, capture_output=True, env={"PATH": TOOLS_PATH},  # noqa: S603
                          timeout=30, check=False)
    return done.returncode == 0


def _tool(name: str) -> bool:
    """Tell whether a system tool is installed (looked up on a fixed PATH)."""
    return shutil.which(name, path=TOOLS_PATH) is not None


def current_choice() -> Choice:
    """The backend this process would use, and why."""
    return choose_backend(gather_facts())


def python_path() -> str:
    """Name our interpreter one way, whichever name started us: sudo rules match names."""
    venv_python = Path(sys.prefix) / "bin" / "python"
    return str(venv_python) if venv_python.is_file() else sys.executable


def interpreter_paths() -> tuple[str, ...]:
    """The directories `python -I -m modelserve...` needs: prefixes, site-packages, our source."""
    candidates = [sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix,
                  str(Path(modelserve.__file__).resolve().parent.parent)]
    for site in (p for p in sys.path if p.endswith("-packages") and os.path.isdir(p)):
        candidates.append(site)
        for pth in sorted(Path(site).glob("*.pth")):
            candidates += [line.strip() for line in _lines(pth)
                           if line.startswith("/") and os.path.isdir(line.strip())]
    return exposed_paths([os.path.realpath(path) for path in candidates])


def _lines(path: Path) -> list[str]:
    """The lines of a small text file (a .pth), or none if it cannot be read."""
    try:
        return path.read_text(errors="replace").splitlines()[:100]
    except OSError:
        return []


def confined_command(backend: Backend, command: list[str], limits: Limits,
                     workspace: str = "") -> list[str]:
    """The command line that runs `command` confined by a root backend, or the rlimits one."""
    if backend is Backend.RLIMITS:
        plan = ConfinePlan(limits, isolate=False, workspace=workspace)
        return ["setpriv", "--pdeathsig", "SIGKILL", "--",
                *confine_argv(python_path(), plan, command)]
    if backend is Backend.SYSTEMD:
        hidden = hidden_for_systemd(tuple(p for p in STATE_PATHS if os.path.isdir(p)))
        return systemd_argv(limits, command, interpreter_paths(), hidden)
    if backend is Backend.NAMESPACES:
        from modelserve.sandbox.setup import ensure_sandbox_user

        ensure_sandbox_user()
        plan = ConfinePlan(limits, exposed=interpreter_paths())
        # pdeathsig: a caller killed outright takes unshare, and so the job's namespace, along.
        return ["setpriv", "--pdeathsig", "SIGKILL", "--",
                *unshare_argv(python_path(), plan, command)]
    raise ValueError(f"{backend.value} does not confine a command itself")


def backend_command(backend: Backend, job: str, limits: Limits, workspace: str) -> list[str]:
    """The command line that runs one job confined by `backend`."""
    if backend is Backend.SUDO:
        return sudo_argv(python_path(), job)
    return confined_command(backend, job_argv(python_path(), job), limits, workspace)


def run_job(job: str, request: Any, inputs: Mapping[str, bytes | Path], outputs: set[str],
            limits: Limits | None = None) -> protocol.Answer:
    """Run a job confined; return its answer (a result or a refusal), or raise SandboxError."""
    limits = limits or JOB_LIMITS[job]
    choice = current_choice()
    if choice.backend is None:
        raise SandboxUnavailable(choice.reason)
    members: dict[str, bytes | Path] = {protocol.REQUEST_MEMBER: protocol.to_json(request),
                                        **inputs}
    _check_inputs(members, limits)
    workspace = tempfile.mkdtemp(prefix="modelserve-job-") if choice.backend is Backend.RLIMITS \
        else ""
    try:
        argv = backend_command(choice.backend, job, limits, workspace)
        finished = run_bounded(argv, members, limits, own_group=choice.backend is Backend.RLIMITS,
                               grace=_grace(choice.backend))
    finally:
        if workspace:
            shutil.rmtree(workspace, ignore_errors=True)
    if choice.backend is Backend.SUDO and _sudo_refused(finished):
        raise SandboxUnavailable(f"{refusal(gather_facts().user)} (sudo: "
                                 f"{finished.stderr_tail.strip().splitlines()[-1][:200]})")
    _raise_for(finished, limits)
    try:
        return protocol.read_answer(finished.stdout, limits.max_output_bytes, outputs)
    except protocol.ProtocolError as error:
        raise SandboxError(f"the model job's answer is malformed: {error}") from None


def _sudo_refused(finished: Finished) -> bool:
    """Tell whether sudo itself said no (no rule for this command line), before any job ran."""
    lines = finished.stderr_tail.strip().splitlines()
    return finished.returncode == 1 and not finished.stdout and bool(lines) \
        and lines[-1].startswith("sudo:")


def _grace(backend: Backend) -> float:
    """Seconds past the wall time the caller waits: theirs when another side enforces it."""
    if backend in (Backend.SUDO, Backend.SYSTEMD):
        return START_GRACE_SECONDS
    return 2.0 if backend is Backend.RLIMITS else 0.0  # confine ends the job, and its orphans


def _check_inputs(members: Mapping[str, bytes | Path], limits: Limits) -> None:
    """Refuse inputs over the limit, or that are not regular files, before starting anything."""
    total = 0
    for content in members.values():
        if isinstance(content, Path):
            if not content.exists() and not content.is_symlink():
                raise InputRefused(f"{content}: no such file")
            if content.is_symlink() or not content.is_file():
                raise InputRefused(f"{content}: not a regular file (a symbolic link?)")
            total += content.stat().st_size
        else:
            total += len(content)
    if total > limits.max_input_bytes:
        raise InputRefused(f"the model files are {total:,} bytes, over the sandbox's "
                           f"{limits.max_input_bytes:,} byte limit")


def run_bounded(argv: list[str], members: Mapping[str, bytes | Path], limits: Limits,
                own_group: bool = False, grace: float = 0.0) -> Finished:
    """Start argv, stream the input tar to it, collect bounded output, kill it at the wall time."""
    started = time.monotonic()
    process = subprocess.Popen(  # noqa: S603 (argument lists built by policy from fixed names)
        argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        env={"PATH": TOOLS_PATH, "LANG": "C.UTF-8"}, start_new_session=own_group)
    out = _Collector(process.stdout, limits.max_output_bytes + FRAMING_BYTES, keep_tail=False)
    err = _Collector(process.stderr, STDERR_TAIL_BYTES, keep_tail=True)
    feeder = threading.Thread(target=_feed, args=(process.stdin, members), daemon=True)
    for thread in (feeder, out.thread, err.thread):
        thread.start()
    timed_out = False
    deadline = limits.wall_seconds + grace
    while process.poll() is None:
        if out.overflowed or time.monotonic() - started > deadline:
            timed_out = not out.overflowed
            _kill(process, own_group)
            break
        time.sleep(0.02)
    process.wait()
    for thread in (out.thread, err.thread):
        thread.join(timeout=1)  # a process that escaped may hold the pipes: do not wait for it
    return Finished(process.returncode, out.data(), err.data().decode(errors="replace"),
                    timed_out, out.overflowed, time.monotonic() - started)


def _feed(stdin: IO[bytes] | None, members: Mapping[str, bytes | Path]) -> None:
    """Write the input tar; a job that stops reading (it failed, or it is hostile) ends it."""
    assert stdin is not None  # noqa: S101 (stdin=PIPE)
    try:
        protocol.write_tar(stdin, members)
    except (BrokenPipeError, ConnectionResetError, ValueError, OSError):
        pass
    finally:
        try:
            stdin.close()
        except OSError:
            pass


def _kill(process: subprocess.Popen, own_group: bool) -> None:
    """Kill the job: its whole group when it has one of its own, else the process."""
    try:
        if own_group:
            os.killpg(process.pid, signal.SIGKILL)
        else:
            process.kill()  # the job, PID 1 of its namespace, dies with it (pdeathsig)
    except (ProcessLookupError, PermissionError):
        pass  # sudo as another uid: its side enforces the wall time itself


class _Collector:
    """Read a pipe to its end in a thread, keeping at most `limit` bytes (the head or the tail)."""

    def __init__(self, pipe: IO[bytes] | None, limit: int, keep_tail: bool) -> None:
        assert pipe is not None  # noqa: S101 (stdout/stderr=PIPE)
        self.pipe, self.limit, self.keep_tail = pipe, limit, keep_tail
        self.chunks: list[bytes] = []
        self.size = 0
        self.overflowed = False
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        """Read until end of file, dropping what is over the limit."""
        while chunk := self.pipe.read1(1 << 16):  # type: ignore[attr-defined]
            self.chunks.append(chunk)
            self.size += len(chunk)
            if self.size > self.limit:
                if not self.keep_tail:
                    self.overflowed = True
                    self.chunks = []
                    return
                joined = b"".join(self.chunks)[-self.limit:]
                self.chunks, self.size = [joined], len(joined)

    def data(self) -> bytes:
        """What was kept."""
        return b"".join(self.chunks)


def _raise_for(finished: Finished, limits: Limits) -> None:
    """Turn a job that did not end well into one line saying why."""
    if finished.overflowed:
        raise SandboxError(f"the model job wrote more than {limits.max_output_bytes:,} bytes; "
                           "it was stopped")
    if finished.timed_out:
        raise SandboxError(f"the model job took longer than {limits.wall_seconds:.0f} s; "
                           "it was stopped")
    code = finished.returncode
    if code == 0:
        return
    signal_number = -code if code < 0 else code - 128 if code > 128 else 0
    last = (finished.stderr_tail.strip().splitlines() or ["no message"])[-1][-300:]
    if last.startswith(("refused:", "the model job")):  # the sudo entry point's own words
        raise SandboxError(last)
    if signal_number == signal.SIGXCPU:
        raise SandboxError(f"the model job used more than {limits.cpu_seconds} s of CPU; "
                           "it was stopped")
    if signal_number == signal.SIGKILL:
        raise SandboxError("the model job was killed (over its CPU, memory or time limit)")
    if "MemoryError" in last or "std::bad_alloc" in last:
        raise SandboxError(f"the model job needed more than {limits.memory_bytes >> 20} MiB "
                           "of memory")
    raise SandboxError(f"the model job crashed (exit {code}: {last})")
