"""Production installs use the lock: the package ships it, and cloud-init, the Ansible common
role and the image install with it as pip constraints."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import zipfile
from importlib import resources
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[2]
LOCK = REPO / "requirements.lock"
COMMON = REPO / "deploy" / "ansible" / "roles" / "common"


def test_the_package_ships_the_root_lock(tmp_path: Path) -> None:
    """A wheel built from the tree holds requirements.lock, byte for byte the root one."""
    assert (resources.files("modelserve") / "requirements.lock").read_text() == LOCK.read_text()
    # Built from a copy (links kept as links), so that the build writes nothing into the tree.
    tree = tmp_path / "tree"
    shutil.copytree(REPO / "src", tree / "src", symlinks=True,
                    ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    for name in ("pyproject.toml", "README.md", "requirements.lock"):
        shutil.copyfile(REPO / name, tree / name)
    built = subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps",
                            "--no-build-isolation", "--wheel-dir", str(tmp_path), str(tree)],
                           capture_output=True, text=True, timeout=300, check=False)
    assert built.returncode == 0, built.stderr
    (wheel,) = tmp_path.glob("modelserve-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        assert archive.read("modelserve/requirements.lock").decode() == LOCK.read_text()


def test_the_lock_pins_every_package_exactly() -> None:
    """Constraints only hold if each line pins one version (name==version)."""
    lines = [line for line in LOCK.read_text().splitlines() if line and not line.startswith("#")]
    assert lines and all(re.fullmatch(r"[A-Za-z0-9._-]+==[A-Za-z0-9.+!-]+", line)
                         for line in lines), [line for line in lines if "==" not in line]
    assert any(line.lower().startswith("keras==") for line in lines)


def test_the_ansible_common_role_installs_with_the_lock() -> None:
    """The role copies the repository's lock to the host and pip's options name it."""
    defaults = yaml.safe_load((COMMON / "defaults" / "main.yml").read_text())
    source = defaults["common_constraints"].replace("{{ playbook_dir }}",
                                                    str(REPO / "deploy" / "ansible"))
    assert Path(source).resolve() == LOCK
    assert "--constraint ' ~ common_constraints_dest" in defaults["common_pip_args"]
    tasks = yaml.safe_load((COMMON / "tasks" / "main.yml").read_text())
    names = [task["name"] for task in tasks]
    copy = tasks[names.index("Copy the lock pip installs with")]
    install = tasks[names.index("Install modelserve into its virtualenv")]
    assert copy["ansible.builtin.copy"]["dest"] == "{{ common_constraints_dest }}"
    assert names.index("Copy the lock pip installs with") < names.index(
        "Install modelserve into its virtualenv")
    assert install["ansible.builtin.pip"]["extra_args"] == "{{ common_pip_args }}"
    handlers = yaml.safe_load((COMMON / "handlers" / "main.yml").read_text())
    assert all("common_pip_args" in handler["ansible.builtin.command"]["cmd"]
               for handler in handlers)


def test_the_image_installs_with_the_lock() -> None:
    """Every pip install of the image's dependencies takes the lock as constraints."""
    dockerfile = (REPO / "deploy" / "docker" / "Dockerfile").read_text()
    assert "COPY pyproject.toml requirements.lock ./" in dockerfile
    installs = [line for line in dockerfile.splitlines()
                if "pip install" in line and "--no-deps" not in line]
    assert installs and all("-c requirements.lock" in line for line in installs), installs
