"""End to end over SSH: a development checkout pushes to production's sshd in a namespace."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from cli_helpers import run_cli
from serving.auth_helpers import bearer, create_token
from serving.conftest import prepare_home, version_of_seed
from serving.stack_helpers import start_stack

from delivery import pushes
from delivery.gitops import Load, commit_and_push, git, registry_state
from delivery.hosts import LocalUser, NetnsHost, generate_key, python_for_users, run
from modelserve.registry import Registry


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


def _token_header(home: Path) -> dict[str, str]:
    """The Authorization header of a new predict token (the stack listens off loopback)."""
    return bearer(create_token(home)[1])


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
    assert run_cli("delivery", "init", home=home).returncode == 0  # the stack's URL comes later
    keys_file = _authorize(home, key, tmp_path / "production-ssh")
    with NetnsHost(root_keys=keys_file) as host:
        # Off loopback the stack requires tokens; its rate limit is tested elsewhere, and the
        # load here must not spend it (one client, as fast as it can, for minutes).
        stack = start_stack(home, "--workers", "2", "--host", "0.0.0.0",  # noqa: S104 (ns only)
                            prefix=("ip", "netns", "exec", host.name), address=host.address,
                            env={"MODELSERVE_RATE_LIMIT": "off"})
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
    with Load(stack.url, headers=_token_header(stack.home)) as load:
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
    with Load(stack.url, headers=_token_header(stack.home)) as load:
        accepted = commit_and_push(checkout, "development model", env=env,
                                   remote="production")
    assert accepted.returncode == 0 and "push -> live in" in accepted.stderr, accepted.stderr
    print("\n".join(line for line in accepted.stderr.splitlines() if "remote:" in line))
    live = registry_state(stack.home)[0]
    assert live != production_version
    assert not load.failures and set(load.versions) == {production_version, live}, load.versions
    # The history says which key pushed: `delivery key` comments its keys so.
    event = Registry(stack.home / "registry").history()[-1]
    assert (event["action"], event["user"]) == ("activate", "modelserve-deploy-key"), event

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


@pytest.fixture
def deploy_account(tmp_path: Path, shared_data: Path, pima_csv: Path):
    """A real deploy account owning a production home (seed model live), delivery set up."""
    with LocalUser.create(sandbox=True) as user:  # its hooks check models in the sandbox
        home = user.home / "modelserve"
        prepare_home(home, shared_data, pima_csv)
        assert run_cli("models", "activate", version_of_seed(home, "production"),
                       home=home).returncode == 0
        # No stack here: the push must be taken and activated, not served (no wait for it).
        init = run_cli("delivery", "init", "--web-url", "http://127.0.0.1:9", "--live-timeout",
                       "0", home=home)
        assert init.returncode == 0, init.stderr
        run("chown", "-R", f"{user.name}:{user.name}", home)
        yield user, home


@pytest.mark.slow
def test_the_deploy_account_cannot_rewrite_its_keys_and_the_key_still_pushes(
        deploy_account, shared_data, tmp_path, reliability):
    """`authorize` as root: the account can neither write nor replace its keys; sshd takes them."""
    user, home = deploy_account
    keys = tmp_path / "dev-ssh"
    keys.mkdir(mode=0o700)
    key = generate_key(keys, "alice@laptop")
    ssh_dir = user.home / ".ssh"
    done = run_cli("delivery", "authorize", f"{key}.pub", "--ssh-dir", ssh_dir, home=home)
    assert done.returncode == 0 and "as 'alice-laptop'" in done.stdout, done.stderr
    assert "warning" not in done.stderr, done.stderr
    for path, mode in ((ssh_dir, 0o755), (ssh_dir / "authorized_keys", 0o644)):
        info = path.stat()
        assert (info.st_uid, info.st_mode & 0o7777) == (0, mode), (path, oct(info.st_mode))
    attempts = {
        "append a key": ["sh", "-c", f"echo ssh-ed25519 AAAA evil >> {ssh_dir}/authorized_keys"],
        "replace the file": ["sh", "-c", f"cp /dev/null {ssh_dir}/new && mv {ssh_dir}/new "
                             f"{ssh_dir}/authorized_keys"],
        "rename ~/.ssh away": ["mv", str(ssh_dir), f"{user.home}/old-ssh"],
        "remove ~/.ssh": ["rm", "-rf", str(ssh_dir)],
    }
    for what, command in attempts.items():
        assert user.run(*command, check=False).returncode != 0, what
    assert "evil" not in (ssh_dir / "authorized_keys").read_text()
    again = run_cli("delivery", "authorize", f"{key}.pub", "--ssh-dir", ssh_dir, home=home)
    assert "already authorized" in again.stdout, again.stderr

    with NetnsHost(users_run_python=True) as host:
        client = host.client(key)
        checkout = tmp_path / "dev"
        repo = home / "delivery" / "models.git"
        cloned = client.git("clone", "-q", f"{user.name}@{host.address}:{repo}", str(checkout))
        assert cloned.returncode == 0, cloned.stderr + host.log()
        pushes.copy_seed(shared_data, "development", checkout)
        pushed = commit_and_push(checkout, "development model", env=client.git_env())
        shell = client.ssh(f"{user.name}@{host.address}", "id")
    assert pushed.returncode == 0 and "live: " in pushed.stderr, pushed.stderr
    assert shell.returncode != 0 and "can only push to and fetch" in shell.stderr
    event = Registry(home / "registry").history()[-1]
    assert (event["action"], event["user"], event["account"]) == (
        "activate", "alice-laptop", user.name), event
    reliability.record(
        "Security", "the deploy account's authorized_keys (authorize as root)",
        "root's 0644 file in root's immutable 0755 ~/.ssh: append, replace, rename and "
        "remove as the account all fail; sshd (StrictModes) still takes the key; the "
        "history names the key", attempts_refused=len(attempts), pushes_accepted=1)


@pytest.mark.slow  # root: a local account, runuser
def test_authorize_run_as_the_account_warns(tmp_path: Path):
    """The account's own run keeps its keys writable by it: one warning line says how to fix."""
    with LocalUser.create() as user:
        public = user.home / "bob.pub"
        run("cp", generate_key(tmp_path, "bob").with_suffix(".pub"), public)
        assert run_cli("delivery", "init", home=user.home / "modelserve").returncode == 0
        run("chown", "-R", f"{user.name}:{user.name}", user.home)
        done = run(*python_for_users(tmp_path / "root"), "runuser", "-u", user.name, "--",
                   "env", f"HOME={user.home}", f"MODELSERVE_HOME={user.home}/modelserve",
                   sys.executable, "-m", "modelserve", "delivery", "authorize", public,
                   check=False)
        keys = user.home / ".ssh" / "authorized_keys"
        assert done.returncode == 0 and "authorized" in done.stdout, done.stderr
        warning = done.stderr.strip().splitlines()
        assert len(warning) == 1 and warning[0].startswith(f"warning: {user.name} can rewrite")
        assert f"--ssh-dir {keys.parent}" in warning[0]
        assert keys.stat().st_uid == user.uid and keys.stat().st_mode & 0o777 == 0o600
