"""Drive deploy/docker/compose.yaml on a test engine: up, scale, kill, down, and what is left."""

from __future__ import annotations

import io
import json
import os
import secrets
import shlex
import shutil
import subprocess
import tarfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from serving.stack_helpers import free_port, http

from containers.engine import COMPOSE_FILE, Engine, docker_binary

PROJECT_LABEL = "com.docker.compose.project"
SERVICE_LABEL = "com.docker.compose.service"


def compose_command(engine: Engine) -> list[str]:
    """`docker compose` (v2) when the plugin is there, else docker-compose 1.29.

    MODELSERVE_TEST_COMPOSE names another one, e.g. a standalone v2 binary.
    """
    chosen = os.environ.get("MODELSERVE_TEST_COMPOSE")
    if chosen:
        return shlex.split(chosen)
    v2 = subprocess.run([docker_binary(), "compose", "version"], env=engine.env(),
                        capture_output=True, check=False)
    if v2.returncode == 0:
        return [docker_binary(), "compose"]
    return [shutil.which("docker-compose") or "docker-compose"]


@dataclass
class Project:
    """One Compose project of ours: its name, settings and published web port."""

    engine: Engine
    name: str
    image: str
    broker_image: str
    port: int = field(default_factory=free_port)
    password: str = field(default_factory=lambda: secrets.token_hex(16), repr=False)
    # The web container listens on 0.0.0.0, so it requires a token (made by create_token).
    token: str = field(default="", repr=False)

    @property
    def url(self) -> str:
        """The web container's base URL, through the port published on loopback."""
        return f"http://127.0.0.1:{self.port}"

    def env(self) -> dict[str, str]:
        """What compose.yaml reads from the environment."""
        return self.engine.env(
            MODELSERVE_IMAGE=self.image, MODELSERVE_BROKER_IMAGE=self.broker_image,
            MODELSERVE_BROKER_PASSWORD=self.password, MODELSERVE_WEB_PORT=str(self.port),
            # The load tests send as fast as they can; the rate limit has tests of its own.
            MODELSERVE_RATE_LIMIT="off")

    def argv(self, *args: str) -> list[str]:
        """The compose command line for this project."""
        return [*compose_command(self.engine), "-p", self.name, "-f", str(COMPOSE_FILE), *args]

    def compose(self, *args: str, stdin: bytes | None = None,
                timeout: float = 300) -> subprocess.CompletedProcess:
        """Run compose; fail with its output when it fails."""
        done = subprocess.run(self.argv(*args), input=stdin, env=self.env(),
                              capture_output=True, timeout=timeout, check=False)
        if done.returncode != 0:
            raise AssertionError(f"compose {' '.join(args)} exited {done.returncode}:\n"
                                 f"{done.stdout.decode(errors='replace')[-3000:]}\n"
                                 f"{done.stderr.decode(errors='replace')[-3000:]}")
        return done

    def up(self, workers: int) -> None:
        """Start (or scale) the stack with this many workers, using the images we built."""
        self.compose("up", "-d", "--no-build", "--scale", f"worker={workers}")

    def running(self, service: str) -> list[str]:
        """Full ids of the service's running containers."""
        done = self.engine.docker("ps", "-q", "--no-trunc",
                                  "--filter", f"label={PROJECT_LABEL}={self.name}",
                                  "--filter", f"label={SERVICE_LABEL}={service}")
        return done.stdout.split()

    def inspect(self, container: str) -> dict:
        """`docker inspect` of one container."""
        return json.loads(self.engine.docker("inspect", container).stdout)[0]

    def wait_ready(self, workers: int, timeout: float = 120) -> dict:
        """Wait until readiness reports exactly this many workers (queue consumers)."""
        deadline = time.monotonic() + timeout
        status: dict = {}
        while time.monotonic() < deadline:
            try:
                answer = http("GET", f"{self.url}/v2/health/ready", timeout=3)
                status = answer.json()
                if answer.status == 200 and status.get("workers") == workers:
                    return status
            except (OSError, ValueError):
                pass
            time.sleep(0.3)
        raise AssertionError(f"not ready with {workers} worker(s): {status}\n{self.logs()}")

    def wait_healthy(self, timeout: float = 120) -> None:
        """Wait until every running container of the project reports healthy."""
        deadline = time.monotonic() + timeout
        states: dict[str, str] = {}
        while time.monotonic() < deadline:
            states = {}
            for service in ("rabbitmq", "web", "worker"):
                for container in self.running(service):
                    health = self.inspect(container)["State"].get("Health", {})
                    states[f"{service} {container[:12]}"] = health.get("Status", "none")
            if states and set(states.values()) == {"healthy"}:
                return
            time.sleep(1)
        raise AssertionError(f"not all healthy: {states}")

    def put_model(self, shared_data: Path, seed: str = "production") -> str:
        """Import the dataset and a seed model into the models volume, as a user would."""
        files = ["pima-indians-diabetes.csv", f"seed-model/{seed}/model.json",
                 f"seed-model/{seed}/model.h5"]
        script = ("mkdir -p /tmp/in && tar -x -C /tmp/in && cd /tmp/in && "
                  "modelserve data import pima-indians-diabetes.csv && "
                  f"modelserve model import-legacy seed-model/{seed}/model.json "
                  f"seed-model/{seed}/model.h5 --activate --reason tests")
        done = self.compose("run", "--rm", "--no-deps", "-T", "web", "sh", "-c", script,
                            stdin=tar_of(shared_data, files))
        return done.stdout.decode()

    def create_token(self) -> None:
        """Make an API token in the models volume, as a user would (`modelserve tokens create`)."""
        done = self.compose("run", "--rm", "--no-deps", "-T", "web", "modelserve", "tokens",
                            "create", "--name", "tests", "--scope", "operate")
        self.token = done.stdout.decode().strip().splitlines()[-1]

    @property
    def headers(self) -> dict[str, str]:
        """The Authorization header of the project's token."""
        return {"Authorization": f"Bearer {self.token}"}

    def logs(self) -> str:
        """The last lines of every service's log."""
        done = subprocess.run(self.argv("logs", "--no-color", "--tail", "30"), env=self.env(),
                              capture_output=True, text=True, check=False, timeout=60)
        return done.stdout[-6000:]

    def down(self) -> None:
        """Stop and remove the project's containers, networks and volumes."""
        self.compose("down", "-v", "--remove-orphans", "--timeout", "10")

    def leftovers(self) -> list[str]:
        """Containers (any state), networks and volumes still labelled with the project."""
        found = []
        for kind in ("container", "network", "volume"):
            listing = [kind, "ls", "-q", "--filter", f"label={PROJECT_LABEL}={self.name}"]
            if kind == "container":
                listing.insert(3, "--all")
            found += [f"{kind} {ident}" for ident in self.engine.docker(*listing).stdout.split()]
        return found


def tar_of(root: Path, names: list[str]) -> bytes:
    """A tar archive of some files under root, readable by anyone who unpacks it."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as archive:
        for name in names:
            info = archive.gettarinfo(str(root / name), arcname=name)
            info.mode, info.uid, info.gid, info.uname, info.gname = 0o644, 0, 0, "", ""
            with open(root / name, "rb") as data:
                archive.addfile(info, data)
    return buffer.getvalue()
