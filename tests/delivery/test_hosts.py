"""The SSH test hosts themselves: key logins, git push over SSH, and a clean teardown."""

from __future__ import annotations

import pwd
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from delivery.hosts import LocalUser, NetnsHost, generate_key, live_pids, run
from modelserve.sandbox.policy import sudoers_path

pytestmark = pytest.mark.slow  # root: accounts, sshd in network namespaces

# Local git commands must not depend on the machine's git identity.
GIT_IDENTITY = ["-c", "user.name=t", "-c", "user.email=t@t"]


@pytest.fixture(scope="module")
def deploy_user() -> Iterator[LocalUser]:
    """A throw-away deploy user with its model-sandbox rule, shared by this module's tests."""
    with LocalUser.create(sandbox=True) as user:
        yield user


@pytest.fixture(scope="module")
def host(deploy_user: LocalUser) -> Iterator[NetnsHost]:
    """A namespace host running sshd; exits before the user (depends on it)."""
    with NetnsHost() as started:
        yield started


@pytest.fixture(scope="module")
def deploy_key(tmp_path_factory: pytest.TempPathFactory, deploy_user: LocalUser) -> Path:
    """A client key the deploy user authorizes."""
    key = generate_key(tmp_path_factory.mktemp("keys"))
    deploy_user.authorize(key.with_suffix(".pub"))
    return key


def test_ssh_logs_in_with_the_authorized_key_only(host, deploy_user, deploy_key, tmp_path):
    """The authorized key gets a shell as the user; an unknown key is refused."""
    target = f"{deploy_user.name}@{host.address}"
    allowed = host.client(deploy_key).ssh(target, "id", "-un")
    assert allowed.returncode == 0, allowed.stderr + host.log()
    assert allowed.stdout.strip() == deploy_user.name

    refused = host.client(generate_key(tmp_path, "stranger")).ssh(target, "true")
    assert refused.returncode == 255
    assert "Permission denied (publickey)" in refused.stderr


def test_ssh_rejects_a_host_key_it_does_not_know(host, deploy_user, deploy_key, tmp_path):
    """Host key checking is strict: a known_hosts holding another key stops the login."""
    other = generate_key(tmp_path, "other_host").with_suffix(".pub").read_text().split()
    known_hosts = tmp_path / "known_hosts"
    known_hosts.write_text(f"{host.address} {other[0]} {other[1]}\n")
    client = host.client(deploy_key)
    client.known_hosts = known_hosts
    result = client.ssh(f"{deploy_user.name}@{host.address}", "true")
    assert result.returncode == 255
    assert "Host key verification failed" in result.stderr


def test_git_push_over_ssh_reaches_the_bare_repository(host, deploy_user, deploy_key, tmp_path):
    """A commit pushed from a local clone lands in a bare repository the user owns."""
    bare = deploy_user.home / "app.git"
    deploy_user.run("git", "init", "--quiet", "--bare", "--initial-branch=main", bare)
    client = host.client(deploy_key)
    work = tmp_path / "work"
    cloned = client.git("clone", f"{deploy_user.name}@{host.address}:app.git", str(work))
    assert cloned.returncode == 0, cloned.stderr
    (work / "README").write_text("delivered\n")
    run("git", "-C", work, "add", "README")
    run("git", "-C", work, *GIT_IDENTITY, "commit", "--quiet", "-m", "first")
    pushed = client.git("push", "origin", "HEAD:refs/heads/main", cwd=work)
    assert pushed.returncode == 0, pushed.stderr

    local_head = run("git", "-C", work, "rev-parse", "HEAD").stdout.strip()
    # Read as the owner: git refuses repositories owned by someone else ("dubious ownership").
    remote_head = deploy_user.run("git", "--git-dir", bare, "rev-parse", "main").stdout.strip()
    assert remote_head == local_head
    assert bare.stat().st_uid == deploy_user.uid


def test_teardown_leaves_no_namespace_sshd_or_user(tmp_path):
    """After exit: no namespace, no link, none of the host's processes, no user or home."""
    with LocalUser.create(sandbox=True) as user, NetnsHost() as netns_host:
        assert Path(sudoers_path(user.name)).is_file()  # as an installer leaves it
        key = generate_key(tmp_path)
        user.authorize(key.with_suffix(".pub"))
        # A session still open at exit: its sshd children must go too.
        session = subprocess.Popen(
            [*netns_host.client(key).command(), f"{user.name}@{netns_host.address}", "sleep 60"],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_for_session(netns_host, user)
        inside = netns_host.pids()
        name, link, home = netns_host.name, netns_host.host_link, user.home
    session.wait(timeout=10)

    assert len(inside) >= 3  # listener, session monitor, the user's sleep
    assert live_pids(inside) == []
    assert name not in run("ip", "netns", "list").stdout.split()
    assert run("ip", "link", "show", link, check=False).returncode != 0
    with pytest.raises(KeyError):
        pwd.getpwnam(user.name)
    assert not home.exists()
    assert not Path(sudoers_path(user.name)).exists()


def wait_for_session(host: NetnsHost, user: LocalUser, seconds: float = 10) -> None:
    """Wait until the user has a process inside the namespace (the remote command)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if user.uid in {_owner(pid) for pid in host.pids()}:
            return
        time.sleep(0.05)
    raise AssertionError(f"no session of {user.name} appeared: {host.log()}")


def _owner(pid: int) -> int | None:
    """The uid of a process, or None when it has exited since it was listed."""
    try:
        return Path(f"/proc/{pid}").stat().st_uid
    except FileNotFoundError:
        return None
