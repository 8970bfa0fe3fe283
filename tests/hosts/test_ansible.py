"""Ansible makes fresh servers a deployment: push on development, serve on production.

Real hosts (systemd containers with sshd, tests/hosts), the real site playbook over SSH, real
pip installs from a wheel mirror, RabbitMQ under systemd, git push over SSH with the delivery key.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
from containers.engine import CACHE, REPO
from serving.stack_helpers import ROW, Response, post_json

from hosts.mirror import serve, stage_mirror
from hosts.testhost import TestHost, gateway, inventory

pytestmark = pytest.mark.slow

PLAYBOOK = REPO / "deploy" / "ansible"
RECAP = re.compile(r"^(\S+)\s+:\s+ok=(\d+)\s+changed=(\d+)\s+unreachable=(\d+)\s+failed=(\d+)",
                   re.MULTILINE)


def converge(inventory_file: Path, extra: dict) -> tuple[dict[str, int], float]:
    """Run the site playbook; return changed tasks per host and the seconds it took."""
    started = time.monotonic()
    done = subprocess.run(
        [str(Path(sys.executable).parent / "ansible-playbook"), "-i", str(inventory_file),
         "-e", json.dumps(extra), "site.yml"],
        cwd=PLAYBOOK, capture_output=True, text=True, timeout=1800, check=False)
    seconds = time.monotonic() - started
    assert done.returncode == 0, done.stdout[-6000:] + done.stderr[-2000:]
    recap = {host: int(changed) for host, _, changed, unreachable, failed
             in RECAP.findall(done.stdout) if unreachable == failed == "0"}
    return recap, seconds


def predict(host: TestHost, rows: list) -> Response:
    """A prediction from a host's port 5100 (any status)."""
    return post_json(f"http://{host.address}:5100/api/v1/predict", {"rows": rows}, 30)


def as_dev(dev: TestHost, script: str) -> subprocess.CompletedProcess:
    """Run a shell script on development as the development account, in its checkout."""
    return dev.exec("runuser", "-l", "dev", "-c", f"cd ~/models && {script}", timeout=600)


def wait_for(condition, seconds: float, what: str) -> None:
    """Poll a condition until it holds, or fail saying what did not happen."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(1)
    raise AssertionError(f"{what} did not happen within {seconds:g} s")


def diagnosis(*hosts: TestHost) -> str:
    """What the services say, for a failed assertion."""
    parts = []
    for host in hosts:
        parts.append(f"--- {host.name}: listening\n" + host.exec("ss", "-ltn", check=False).stdout)
        parts.append(host.exec("nft", "list", "ruleset", check=False).stdout)
        for unit in ("rabbitmq-server", "modelserve-web", "modelserve-worker@1",
                     "modelserve-follow"):
            parts.append(f"--- {host.name}: {unit}\n{host.journal(unit, 30)}")
    return "\n".join(parts)


def reachable(source: TestHost, target: TestHost, port: int) -> bool:
    """Whether a TCP connection from one host to another's port opens within 3 s."""
    done = source.exec("timeout", "3", "bash", "-c", f": </dev/tcp/{target.address}/{port}",
                       check=False)
    return done.returncode == 0


def test_site_converges_idempotently_and_a_push_from_development_serves_on_production(
        fresh_host, host_key, host_network, engine, pima_csv, tmp_path):
    """Converge production + development, again: changed=0; train, push, predict. Then a worker
    host: it follows production's model and answers too; the broker admits it and not dev."""
    prod, dev = fresh_host("prod"), fresh_host("dev")
    mirror = stage_mirror(CACHE, tmp_path / "mirror", {})
    with serve(mirror, gateway(engine, host_network)) as url:
        extra = {"common_find_links": f"{url}/wheels/", "modelserve_dataset_file": str(pima_csv)}
        groups = {"production": [prod], "development": [dev], "workers": []}
        hosts = inventory(groups, host_key, tmp_path / "inventory.ini")
        first, first_seconds = converge(hosts, extra)
        second, second_seconds = converge(hosts, extra)
        print(f"\nconverge production + development: {first_seconds:.0f} s "
              f"(changed {first}); again: {second_seconds:.0f} s (changed {second})")
        assert set(second) == {"prod", "dev"} and all(v == 0 for v in second.values()), second
        assert first["prod"] > 0 and first["dev"] > 0

        trained = as_dev(dev, "modelserve train --epochs 5 --out . && git add -A && "
                              "git commit -q -m 'first model' && "
                              "git push -q production master 2>&1")
        assert "push -> live in" in trained.stdout, trained.stdout + trained.stderr
        version = json.loads(dev.exec("cat", "/home/dev/models/manifest.json").stdout)["version"]
        first_answer = predict(prod, [ROW])
        assert first_answer.status == 200, first_answer.body
        answer = first_answer.json()
        assert answer["model_version"] == version and 0 <= answer["probabilities"][0] <= 1

        worker = fresh_host("worker1")
        groups["workers"] = [worker]
        hosts = inventory(groups, host_key, tmp_path / "inventory.ini")
        _, worker_seconds = converge(hosts, extra)
        print(f"converge with a worker host: {worker_seconds:.0f} s")
    wait_for(lambda: "active" in worker.exec("ls", "/home/deploy/.local/share/modelserve/registry"
                                             ).stdout, 120, "the worker host following production")
    served_by, refused = Counter(), []
    deadline = time.monotonic() + 120
    while len(served_by) < 2 and time.monotonic() < deadline:
        response = predict(prod, [ROW])
        if response.status != 200:
            refused.append(f"{response.status} {response.body[:200]!r}")
            time.sleep(1)
            continue
        answer = response.json()
        assert answer["model_version"] == version
        served_by[answer["worker"].split(":")[0]] += 1
    print(f"answers by host: {dict(served_by)}; refused: {refused[:3]} ({len(refused)})")
    assert set(served_by) == {"prod", "worker1"}, diagnosis(prod, worker)
    assert reachable(worker, prod, 5672) and not reachable(dev, prod, 5672)
