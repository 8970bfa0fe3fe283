"""The systemd backend for real: a fresh Debian server (systemd as PID 1) booted from the prod
user-data, where the deploy account's model jobs run through its sudo rule in transient units
with a dynamic user; a probe plays a model that runs code during its load."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from hosts.booting import DEPLOY_ENV, UserDataBoots, import_seed_model, render
from hosts.testhost import TestHost

from sandbox import probes

pytestmark = pytest.mark.slow
PYTHON = "/opt/modelserve/bin/python"
BAIT = "/home/deploy/.local/share/modelserve/bait-secret"
# Runs as root on the host: the probe through the systemd backend, the finish as JSON.
RUN_PROBE = r'''
import json, sys
from modelserve.sandbox.policy import Backend, Limits
from modelserve.sandbox.runner import confined_command, python_path, run_bounded
limits = Limits(memory_bytes=int(sys.argv[2]), cpu_seconds=int(sys.argv[3]),
                wall_seconds=float(sys.argv[4]))
command = [python_path(), "-I", "-c", open(sys.argv[1]).read(), *sys.argv[5:]]
done = run_bounded(confined_command(Backend.SYSTEMD, command, limits), {}, limits, grace=10)
print(json.dumps({"code": done.returncode, "out": done.stdout.decode(), "seconds": done.seconds,
                  "err": done.stderr_tail[-1500:], "timed_out": done.timed_out}))
'''


def probe(host, program: str, *args: str, memory: int = 3 << 30, cpu: int = 60,
          wall: float = 120) -> dict:
    """Run a probe program on the host through the systemd backend."""
    host.put({"/srv/probe.py": program, "/srv/run_probe.py": RUN_PROBE})
    done = host.exec(PYTHON, "/srv/run_probe.py", "/srv/probe.py", str(memory), str(cpu),
                     str(wall), *args, timeout=wall + 60)
    return json.loads(done.stdout)


@pytest.fixture
def sandboxed_host(engine, host_image: str, host_network: str, host_key: Path, mirror: str,
                   tmp_path: Path) -> Iterator[TestHost]:
    """A production host of its own from the prod user-data: the probe needs its stack up on
    port 5100, which a host shared with other tests does not promise."""
    boots = UserDataBoots(engine, host_image, host_network, host_key)
    try:
        boots.start("sandboxed", render(tmp_path, "prod", host_key, mirror), ["sandboxed"])
        yield boots.ready("sandboxed").host
    finally:
        boots.remove()


def test_on_a_systemd_server_model_jobs_run_in_units_with_a_dynamic_user(
        sandboxed_host: TestHost, shared_data: Path, reliability):
    """Root gets the systemd backend, deploy the sudo rule; the seed imports; the probe fails
    at everything a loaded model's code would try; CPU and wall limits end it."""
    host = sandboxed_host
    as_root = host.exec("modelserve", "sandbox", "status").stdout
    as_deploy = host.exec("runuser", "-u", "deploy", "--", *DEPLOY_ENV, "modelserve",
                          "sandbox", "status").stdout
    assert as_root.startswith("sandbox: systemd:") and as_deploy.startswith("sandbox: sudo:")
    import_seed_model(host, shared_data)  # converted and checked in units, through sudo
    host.exec("sh", "-c", f"echo s3cret > {BAIT} && chmod 0644 {BAIT} && chmod -R a+rX "
              "/home/deploy")  # readable by any uid on the host: only the sandbox hides it

    control = host.exec("runuser", "-u", "nobody", "--", "python3", "-I", "-c", probes.ESCAPE,
                        BAIT, "5100", "/home/deploy", check=False)
    seen_unconfined = json.loads(control.stdout)
    assert seen_unconfined["read the secret file"].startswith("ok")
    assert seen_unconfined["connect to 127.0.0.1"].startswith("ok")  # the stack's port

    finished = probe(host, probes.ESCAPE, BAIT, "5100", "/home/deploy")
    assert finished["code"] == 0, finished
    seen = json.loads(finished["out"].strip().splitlines()[-1])
    succeeded = sorted(name for name, result in seen.items()
                       if isinstance(result, str) and result.startswith("ok"))
    # /home is an empty tmpfs there (ProtectHome=tmpfs), and /proc shows its own processes.
    assert succeeded == ["list /home", "see other processes", "write the workspace"], seen
    assert seen["list /home"] == "ok: []" and seen["uid"] not in (0, 1000)
    assert not seen["secret in environment"]
    assert not [name for name in seen["environment"] if name.startswith("MODELSERVE")]

    spin = probe(host, probes.SPIN, cpu=2, wall=60)
    assert spin["code"] != 0 and spin["seconds"] < 30, spin
    linger = probe(host, probes.LINGER, wall=5)
    assert linger["code"] != 0 and linger["seconds"] < 5 + 12, linger
    left = host.exec("sh", "-c", "ps -eo user,args | grep 'time.sleep(600)' | grep -v grep",
                     check=False).stdout
    assert left == "", left
    memory = probe(host, probes.MEMORY, str(1 << 30), memory=512 << 20)
    assert memory["code"] != 0 or json.loads(memory["out"])["allocated"] == 0, memory
    reliability.record(
        "Security", "a model that runs code during its load (systemd sandbox, fresh server)",
        "prod user-data on a systemd host; deploy's jobs through its sudo rule; the probe as "
        "a dynamic user: no secret, no home, no network, nothing writable but its /tmp",
        attempts=len([v for v in seen.values() if isinstance(v, str)]),
        refused=len([v for v in seen.values() if isinstance(v, str) and v.startswith("failed")]),
        spin_ended_after_s=round(spin["seconds"], 1),
        linger_ended_after_s=round(linger["seconds"], 1))
