"""The Compose stack on a real Docker engine: serve, scale out, lose a worker, scale in, leave.

The tests run in file order on one project (the stack grows and shrinks as a user's would);
each one states the number of workers it needs, so that one can also run alone.
"""

from __future__ import annotations

import json
import time

import pytest
from delivery import pushes
from delivery.gitops import commit_and_push, git
from serving.stack_helpers import ROW, BoundedLoad, http, post_json

from containers.project import Project

DELIVERY_REPO = "/var/lib/modelserve/delivery/models.git"

pytestmark = pytest.mark.slow


def test_image_runs_as_non_root_without_compilers_or_pip_cache(engine, images):
    """The final image: user modelserve, no cc/gcc, no pip cache, the registry on a volume."""
    config = json.loads(engine.docker("image", "inspect", images.modelserve).stdout)[0]
    assert config["Config"]["User"] == "modelserve"
    assert "/var/lib/modelserve" in config["Config"]["Volumes"]
    assert config["Config"]["Healthcheck"]["Test"][-2:] == ["-m", "modelserve.health"]
    probe = ("id -u; id -g; for tool in cc gcc; do command -v $tool && echo HAS-$tool; done; "
             "ls -d /root/.cache/pip /home/modelserve/.cache/pip 2>/dev/null; echo end")
    out = engine.docker("run", "--rm", "--entrypoint", "sh", images.modelserve, "-c",
                        probe).stdout
    assert out.split() == ["10001", "10001", "end"], out
    size = int(config["Size"]) / 2**20
    print(f"\nimage {images.modelserve}: {size:.0f} MiB; built in {images.build_seconds:.0f} s")


def test_predictions_through_the_web_container(project: Project, production_probability):
    """One worker: the stack gets healthy and the web container answers with the model."""
    started = time.monotonic()
    project.up(workers=1)
    status = project.wait_ready(workers=1)
    print(f"\nup -> ready in {time.monotonic() - started:.1f} s: {status}")
    project.wait_healthy()
    answer = post_json(f"{project.url}/api/v1/predict", {"rows": [ROW, ROW]},
                       headers=project.headers)
    assert answer.status == 200, answer.body
    body = answer.json()
    assert body["probabilities"][0] == pytest.approx(production_probability, abs=1e-4)
    assert body["model_version"] == status["active_version"]
    (worker,) = project.running("worker")
    assert body["worker"].split(":")[0] == worker[:12]  # the hostname is the container id
    page = http("GET", f"{project.url}/", headers=project.headers)
    assert page.status == 200 and status["active_version"].encode() in page.body


def test_git_push_delivers_into_the_volume(project: Project, shared_data, tmp_path):
    """Delivery set up in the web container; clone and push through `compose exec`."""
    project.up(workers=1)
    before = project.wait_ready(workers=1)["active_version"]
    project.compose("exec", "-T", "web", "modelserve", "delivery", "init")
    remote = "ext::" + " ".join(project.argv("exec", "-T", "web", "%S", DELIVERY_REPO))
    # git hands its environment to the ext:: command: the engine, the project's settings.
    env = project.env() | {"GIT_CONFIG_COUNT": "1", "GIT_CONFIG_KEY_0": "protocol.ext.allow",
                           "GIT_CONFIG_VALUE_0": "always"}
    git("clone", "-q", remote, str(tmp_path / "models"), cwd=tmp_path, env=env)
    checkout = tmp_path / "models"
    pushes.copy_seed(shared_data, "development", checkout)
    result = commit_and_push(checkout, "development model", env=env)
    assert result.returncode == 0 and "accepted" in result.stderr, result.stderr
    live = post_json(f"{project.url}/api/v1/predict", {"rows": [ROW]},
                     headers=project.headers).json()["model_version"]
    assert live != before
    project.compose("exec", "-T", "web", "modelserve", "models", "rollback", "--reason", "tests")
    answer = post_json(f"{project.url}/api/v1/predict", {"rows": [ROW]},
                       headers=project.headers)
    assert answer.json()["model_version"] == before


def _workers_seen(project: Project, wanted: set[str], limit: int = 300) -> set[str]:
    """Send predictions until every wanted hostname has answered (or the limit is reached)."""
    seen: set[str] = set()
    for _ in range(limit):
        answer = post_json(f"{project.url}/api/v1/predict", {"rows": [ROW]},
                           headers=project.headers)
        assert answer.status == 200, answer.body
        seen.add(answer.json()["worker"].split(":")[0])
        if wanted <= seen:
            break
    return seen


def test_three_workers_all_answer(project: Project):
    """`up --scale worker=3`: three worker containers, and each one serves predictions."""
    project.up(workers=3)
    project.wait_ready(workers=3)
    hostnames = {container[:12] for container in project.running("worker")}
    assert len(hostnames) == 3
    assert _workers_seen(project, hostnames) == hostnames


def test_a_killed_worker_loses_no_request(project: Project, production_probability):
    """`docker kill` of a worker under load: every request still gets the right answer."""
    project.up(workers=3)
    project.wait_ready(workers=3)
    victim = project.running("worker")[0]
    with BoundedLoad(project.url, threads=4, seconds=60, headers=project.headers) as load:
        time.sleep(3)
        project.engine.docker("kill", victim)
        time.sleep(5)
    served_after = {a.body["worker"].split(":")[0] for a in load.answers[-20:]
                    if isinstance(a.body, dict) and "worker" in a.body}
    print(f"\n{len(load.answers)} requests around the kill; answered last by {served_after}")
    assert len(load.answers) > 50
    assert not load.wrong(production_probability), load.wrong(production_probability)[:5]
    assert victim[:12] not in served_after


def test_scale_back_to_one_under_load(project: Project, production_probability):
    """`up --scale worker=1` stops two workers gracefully while requests keep arriving."""
    project.up(workers=3)
    project.wait_ready(workers=3)
    with BoundedLoad(project.url, threads=2, seconds=60, headers=project.headers) as load:
        time.sleep(1)
        project.up(workers=1)
        time.sleep(1)
    assert not load.wrong(production_probability), load.wrong(production_probability)[:5]
    assert len(project.running("worker")) == 1
    project.wait_ready(workers=1)


def test_down_leaves_nothing(project: Project):
    """`down -v`: no container, network or volume of the project is left."""
    project.down()
    assert project.leftovers() == []
