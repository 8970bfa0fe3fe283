"""Fresh hosts are servers: systemd runs, and they reach each other over SSH as ops."""

from __future__ import annotations

import pytest

from hosts.testhost import ADMIN, inventory

pytestmark = pytest.mark.slow


def test_two_hosts_reach_each_other_over_ssh(fresh_host, host_key) -> None:
    """Each host runs systemd as PID 1; ops logs in from one host to the other, with sudo."""
    first, second = fresh_host("alpha"), fresh_host("beta")
    assert first.address != second.address
    for host in (first, second):
        assert host.exec("ps", "-o", "comm=", "-p", "1").stdout.strip() == "systemd"
        state = host.ssh("systemctl", "is-system-running", check=False).stdout.strip()
        assert state in ("running", "degraded"), host.exec("systemctl", "--failed").stdout
        assert host.ssh("sudo", "-n", "id", "-u").stdout.strip() == "0"
    # Host to host, as git push from development to production goes: the key travels along.
    first.put({f"/home/{ADMIN}/.ssh/id_ed25519": host_key.read_text()})
    first.exec("chown", f"{ADMIN}:{ADMIN}", f"/home/{ADMIN}/.ssh/id_ed25519")
    first.exec("chmod", "0600", f"/home/{ADMIN}/.ssh/id_ed25519")
    hop = first.ssh("ssh", "-o", "StrictHostKeyChecking=no", "-o", "BatchMode=yes",
                    f"{ADMIN}@{second.address}", "hostname")
    assert hop.stdout.strip() == "beta"
    assert "Server listening" in second.journal("ssh")
    # What Ansible reads: every host under its group, reached as ops with the session's key.
    text = inventory({"production": [first], "workers": [second]}, host_key).read_text()
    assert f"alpha ansible_host={first.address}" in text
    assert f"[workers]\nbeta ansible_host={second.address}" in text
    assert f"ansible_user={ADMIN}" in text and f"ansible_ssh_private_key_file={host_key}" in text
