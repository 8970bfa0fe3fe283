"""End to end over SSH: a development checkout pushes to production's sshd in a namespace."""

from __future__ import annotations

from pathlib import Path

import pytest
from cli_helpers import run_cli
from serving.conftest import prepare_home, version_of_seed
from serving.stack_helpers import start_stack

from delivery import pushes
from delivery.gitops import Load, commit_and_push, git, registry_state
from delivery.hosts import NetnsHost, generate_key


def _authorize(home: Path, key: Path, keys_dir: Path) -> Path:
    """Authorize a development key with `modelserve delivery authorize` (twice: idempotent)."""
    result = run_cli("delivery", "authorize", f"{key}.pub", "--ssh-dir", keys_dir, home=home)
    assert result.returncode == 0 and "authorized" in result.stdout, result.stderr
    again = run_cli("delivery", "authorize", f"{key}.pub", "--ssh-dir", keys_dir, home=home)
    assert "already authorized" in again.stdout
    return keys_dir / "authorized_keys"


def _new_key(directory: Path) -> Path:
    """A fresh client key pair; returns the private key."""
    directory.mkdir(mode=0o700)
    return generate_key(directory)


def _deploy_key(directory: Path, home: Path) -> Path:
    """The development server's key, made by `modelserve delivery key`."""
    key = directory / "modelserve_deploy"
    made = run_cli("delivery", "key", "--path", key, home=home)
    assert made.returncode == 0 and "created key" in made.stdout, made.stderr
    assert "existing key" in run_cli("delivery", "key", "--path", key, home=home).stdout
    return key


@pytest.fixture
def production_host(tmp_path: Path, shared_data: Path, pima_csv: Path):
    """Production as a host: its sshd and its serving stack in one namespace; a dev key."""
    home = tmp_path / "production" / "home"
    prepare_home(home, shared_data, pima_csv)
    assert run_cli("models", "activate", version_of_seed(home, "production"),
                   home=home).returncode == 0
    key = _deploy_key(tmp_path / "dev-ssh", tmp_path / "dev-home")
    keys_file = _authorize(home, key, tmp_path / "production-ssh")
    with NetnsHost(root_keys=keys_file) as host:
        stack = start_stack(home, "--workers", "2", "--host", "0.0.0.0",  # noqa: S104 (ns only)
                            prefix=("ip", "netns", "exec", host.name), address=host.address)
        try:
            stack.wait_ready(workers=2)
            # The hooks run on the host, beside the stack: they reach it on its loopback.
            init = run_cli("delivery", "init", "--web-url", f"http://127.0.0.1:{stack.port}",
                           "--max-mb", "1", home=home)
            assert init.returncode == 0, init.stderr
            yield host, stack, key
        finally:
            stack.stop()


@pytest.mark.slow
def test_push_over_ssh_goes_live_and_the_key_can_do_nothing_else(production_host,
                                                                   shared_data, tmp_path,
                                                                   reliability):
    """Refused and accepted pushes over real SSH; the key gets no shell and no other path."""
    host, stack, key = production_host
    production_version = registry_state(stack.home)[0]
    repo = stack.home / "delivery" / "models.git"
    client = host.client(key)
    checkout = tmp_path / "dev"
    cloned = client.git("clone", "-q", f"root@{host.address}:{repo}", str(checkout))
    assert cloned.returncode == 0, cloned.stderr
    added = run_cli("delivery", "remote", "add", "production", f"root@{host.address}",
                    "--repo", repo, "--key", key, "--checkout", checkout, home=tmp_path)
    assert added.returncode == 0 and "added: remote production" in added.stdout, added.stderr
    env = client.git_env()  # the test host's known_hosts; the key is the same

    state = registry_state(stack.home)
    kinds = [*pushes.REFUSED_KINDS, (pushes.too_large, "byte limit")]
    with Load(stack.url) as load:
        for breaker, words in kinds:
            pushes.copy_seed(shared_data, "production", checkout)
            breaker(checkout)
            refused = commit_and_push(checkout, breaker.__name__, env=env, remote="production")
            reason = [line for line in refused.stderr.splitlines() if "refused" in line]
            assert refused.returncode != 0 and words in reason[0], refused.stderr
            print(f"{breaker.__name__}: {reason[0].strip()}")
    reliability.record(
        "Bad input", "bad pushes over SSH under load",
        "kinds: " + ", ".join(breaker.__name__ for breaker, _ in kinds), kinds=len(kinds),
        refused=len(kinds), versions_changed=int(registry_state(stack.home) != state),
        requests=len(load.answers), requests_failed=len(load.failures))
    assert registry_state(stack.home) == state
    assert not load.failures and set(load.versions) == {production_version}, load.versions
    (checkout / "ballast.bin").unlink()

    pushes.copy_seed(shared_data, "development", checkout)
    with Load(stack.url) as load:
        accepted = commit_and_push(checkout, "development model", env=env,
                                   remote="production")
    assert accepted.returncode == 0 and "push -> live in" in accepted.stderr, accepted.stderr
    print("\n".join(line for line in accepted.stderr.splitlines() if "remote:" in line))
    live = registry_state(stack.home)[0]
    assert live != production_version
    assert not load.failures and set(load.versions) == {production_version, live}, load.versions

    shell = client.ssh(f"root@{host.address}")
    assert shell.returncode != 0 and "can only push to and fetch" in shell.stderr
    command = client.ssh(f"root@{host.address}", "cat", "/etc/shadow")
    assert command.returncode != 0 and "root:" not in command.stdout
    assert client.git("ls-remote", f"root@{host.address}:/etc").returncode != 0
    assert git("fetch", "-q", "origin", cwd=checkout, env=env).returncode == 0
    stranger = host.client(_new_key(tmp_path / "stranger"))
    assert stranger.git("ls-remote", f"root@{host.address}:{repo}").returncode != 0
    reliability.record(
        "Security", "the deploy key over real SSH", pushes_accepted=1, attempts_refused=4,
        note="a shell, a command (cat /etc/shadow), another repository path and a stranger's "
             "key refused; fetch of the models repository allowed")
