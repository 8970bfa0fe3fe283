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
from serving.stack_helpers import ROW, Response

from hosts.fixtures import start_together
from hosts.mirror import serve, stage_mirror
from hosts.testhost import TestHost, gateway, inventory

pytestmark = pytest.mark.slow

PLAYBOOK = REPO / "deploy" / "ansible"
# The serving account's modelserve home on production, and the web app's certificate there
# (modelserve_web_tls_cert), when the web role made one.
SERVING_HOME = "/home/deploy/.local/share/modelserve"
WEB_CERT = f"{SERVING_HOME}/tls/web.crt"
RECAP = re.compile(r"^(\S+)\s+:\s+ok=(\d+)\s+changed=(\d+)\s+unreachable=(\d+)\s+failed=(\d+)",
                   re.MULTILINE)


def converge(inventory_file: Path, extra: dict, *hosts: TestHost) -> tuple[dict[str, int], float]:
    """Run the site playbook; return changed tasks per host and the seconds it took (on failure,
    say what the hosts' services logged). The changed tasks' names are printed."""
    started = time.monotonic()
    done = subprocess.run(
        [str(Path(sys.executable).parent / "ansible-playbook"), "-i", str(inventory_file),
         "-e", json.dumps(extra), "site.yml"],
        cwd=PLAYBOOK, capture_output=True, text=True, timeout=1800, check=False)
    seconds = time.monotonic() - started
    assert done.returncode == 0, (done.stdout[-6000:] + done.stderr[-2000:]
                                  + (diagnosis(*hosts) if done.returncode else ""))
    recap = {host: int(changed) for host, _, changed, unreachable, failed
             in RECAP.findall(done.stdout) if unreachable == failed == "0"}
    print(f"\nchanged: {changed_tasks(done.stdout)}")
    return recap, seconds


def changed_tasks(output: str) -> list[str]:
    """`host: task` for every task a playbook run reported changed."""
    changed, task = [], ""
    for line in output.splitlines():
        if line.startswith("TASK ["):
            task = line[6:].split("]", 1)[0]
        elif line.startswith("changed: ["):
            changed.append(f"{line[10:].split(']', 1)[0]}: {task}")
    return changed


def api_token(host: TestHost) -> str:
    """Make an API token (scope predict) on production, as its operator would."""
    return host.exec("runuser", "-u", "deploy", "--", "env", f"MODELSERVE_HOME={SERVING_HOME}",
                     "/opt/modelserve/bin/modelserve", "tokens", "create", "--name", "tests"
                     ).stdout.strip()


def predict(host: TestHost, rows: list, token: str) -> Response:
    """A prediction from a host's port 5100 (any status), asked on the host itself with a token;
    over HTTPS, verified with the web app's certificate, if it has one."""
    tls = host.exec("test", "-f", WEB_CERT, check=False).returncode == 0
    url = f"{'https' if tls else 'http'}://127.0.0.1:5100/api/v1/predict"
    done = host.exec("curl", "-sS", "-m", "30", "-w", "\\n%{http_code}", "-H",
                     "Content-Type: application/json", "-H", f"Authorization: Bearer {token}",
                     "-d", json.dumps({"rows": rows}),
                     *(["--cacert", WEB_CERT] if tls else []), url, check=False, timeout=60)
    body, _, status = done.stdout.rpartition("\n")
    return Response(int(status) if status.isdigit() else 0, {}, (body or done.stderr).encode())


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
        fresh_host, host_key, host_network, engine, pima_csv, tmp_path, reliability):
    """Converge production + development; train, push, predict. Then a worker host joins, and a
    second converge changes nothing on any of the three: the worker follows production's model
    and answers too, over TLS as its own broker account; the broker admits it and not dev."""
    # The worker host joins later: started with the others, it stays untouched until then.
    prod, dev, worker = start_together(fresh_host, "prod", "dev", "worker1")
    mirror = stage_mirror(CACHE, tmp_path / "mirror", {})
    with serve(mirror, gateway(engine, host_network)) as url:
        extra = {"common_find_links": f"{url}/wheels/", "modelserve_dataset_file": str(pima_csv)}
        groups = {"production": [prod], "development": [dev], "workers": []}
        hosts = inventory(groups, host_key, tmp_path / "inventory.ini")
        first, first_seconds = converge(hosts, extra, prod, dev)
        print(f"\nconverge production + development: {first_seconds:.0f} s (changed {first})")
        assert first["prod"] > 0 and first["dev"] > 0

        trained = as_dev(dev, "modelserve train --epochs 5 --out . && git add -A && "
                              "git commit -q -m 'first model' && "
                              "git push -q production master 2>&1")
        assert "push -> live in" in trained.stdout, trained.stdout + trained.stderr
        version = json.loads(dev.exec("cat", "/home/dev/models/manifest.json").stdout)["version"]
        token = api_token(prod)
        first_answer = predict(prod, [ROW], token)
        assert first_answer.status == 200, first_answer.body
        answer = first_answer.json()
        assert answer["model_version"] == version and 0 <= answer["probabilities"][0] <= 1

        groups["workers"] = [worker]
        hosts = inventory(groups, host_key, tmp_path / "inventory.ini")
        _, worker_seconds = converge(hosts, extra, prod, worker)
        # Idempotence, once, on all three hosts: after a push, a model live and a worker host
        # joined, converging again changes nothing anywhere.
        again, again_seconds = converge(hosts, extra, prod, dev, worker)
        print(f"converge with a worker host: {worker_seconds:.0f} s; again: {again_seconds:.0f} s "
              f"(changed {again})")
        assert set(again) == {"prod", "dev", "worker1"} and not any(again.values()), again
    wait_for(lambda: "active" in worker.exec("ls", "/home/deploy/.local/share/modelserve/registry"
                                             ).stdout, 120, "the worker host following production")
    served_by, refused = Counter(), []
    deadline = time.monotonic() + 120
    while len(served_by) < 2 and time.monotonic() < deadline:
        response = predict(prod, [ROW], token)
        if response.status != 200:
            refused.append(f"{response.status} {response.body[:200]!r}")
            time.sleep(1)
            continue
        answer = response.json()
        assert answer["model_version"] == version
        served_by[answer["worker"].split(":")[0]] += 1
    print(f"answers by host: {dict(served_by)}; refused: {refused[:3]} ({len(refused)})")
    assert set(served_by) == {"prod", "worker1"}, diagnosis(prod, worker)
    assert_broker_tls(prod, dev, worker, reliability, sum(served_by.values()))


def listening(host: TestHost, port: int) -> set[str]:
    """The local addresses a host listens on for a TCP port (`ss -ltn`)."""
    lines = host.exec("ss", "-Hltn", f"sport = :{port}").stdout.splitlines()
    return {line.split()[3].rsplit(":", 1)[0] for line in lines if line.strip()}


def rabbitmqctl(host: TestHost, *args: str) -> list[list[str]]:
    """Rows of a rabbitmqctl listing on a host, split at tabs."""
    done = host.exec("rabbitmqctl", "-q", *args, "--no-table-headers")
    return [line.split("\t") for line in done.stdout.splitlines() if line.strip()]


def assert_broker_tls(prod: TestHost, dev: TestHost, worker: TestHost, reliability,
                      answers: int) -> None:
    """With a worker host: TLS on 5671 for it only, plain 5672 on loopback only, its own
    account with a worker's permissions, its key on its side and the CA's on production's."""
    assert listening(prod, 5672) == {"127.0.0.1"}, diagnosis(prod)
    assert listening(prod, 5671) & {"0.0.0.0", "*", "[::]"}, diagnosis(prod)  # noqa: S104
    assert reachable(worker, prod, 5671) and not reachable(worker, prod, 5672)
    assert not reachable(dev, prod, 5671) and not reachable(dev, prod, 5672)
    connections = rabbitmqctl(prod, "list_connections", "user", "ssl", "peer_host")
    from_worker = [row for row in connections if row[2] == worker.address]
    assert from_worker and all(row[:2] == ["worker-worker1", "true"] for row in from_worker), \
        connections
    assert all(row[1] == "false" and row[2] == "127.0.0.1" for row in connections
               if row[0] == "modelserve"), connections
    permissions = rabbitmqctl(prod, "list_user_permissions", "worker-worker1")
    assert permissions == [["modelserve", "^modelserve\\.predict$",
                            "^(amq\\.default|modelserve\\.predict)$", "^modelserve\\.predict$"]]
    env = worker.exec("cat", "/etc/modelserve/modelserve.env").stdout
    assert "MODELSERVE_BROKER_URL=amqps://worker-worker1:" in env and "amqp://" not in env
    assert worker.exec("test", "-e", "/etc/modelserve/broker-ca", check=False).returncode == 1
    assert worker.exec("stat", "-c", "%a %U:%G", "/etc/modelserve/broker-tls/client.key"
                       ).stdout.split() == ["640", "root:deploy"]
    assert prod.exec("stat", "-c", "%a", "/etc/modelserve/broker-ca/ca.key").stdout.strip() == "600"
    reliability.record(
        "Security", "Ansible: a worker host on production's broker",
        "real hosts: 5671 (TLS, verify_peer) open to the worker host only, 5672 on loopback; "
        "the worker's own account; its answers came over amqps",
        worker_tls_connections=len(from_worker), answers_during_check=answers,
        plain_reachable_from_worker=0, tls_reachable_from_dev=0)
