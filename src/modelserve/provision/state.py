"""What `cloud up` created, per deployment, and the Ansible inventory of every deployment."""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass
from pathlib import Path

from modelserve.errors import UserError
from modelserve.fsutil import atomic_write_text

GROUPS = {"prod": "production", "dev": "development"}  # the inventory groups Ansible uses


@dataclass
class Deployment:
    """One deployment's record: its name, role, and the ids of what was created for it."""

    name: str
    role: str
    containers: bool = False
    cloud: str = ""
    admin_user: str = "ops"
    address: str = ""
    keypair: str = ""  # set only when `up` created the keypair (a reused one is not ours)
    security_group: str = ""
    server: str = ""
    floating_ip: str = ""

    def created(self) -> bool:
        """Whether anything of this deployment exists according to the record."""
        return any((self.keypair, self.security_group, self.server, self.floating_ip))


def check_name(name: str) -> str:
    """Refuse deployment names that cannot be a server name, a tag and a file name."""
    if not re.fullmatch(r"[a-z0-9][a-z0-9-]{0,62}", name):
        raise UserError(f"--name {name!r}: use lower-case letters, digits and '-'")
    return name


class StateDir:
    """The folder of deployment records (one JSON file each) and the inventory."""

    def __init__(self, folder: Path, inventory: Path | None = None):
        self.folder = folder
        self.inventory = inventory or folder / "inventory.yml"

    def _path(self, name: str) -> Path:
        """The record file of a deployment."""
        return self.folder / "deployments" / f"{name}.json"

    def load(self, name: str) -> Deployment | None:
        """The record of a deployment, or None."""
        path = self._path(name)
        return Deployment(**json.loads(path.read_text())) if path.is_file() else None

    def save(self, deployment: Deployment) -> None:
        """Write a record at once (after every creation, so a killed run leaves a trace)."""
        path = self._path(deployment.name)
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(path, json.dumps(asdict(deployment), indent=2) + "\n")

    def remove(self, name: str) -> None:
        """Forget a deployment (and the certificate `up` pinned for it)."""
        self._path(name).unlink(missing_ok=True)
        self.certificate(name).unlink(missing_ok=True)

    def certificate(self, name: str) -> Path:
        """Where `up` keeps the web certificate a production server vouched for."""
        return self.folder / "certificates" / f"{name}.crt"

    def pin_certificate(self, name: str, pem: str) -> Path:
        """Keep a server's certificate: clients verify the server with it."""
        path = self.certificate(name)
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(path, pem)
        return path

    def all(self) -> list[Deployment]:
        """Every recorded deployment, by name."""
        folder = self.folder / "deployments"
        names = sorted(p.stem for p in folder.glob("*.json")) if folder.is_dir() else []
        return [d for d in (self.load(n) for n in names) if d is not None]

    def write_inventory(self) -> Path:
        """Write the Ansible inventory of every deployment that has an address."""
        groups: dict[str, dict] = {group: {"hosts": {}} for group in GROUPS.values()}
        for deployment in self.all():
            if not deployment.address:
                continue
            groups[GROUPS[deployment.role]]["hosts"][deployment.name] = {
                "ansible_host": deployment.address,
                "ansible_user": deployment.admin_user,
                "modelserve_containers": deployment.containers,
            }
        # PyYAML comes with the cloud extra (openstacksdk), which a server does not install: the
        # CLI, which imports this module, must start without it.
        import yaml

        text = ("# Written by `modelserve cloud up/down`; rewritten on every run.\n"
                + yaml.safe_dump({"all": {"children": groups}}, sort_keys=False))
        self.inventory.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(self.inventory, text)
        return self.inventory
