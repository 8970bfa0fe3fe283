"""Programs that play a malicious model which got code execution while being loaded.

Each runs as `python -I -c PROBE ARGS...` through the very confinement the model jobs get
(never through the sudo entry point, which runs the fixed job names only) and prints one JSON
line of what each attempt gave: "ok: ..." or "failed: ...".
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from modelserve.sandbox.policy import Backend, ConfinePlan, Limits, unshare_argv
from modelserve.sandbox.runner import (
    Finished,
    confined_command,
    interpreter_paths,
    python_path,
    run_bounded,
)

__all__ = ["Finished", "python_path", "run_bounded"]

# argv: secret file, TCP port on 127.0.0.1, a directory of the serving account to list.
ESCAPE = r'''
import json, os, socket, sys
secret, port, home = sys.argv[1], int(sys.argv[2]), sys.argv[3]
out = {}
def attempt(name, action):
    try:
        out[name] = "ok: " + repr(action())[:200]
    except BaseException as error:
        out[name] = "failed: " + type(error).__name__
attempt("read the secret file", lambda: open(secret).read())
attempt("list the serving account's home", lambda: os.listdir(home))
attempt("list /home", lambda: os.listdir("/home"))
attempt("read /etc/shadow", lambda: open("/etc/shadow").read())
attempt("connect to 127.0.0.1", lambda: socket.create_connection(("127.0.0.1", port), 2).close())
attempt("open a UDP socket out", lambda: socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        .sendto(b"x", ("127.0.0.1", port)))
attempt("write /etc", lambda: open("/etc/modelserve-probe", "w").close())
attempt("write beside the secret", lambda: open(secret + ".probe", "w").close())
attempt("write the root directory", lambda: open("/probe", "w").close())
attempt("write the workspace", lambda: open("probe", "w").write("ok"))
attempt("become root", lambda: os.setuid(0))
attempt("see other processes", lambda: sorted(int(p) for p in os.listdir("/proc")
                                              if p.isdigit()))
out["uid"] = os.getuid()
out["environment"] = sorted(os.environ)
out["secret in environment"] = any("s3cret" in v for v in os.environ.values())
print(json.dumps(out))
'''

# Look, without writing anything (the rlimits backend runs as the caller, root here).
LOOK = r'''
import json, os, socket, sys
secret, port = sys.argv[1], int(sys.argv[2])
out = {"uid": os.getuid(), "environment": sorted(os.environ),
       "secret in environment": any("s3cret" in v for v in os.environ.values())}
try:
    out["read the secret file"] = "ok: " + open(secret).read()[:20]
except OSError as error:
    out["read the secret file"] = "failed: " + type(error).__name__
try:
    socket.create_connection(("127.0.0.1", port), 2).close()
    out["connect to 127.0.0.1"] = "ok"
except OSError as error:
    out["connect to 127.0.0.1"] = "failed: " + type(error).__name__
print(json.dumps(out))
'''

MEMORY = r'''
import json
try:
    hog = b"\1" * int(__import__("sys").argv[1])  # written: a cgroup limit counts it too
    print(json.dumps({"allocated": len(hog)}))
except MemoryError:
    print(json.dumps({"allocated": 0}))
'''

SPIN = "while True:\n    pass\n"

# Sleep in a grandchild that left the process group: the pid namespace must still end it.
LINGER = r'''
import os, time
if os.fork() == 0:
    os.setsid()
    if os.fork() == 0:
        time.sleep(600)
    os._exit(0)
time.sleep(600)
'''

FLOOD = "import sys\nwhile True:\n    sys.stdout.buffer.write(b'x' * 65536)\n"


def confined(program: str, *args: str, limits: Limits | None = None,
             backend: Backend = Backend.NAMESPACES) -> Finished:
    """Run a probe program through the confinement, with the given (or default) limits."""
    limits = limits or Limits(wall_seconds=60)
    command = [python_path(), "-I", "-c", program, *args]
    workspace = ""
    if backend is Backend.RLIMITS:
        import tempfile

        workspace = tempfile.mkdtemp(prefix="probe-")
    grace = 2.0 if backend is Backend.RLIMITS else 0.0
    return run_bounded(confined_command(backend, command, limits, workspace), {}, limits,
                       own_group=backend is Backend.RLIMITS, grace=grace)


def confined_seeing(program: str, directory: Path) -> Finished:
    """Run a probe in the namespaces sandbox with one more directory bound read-only."""
    limits = Limits(wall_seconds=60)
    plan = ConfinePlan(limits, exposed=(*interpreter_paths(), str(directory)))
    argv = unshare_argv(python_path(), plan, [python_path(), "-I", "-c", program])
    return run_bounded(argv, {}, limits)


def unconfined_as(user: str, program: str, *args: str) -> dict:
    """The control: the same probe as the same uid, without the confinement (system Python)."""
    done = subprocess.run(["runuser", "-u", user, "--", "/usr/bin/python3", "-I", "-c", program,
                           *args], capture_output=True, text=True, timeout=60, check=False,
                          cwd="/")
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def report(finished: Finished) -> dict:
    """The probe's JSON line."""
    assert finished.returncode == 0, finished.stderr_tail
    return json.loads(finished.stdout.decode().strip().splitlines()[-1])


def has_system_python() -> bool:
    """Tell whether the control can run (Debian's python3, reachable by any uid)."""
    return Path("/usr/bin/python3").is_file() and sys.platform == "linux"
