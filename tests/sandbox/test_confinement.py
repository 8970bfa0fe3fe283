"""The sandbox for real, on this machine (root, no systemd): a model that runs code gets nothing.

Each probe plays a model that got code execution while being loaded and tries what such a
model would: read the serving account's secrets, talk to the network, write outside its
workspace, exhaust memory, CPU or time. A control run (the same probe, same uid, no
confinement) shows each attempt would have worked without the sandbox.
"""

from __future__ import annotations

import os
import shutil
import socket
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from delivery.hosts import live_pids, pids_of_uid

from modelserve.sandbox.policy import JOB_ENVIRONMENT, SANDBOX_USER, Backend, Limits
from modelserve.sandbox.setup import ensure_sandbox_user
from sandbox import probes

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(os.geteuid() != 0, reason="the namespaces backend needs root")]
SECRET = "s3cret-broker-password"  # noqa: S105 (the bait the probes look for)


@pytest.fixture(scope="module")
def sandbox_uid() -> int:
    """The sandbox's system user (created as `modelserve sandbox setup` does)."""
    import pwd

    ensure_sandbox_user()
    return pwd.getpwnam(SANDBOX_USER).pw_uid


@pytest.fixture
def serving_home() -> Iterator[Path]:
    """A serving account's MODELSERVE_HOME whose secret any uid on the host could read."""
    home = Path(tempfile.mkdtemp(prefix="modelserve-home-", dir="/var/tmp"))  # noqa: S108
    try:
        home.chmod(0o755)
        (home / "broker").mkdir(mode=0o755)
        secret = home / "broker" / "credentials.json"
        secret.write_text(f'{{"password": "{SECRET}"}}\n')
        secret.chmod(0o644)
        yield home
    finally:
        shutil.rmtree(home)


class Listener:
    """A TCP server on 127.0.0.1 that counts the connections it accepts."""

    def __init__(self) -> None:
        self.server = socket.create_server(("127.0.0.1", 0))
        self.server.settimeout(0.2)
        self.port = self.server.getsockname()[1]
        self.accepted = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        """Accept until stopped."""
        while not self._stop.is_set():
            try:
                connection, _ = self.server.accept()
            except TimeoutError:
                continue
            self.accepted += 1
            connection.close()

    def close(self) -> None:
        """Stop accepting."""
        self._stop.set()
        self._thread.join()
        self.server.close()


@pytest.fixture
def listener() -> Iterator[Listener]:
    """A server the probes try to reach."""
    started = Listener()
    try:
        yield started
    finally:
        started.close()


@pytest.mark.skipif(not probes.has_system_python(), reason="the control needs /usr/bin/python3")
def test_a_model_running_code_reads_no_secret_opens_no_socket_and_writes_nothing(
        sandbox_uid, serving_home, listener, monkeypatch, reliability):
    """Secrets, network, the serving account's files, root: every attempt fails, confined."""
    monkeypatch.setenv("MODELSERVE_BROKER_URL", f"amqp://modelserve:{SECRET}@127.0.0.1:5672//")
    secret = str(serving_home / "broker" / "credentials.json")
    args = (secret, str(listener.port), str(serving_home))
    control = probes.unconfined_as(SANDBOX_USER, probes.ESCAPE, *args)
    assert control["read the secret file"].startswith("ok") and SECRET in control[
        "read the secret file"]
    assert control["list the serving account's home"].startswith("ok")
    assert control["connect to 127.0.0.1"].startswith("ok") and listener.accepted == 1
    listener.accepted = 0

    seen = probes.report(probes.confined(probes.ESCAPE, *args))
    attempts = {name: result for name, result in seen.items() if isinstance(result, str)}
    succeeded = sorted(name for name, result in attempts.items() if result.startswith("ok"))
    assert succeeded == ["see other processes", "write the workspace"], seen
    assert seen["see other processes"] == "ok: [1]"  # itself, PID 1 of its own namespace
    assert listener.accepted == 0
    assert seen["uid"] == sandbox_uid and seen["uid"] != os.geteuid()
    assert set(seen["environment"]) == {*JOB_ENVIRONMENT, "HOME", "TMPDIR"}
    assert not seen["secret in environment"]
    assert not Path(secret + ".probe").exists() and not Path("/etc/modelserve-probe").exists()
    refused = len(attempts) - len(succeeded)
    reliability.record(
        "Security", "a model that runs code during its load (namespaces sandbox)",
        "the same probe unconfined, as the same uid, read the secret and connected; confined "
        "it saw no secret, no home, no network, no writable path but its own /tmp",
        attempts=len(attempts), refused=refused,
        allowed="write its own /tmp, list its own /proc", connections_seen=listener.accepted,
        secret_bytes_read=0)


def test_memory_cpu_and_time_limits_end_the_job(sandbox_uid, reliability):
    """Past its memory the job gets MemoryError; past its CPU or wall time it is killed, with
    everything it started (a grandchild in a session of its own too)."""
    limits = Limits(memory_bytes=512 << 20, cpu_seconds=2, wall_seconds=4)
    small = probes.report(probes.confined(probes.MEMORY, str(64 << 20), limits=limits))
    large = probes.report(probes.confined(probes.MEMORY, str(1 << 30), limits=limits))
    assert small["allocated"] == 64 << 20 and large["allocated"] == 0

    spin = probes.confined(probes.SPIN, limits=replace_wall(limits, 60))
    assert spin.returncode == 128 + 9 and not spin.timed_out  # the CPU limit, not the clock
    linger = probes.confined(probes.LINGER, limits=limits)
    assert _killed(linger) and limits.wall_seconds <= linger.seconds < limits.wall_seconds + 2
    assert _only_other_jobs(sandbox_uid)
    flood = probes.confined(probes.FLOOD, limits=replace_output(limits, 1 << 20))
    assert flood.overflowed and flood.seconds < limits.wall_seconds
    reliability.record(
        "Security", "sandbox limits (memory, CPU, wall time, output)",
        "1 GiB allocation under a 512 MiB address-space limit: MemoryError; a spinning loop "
        "killed by RLIMIT_CPU; a sleeping grandchild in its own session ended with the pid "
        "namespace at the wall time; an endless stdout cut at the output limit",
        cpu_limit_s=limits.cpu_seconds, spin_ended_after_s=round(spin.seconds, 1),
        wall_limit_s=limits.wall_seconds, linger_ended_after_s=round(linger.seconds, 1),
        flood_ended_after_s=round(flood.seconds, 2))


def _killed(finished: probes.Finished) -> bool:
    """Tell whether the job was killed (by confine at the wall time, or by the caller)."""
    return finished.timed_out or finished.returncode == 128 + 9


def replace_wall(limits: Limits, seconds: float) -> Limits:
    """The limits with another wall time."""
    from dataclasses import replace

    return replace(limits, wall_seconds=seconds)


def replace_output(limits: Limits, size: int) -> Limits:
    """The limits with another output cap."""
    from dataclasses import replace

    return replace(limits, max_output_bytes=size)


def _only_other_jobs(uid: int) -> bool:
    """Tell whether no probe of ours is left running as uid (other tests' jobs may be)."""
    for pid in live_pids(pids_of_uid(uid)):
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            continue
        if b"time.sleep(600)" in cmdline:
            return False
    return True


def test_the_weak_rlimits_backend_limits_and_empties_the_environment(serving_home, listener,
                                                                     monkeypatch):
    """MODELSERVE_SANDBOX=rlimits (containers): limits and an empty environment, no more.

    What it does not hide is asserted too, so that nobody mistakes it for the real sandbox.
    """
    monkeypatch.setenv("MODELSERVE_BROKER_URL", f"amqp://modelserve:{SECRET}@127.0.0.1:5672//")
    secret = str(serving_home / "broker" / "credentials.json")
    seen = probes.report(probes.confined(probes.LOOK, secret, str(listener.port),
                                         backend=Backend.RLIMITS))
    assert not seen["secret in environment"]
    assert set(seen["environment"]) == {*JOB_ENVIRONMENT, "HOME", "TMPDIR"}
    assert seen["uid"] == os.geteuid()  # the same uid: the weak part
    assert seen["read the secret file"].startswith("ok")  # not hidden: the weak part
    assert seen["connect to 127.0.0.1"].startswith("ok")  # the network neither
    limits = Limits(memory_bytes=512 << 20, wall_seconds=5)
    large = probes.confined(probes.MEMORY, str(1 << 30), limits=limits, backend=Backend.RLIMITS)
    assert probes.report(large)["allocated"] == 0
    linger = probes.confined(probes.LINGER, limits=limits, backend=Backend.RLIMITS)
    assert _killed(linger) and limits.wall_seconds <= linger.seconds < limits.wall_seconds + 2
    assert _only_other_jobs(os.geteuid())  # the grandchild in its own session is gone too


def test_the_sandbox_sees_a_read_only_root_of_its_own(sandbox_uid):
    """/usr and the interpreter read-only; no /home, /root's other files, /var or /run."""
    program = ("import json, os; print(json.dumps({p: os.path.exists(p) for p in "
               "['/usr/bin', '/home', '/var', '/run', '/srv', '/root/.ssh', '/tmp']}))")
    seen = probes.report(probes.confined(program))
    assert seen == {"/usr/bin": True, "/home": False, "/var": False, "/run": False,
                    "/srv": False, "/root/.ssh": False, "/tmp": True}  # noqa: S108 (its own)


def test_an_interpreter_under_tmp_is_seen_through_the_private_tmp(sandbox_uid):
    """A venv or a clone under /tmp (a CI checkout) stays visible over the job's own /tmp."""
    shown = Path(tempfile.mkdtemp(prefix="clone-", dir="/tmp"))  # noqa: S108 (the point)
    try:
        shown.chmod(0o755)
        (shown / "module.py").write_text("VALUE = 42\n")
        program = f"import json; print(json.dumps(open({str(shown / 'module.py')!r}).read()))"
        assert probes.report(probes.confined_seeing(program, shown)) == "VALUE = 42\n"
    finally:
        shutil.rmtree(shown)


def test_building_the_sandbox_costs_about_a_tenth_of_a_second(sandbox_uid, reliability):
    """The namespaces, the new root, the uid change: measured on an empty program."""
    import statistics

    limits = Limits(wall_seconds=30)
    command = [probes.python_path(), "-I", "-c", "pass"]
    confined, plain = [], []
    for _ in range(5):
        confined.append(probes.confined("pass", limits=limits).seconds)
        plain.append(probes.run_bounded(command, {}, limits).seconds)
    overhead = statistics.median(confined) - statistics.median(plain)
    assert overhead < 2.0, (confined, plain)
    reliability.record(
        "Security", "cost of building the namespaces sandbox",
        "median of 5 runs of `python -I -c pass`, confined and plain; a model check takes "
        "5-8 s here either way (TensorFlow's import)",
        confined_s=round(statistics.median(confined), 3),
        plain_s=round(statistics.median(plain), 3), overhead_s=round(overhead, 3))
