"""Hosts that boot from user-data (NoCloud), as a cloud VM does, several at once.

Each host is started, then waited for: cloud-init's pip install in one host (single-threaded)
runs while another's runs too, instead of after it.
"""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass
from pathlib import Path

from cli_helpers import run_cli
from containers.engine import Engine

from hosts.testhost import (
    TestHost,
    create_host,
    nocloud_seed,
    put_files,
    start_host,
    wait_booted,
    wait_cloud_init,
    wait_ssh,
)

DATASET = "pima-indians-diabetes.csv"
SEED_DIR = "/srv/seed-model"  # where the operator copied the model in the host
DEPLOY_ENV = ("env", "HOME=/home/deploy", "MODELSERVE_HOME=/home/deploy/.local/share/modelserve")


@dataclass(frozen=True)
class Booted:
    """A host cloud-init made from user-data, and how long that took from its start."""

    host: TestHost
    seconds: float
    alongside: tuple[str, ...]  # the roles that booted at the same time (itself included)


def render(home: Path, role: str, key: Path, mirror: str, *extra: str) -> str:
    """Render a role's user-data with the real CLI, installing from the mirror only."""
    done = run_cli("cloud", "user-data", "--role", role, "--ssh-key", key.with_suffix(".pub"),
                   "--package", "modelserve", "--find-links", f"{mirror}/wheels/",
                   "--no-index", "--dataset-url", f"{mirror}/{DATASET}", *extra, home=home,
                   timeout=60)
    assert done.returncode == 0, done.stderr
    return done.stdout


def import_seed_model(host: TestHost, shared_data: Path) -> None:
    """Put the production seed model into service as deploy, the way an operator would."""
    seed = shared_data / "seed-model" / "production"
    host.put({f"{SEED_DIR}/{name}": (seed / name).read_bytes()
              for name in ("model.json", "model.h5")})
    host.exec("chmod", "-R", "a+rX", SEED_DIR)
    host.exec("runuser", "-u", "deploy", "--", *DEPLOY_ENV, "modelserve", "model",
              "import-legacy", f"{SEED_DIR}/model.json", f"{SEED_DIR}/model.h5", "--activate",
              "--reason", "NoCloud test", timeout=300)


class UserDataBoots:
    """Hosts (one per name) booting from user-data: start several, then wait for each."""

    def __init__(self, engine: Engine, image: str, network: str, key: Path) -> None:
        """Boot on this engine, from this image, on this network, reached with this key."""
        self.engine, self.image, self.network, self.key = engine, image, network, key
        self.prefix = f"msu{secrets.token_hex(3)}"
        self.started: dict[str, tuple[TestHost, float, tuple[str, ...]]] = {}
        self.booted: dict[str, Booted] = {}

    def start(self, name: str, user_data: str, alongside: list[str]) -> None:
        """Create the host with its NoCloud seed and start it; do not wait."""
        began = time.monotonic()
        container = create_host(self.engine, self.image, self.network, name, self.prefix)
        put_files(self.engine, container, nocloud_seed(name, user_data))
        host = start_host(self.engine, container, name, self.key)
        self.started[name] = (host, began, tuple(alongside))

    def ready(self, name: str) -> Booted:
        """The host once cloud-init has finished (the user-data made ops, with the key)."""
        if name not in self.booted:
            assert name in self.started, f"no host {name} was started from user-data"
            host, began, alongside = self.started[name]
            wait_cloud_init(host)
            wait_booted(host)
            wait_ssh(host)
            self.booted[name] = Booted(host, time.monotonic() - began, alongside)
            print(f"\nhost {name} ({host.address}) booted from user-data in "
                  f"{self.booted[name].seconds:.0f} s (alongside {', '.join(alongside)})")
        return self.booted[name]

    def remove(self) -> None:
        """Remove every host started here."""
        containers = [host.container for host, _, _ in self.started.values()]
        if containers:
            self.engine.docker("rm", "-f", "-v", *containers)
