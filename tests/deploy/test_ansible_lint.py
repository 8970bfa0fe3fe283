"""The Ansible roles and playbook: ansible-lint clean (production profile) and well formed."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ANSIBLE = Path(__file__).resolve().parents[2] / "deploy" / "ansible"
BIN = Path(sys.executable).parent


def _run(*argv: str) -> subprocess.CompletedProcess:
    """Run an Ansible tool from our virtualenv in the playbook folder."""
    return subprocess.run([str(BIN / argv[0]), *argv[1:]], cwd=ANSIBLE, capture_output=True,
                          text=True, timeout=300, check=False)


def test_ansible_lint_is_clean():
    """Every role and the site playbook pass ansible-lint's strictest shipped profile."""
    done = _run("ansible-lint", "--profile", "production", "--nocolor", "site.yml")
    assert done.returncode == 0, done.stdout + done.stderr


def test_the_site_playbook_parses_with_the_example_inventory():
    """Syntax, roles and variables files resolve; the inventory has the documented groups."""
    done = _run("ansible-playbook", "--syntax-check", "site.yml")
    assert done.returncode == 0, done.stdout + done.stderr
    groups = _run("ansible-inventory", "--list")
    assert groups.returncode == 0, groups.stderr
    assert all(f'"{group}"' in groups.stdout for group in ("production", "development",
                                                           "workers"))
