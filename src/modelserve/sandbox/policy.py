"""How a model job is confined: limits, the choice of backend, and each backend's command line.

Pure: facts in, decisions and argument lists out; nothing here starts a process or reads a
file, so every rule is unit-tested without root.
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, replace
from enum import Enum

JOBS = ("check", "convert", "score", "import")
SANDBOX_USER = "modelserve-sandbox"
SUDOERS_DIR = "/etc/sudoers.d"
OVERRIDE_VARIABLE = "MODELSERVE_SANDBOX"
# What Python and TensorFlow need, and nothing of the caller's: no broker URL, no HOME.
# One or two threads per pool: TensorFlow sizes its pools by the host's cores otherwise, and
# each thread reserves address space (stacks, malloc arenas) that the memory limit counts.
JOB_ENVIRONMENT = {
    "PATH": "/usr/bin:/bin",
    "LANG": "C.UTF-8",
    "TF_CPP_MIN_LOG_LEVEL": "3",
    "KERAS_BACKEND": "tensorflow",
    "MALLOC_ARENA_MAX": "2",
    "OMP_NUM_THREADS": "2",
    "TF_NUM_INTEROP_THREADS": "2",
    "TF_NUM_INTRAOP_THREADS": "2",
}
# The root file system a namespaces sandbox sees, read-only (plus the interpreter's paths).
SYSTEM_PATHS = ("/usr", "/etc", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32")
# Hidden from a systemd sandbox besides the homes (ProtectHome): where installs keep state.
STATE_PATHS = ("/var/lib/modelserve", "/srv", "/opt/modelserve/state")
_USER_NAME = re.compile(r"[a-z_][a-z0-9_-]{0,31}")
MIB = 1 << 20


class Backend(Enum):
    """Ways to confine a job, strongest first."""

    SYSTEMD = "systemd"  # root where systemd runs: a transient unit with a dynamic user
    NAMESPACES = "namespaces"  # root elsewhere: new namespaces, a new root, another uid
    SUDO = "sudo"  # not root: the installed sudo rule runs one of the above as root
    RLIMITS = "rlimits"  # opt-in only, for containers: same uid, empty env, limits


@dataclass(frozen=True)
class Limits:
    """What one confined job may use."""

    memory_bytes: int = 3 << 30  # address space: TensorFlow alone maps ~1.6 GB
    cpu_seconds: int = 120
    wall_seconds: float = 180.0
    max_input_bytes: int = 256 * MIB
    max_output_bytes: int = 256 * MIB
    open_files: int = 256
    processes: int = 512  # per uid: threads count; several jobs may run at once
    workspace_bytes: int = 768 * MIB  # the private /tmp holding inputs and outputs

    def within(self, wall_seconds: float | None) -> Limits:
        """These limits with a shorter wall time, if one is asked for (never a longer one)."""
        if wall_seconds is None or wall_seconds >= self.wall_seconds:
            return self
        return replace(self, wall_seconds=max(wall_seconds, 1.0))


JOB_LIMITS = {job: Limits() for job in JOBS}


@dataclass(frozen=True)
class Facts:
    """What the backend choice depends on, gathered by the runner."""

    uid: int
    user: str
    systemd_booted: bool  # /run/systemd/system exists: systemd is PID 1
    has_systemd_run: bool
    has_unshare: bool
    has_sudo: bool
    sudo_rule: bool  # our sudoers drop-in for this user exists
    override: str = ""  # MODELSERVE_SANDBOX


@dataclass(frozen=True)
class Choice:
    """The backend to use (None: no sandbox can be had) and why, in one line."""

    backend: Backend | None
    reason: str


def choose_backend(facts: Facts) -> Choice:
    """Pick the strongest backend the facts allow, or an explicit override if it can work."""
    if facts.override:
        return _overridden(facts)
    if facts.uid == 0:
        return _as_root(facts)
    if facts.sudo_rule and facts.has_sudo:
        return Choice(Backend.SUDO, f"{facts.user} is not root; the sudo rule installed by "
                      "`modelserve sandbox setup` runs each job as root, who confines it")
    return Choice(None, refusal(facts.user))


def refusal(user: str) -> str:
    """The one line a caller without a way to confine a model gets."""
    return (f"refused: model files are loaded only in a sandbox, which needs root; run once, "
            f"as root: modelserve sandbox setup --for-user {user}")


def _as_root(facts: Facts) -> Choice:
    """Root: a systemd unit where systemd runs, else namespaces."""
    if facts.systemd_booted and facts.has_systemd_run:
        return Choice(Backend.SYSTEMD, "root, and systemd is PID 1: a transient unit with "
                      "DynamicUser, PrivateNetwork, ProtectHome, MemoryMax")
    if facts.has_unshare:
        return Choice(Backend.NAMESPACES, "root without systemd: unshare (network, mount, pid) "
                      f"and a read-only root, as user {SANDBOX_USER}, with rlimits")
    return Choice(None, "refused: no sandbox: neither systemd nor unshare (util-linux) is here")


def _overridden(facts: Facts) -> Choice:
    """Honour MODELSERVE_SANDBOX when the backend it names can work for this caller."""
    try:
        backend = Backend(facts.override)
    except ValueError:
        names = ", ".join(b.value for b in Backend)
        return Choice(None, f"refused: {OVERRIDE_VARIABLE}={facts.override!r} is none of {names}")
    needs_root = backend in (Backend.SYSTEMD, Backend.NAMESPACES)
    if needs_root and facts.uid != 0:
        return Choice(None, f"refused: {OVERRIDE_VARIABLE}={backend.value} needs root")
    if backend is Backend.SYSTEMD and not (facts.systemd_booted and facts.has_systemd_run):
        return Choice(None, f"refused: {OVERRIDE_VARIABLE}=systemd, but systemd is not PID 1")
    if backend is Backend.SUDO and not (facts.sudo_rule and facts.has_sudo):
        return Choice(None, refusal(facts.user))
    if backend is Backend.RLIMITS:
        return Choice(backend, f"{OVERRIDE_VARIABLE}=rlimits: the weak sandbox (same uid, "
                      "empty environment, rlimits, time limit; network and files not hidden)")
    return Choice(backend, f"{OVERRIDE_VARIABLE}={backend.value}")


def valid_user_name(name: str) -> bool:
    """Tell whether a name is a plain POSIX account name (safe in a sudoers line)."""
    return bool(_USER_NAME.fullmatch(name))


def sudoers_path(user: str) -> str:
    """The sudoers drop-in that lets one account run confined jobs."""
    return f"{SUDOERS_DIR}/{SANDBOX_USER}-{user}"


def job_argv(python: str, job: str) -> list[str]:
    """The job itself: our interpreter, isolated mode (no PYTHON* variables, no cwd on sys.path)."""
    if job not in JOBS:
        raise ValueError(f"unknown job {job!r}")
    return [python, "-I", "-m", "modelserve.sandbox.jobs", job]


def privileged_argv(python: str, job: str) -> list[str]:
    """The root entry point the sudo rule allows: one fixed command line per job."""
    if job not in JOBS:
        raise ValueError(f"unknown job {job!r}")
    return [python, "-I", "-m", "modelserve.sandbox.privileged", job]


def sudo_argv(python: str, job: str) -> list[str]:
    """Run the privileged entry point through sudo, never asking for a password."""
    return ["sudo", "-n", *privileged_argv(python, job)]


def sudoers_text(user: str, python: str) -> str:
    """The drop-in: USER may run exactly the privileged entry point of each job, as root."""
    if not valid_user_name(user):
        raise ValueError(f"{user!r} is not a plain account name")
    if not python.startswith("/") or any(c in python for c in " \t\n\\,:=*?[]!#\"'"):
        raise ValueError(f"{python!r} cannot be named in a sudoers rule")
    commands = ", ".join(" ".join(privileged_argv(python, job)) for job in JOBS)
    return (f"# Written by `modelserve sandbox setup --for-user {user}`: {user} may confine\n"
            "# model jobs (they run as the system user " + SANDBOX_USER + "), nothing else.\n"
            f"{user} ALL=(root) NOPASSWD: {commands}\n")


@dataclass(frozen=True)
class ConfinePlan:
    """What the root stage inside the namespaces sets up before it runs the job."""

    limits: Limits
    user: str = SANDBOX_USER
    exposed: tuple[str, ...] = ()  # the interpreter's directories, bound read-only
    isolate: bool = True  # False: the rlimits backend (no namespaces, no new root, same uid)
    workspace: str = ""  # the rlimits backend's job directory (isolated jobs get /tmp)

    def to_json(self) -> str:
        """Serialize for the confine stage's command line."""
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> ConfinePlan:
        """Read a plan serialized by to_json."""
        raw = json.loads(text)
        return cls(Limits(**raw["limits"]), str(raw["user"]),
                   tuple(str(p) for p in raw["exposed"]), bool(raw["isolate"]),
                   str(raw["workspace"]))


def confine_argv(python: str, plan: ConfinePlan, command: list[str]) -> list[str]:
    """The confine stage, then (after `--`) the job it runs."""
    return [python, "-I", "-m", "modelserve.sandbox.confine", plan.to_json(), "--", *command]


def unshare_argv(python: str, plan: ConfinePlan, command: list[str]) -> list[str]:
    """New network, mount, pid, ipc and uts namespaces; confine forks the job into them."""
    return ["unshare", "--net", "--mount", "--pid", "--ipc", "--uts", "--propagation", "private",
            "--", *confine_argv(python, plan, command)]


def systemd_argv(limits: Limits, command: list[str], exposed: tuple[str, ...],
                 hidden: tuple[str, ...]) -> list[str]:
    """A transient service with a dynamic user, no network, homes hidden, limits enforced."""
    properties = [*_SYSTEMD_HARDENING, *_systemd_limits(limits),
                  *(f"BindReadOnlyPaths={path}" for path in exposed),
                  *(f"TemporaryFileSystem={path}:ro" for path in hidden)]
    private_tmp = "/tmp"  # noqa: S108 (PrivateTmp: the unit's own)
    environment = {**JOB_ENVIRONMENT, "HOME": private_tmp, "TMPDIR": private_tmp}
    return ["systemd-run", "--wait", "--pipe", "--collect", "--quiet", "--service-type=exec",
            *(arg for prop in properties for arg in ("-p", prop)),
            *(arg for item in sorted(environment.items()) for arg in ("--setenv", "=".join(item))),
            "--", *command]


_SYSTEMD_HARDENING = (
    "DynamicUser=yes", "PrivateNetwork=yes", "IPAddressDeny=any",
    "RestrictAddressFamilies=AF_UNIX", "ProtectSystem=strict", "ProtectHome=tmpfs",
    "PrivateTmp=yes", "PrivateDevices=yes", "PrivateIPC=yes", "ProtectKernelTunables=yes",
    "ProtectKernelModules=yes", "ProtectKernelLogs=yes", "ProtectControlGroups=yes",
    "ProtectClock=yes", "ProtectHostname=yes", "ProtectProc=invisible", "ProcSubset=pid",
    "RestrictNamespaces=yes", "RestrictSUIDSGID=yes", "RestrictRealtime=yes",
    "LockPersonality=yes", "NoNewPrivileges=yes", "CapabilityBoundingSet=",
    "AmbientCapabilities=", "SystemCallArchitectures=native", "UMask=0077",
    "KeyringMode=private", "WorkingDirectory=/tmp", "MemorySwapMax=0", "LimitCORE=0",
)


def _systemd_limits(limits: Limits) -> list[str]:
    """The resource properties of a unit."""
    # LimitAS as well as MemoryMax: the address-space bound holds on cgroup v1 hosts too.
    return [f"MemoryMax={limits.memory_bytes}", f"LimitAS={limits.memory_bytes}",
            f"TasksMax={limits.processes}",
            f"LimitCPU={limits.cpu_seconds}:{limits.cpu_seconds + 1}",
            f"LimitNOFILE={limits.open_files}", f"LimitFSIZE={limits.workspace_bytes}",
            f"RuntimeMaxSec={max(1, round(limits.wall_seconds))}"]


def hidden_for_systemd(candidates: tuple[str, ...]) -> tuple[str, ...]:
    """State directories to hide that ProtectHome does not already cover."""
    covered = ("/home", "/root", "/run/user")
    return tuple(path for path in dict.fromkeys(candidates)
                 if path.startswith("/") and not any(_under(path, top) for top in covered))


def exposed_paths(paths: list[str]) -> tuple[str, ...]:
    """The distinct absolute directories to expose, none inside another, sorted."""
    absolute = sorted({path.rstrip("/") or "/" for path in paths if path.startswith("/")})
    kept: list[str] = []
    for path in absolute:
        if not any(_under(path, outer) for outer in kept):
            kept.append(path)
    return tuple(kept)


def _under(path: str, top: str) -> bool:
    """Tell whether path is top or lies inside it."""
    return path == top or path.startswith(top.rstrip("/") + "/")
