"""A non-root serving account: confined jobs through the sudo rule, a clear refusal without it."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from cli_helpers import run_cli
from delivery.hosts import LocalUser, python_for_users

from modelserve.sandbox import protocol
from modelserve.sandbox.policy import JOBS, sudoers_path
from modelserve.sandbox.runner import python_path
from modelserve.sandbox.setup import remove_rule, writable_by_others

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("sudo"),
                                 reason="needs root (to make a user) and sudo")]

def run_as(user: LocalUser, *argv: str | Path, stdin: bytes | None = None,
           timeout: float = 600) -> subprocess.CompletedProcess[bytes]:
    """Run a command as the user, with our interpreter reachable and the user's own HOME."""
    env = {"PATH": "/usr/bin:/bin:/usr/sbin:/sbin", "HOME": str(user.home), "LANG": "C.UTF-8"}
    stage = Path(tempfile.mkdtemp(prefix="ms-stage-"))
    try:
        # Our interpreter lives under /root here, which other users cannot enter.
        prefix = python_for_users(stage / "root")
        return subprocess.run([*prefix, "runuser", "-u", user.name, "--", *map(str, argv)],
                              input=stdin, capture_output=True, env=env, timeout=timeout,
                              check=False)
    finally:
        shutil.rmtree(stage, ignore_errors=True)


def cli_as(user: LocalUser, *args: str | Path) -> subprocess.CompletedProcess[bytes]:
    """`python -m modelserve ARGS` as the user."""
    return run_as(user, python_path(), "-m", "modelserve", *args)


@pytest.fixture(scope="module")
def deploy_user() -> Iterator[LocalUser]:
    """A throw-away non-root serving account; its sudo rule goes with it."""
    with LocalUser.create("ms-sandbox") as user:
        try:
            yield user
        finally:
            remove_rule(user.name)


@pytest.fixture(scope="module")
def users_bundle(deploy_user: LocalUser, legacy_bundle: Path) -> Path:
    """A bundle in the user's own home, readable by it."""
    bundle = deploy_user.home / "bundle"
    shutil.copytree(legacy_bundle, bundle)
    (bundle / "plan.npz").unlink()
    for path in (bundle, *bundle.iterdir()):
        os.chown(path, deploy_user.uid, deploy_user.gid)
    return bundle


def test_without_the_rule_the_account_is_told_the_one_command_to_run(deploy_user, users_bundle):
    """No sudo rule: `model check` and `sandbox status` refuse in one line, no traceback."""
    expected = ("refused: model files are loaded only in a sandbox, which needs root; run once, "
                f"as root: modelserve sandbox setup --for-user {deploy_user.name}")
    for args in (("model", "check", users_bundle), ("sandbox", "status")):
        done = cli_as(deploy_user, *args)
        err = done.stderr.decode()
        assert done.returncode == 1 and err.strip() == f"Error: {expected}", err
    setup = cli_as(deploy_user, "sandbox", "setup", "--for-user", deploy_user.name)
    assert setup.returncode == 1 and "needs root" in setup.stderr.decode()
    assert not Path(sudoers_path(deploy_user.name)).exists()


def test_with_the_rule_the_account_runs_jobs_and_nothing_else_as_root(deploy_user, users_bundle,
                                                                      tmp_path, reliability):
    """Installed as an installer would; then checks run through sudo; other commands do not."""
    installed = run_cli("sandbox", "setup", "--for-user", deploy_user.name, home=tmp_path)
    assert installed.returncode == 0 and "installed:" in installed.stdout, installed.stderr
    rule = Path(sudoers_path(deploy_user.name))
    assert stat.S_IMODE(rule.stat().st_mode) == 0o440 and rule.stat().st_uid == 0
    status = cli_as(deploy_user, "sandbox", "status")
    assert status.returncode == 0 and status.stdout.decode().startswith("sandbox: sudo:")
    checked = cli_as(deploy_user, "model", "check", users_bundle)
    assert checked.returncode == 0, checked.stderr.decode()
    assert "runtime: plan" in checked.stdout.decode()

    python = python_path()
    abuses = [("sudo", "-n", python, "-c", "import os; os.system('id')"),
              ("sudo", "-n", python, "-I", "-m", "modelserve.sandbox.privileged", "check", "x"),
              ("sudo", "-n", python, "-I", "-m", "modelserve.sandbox.confine", "{}", "--",
               "/bin/sh"),
              ("sudo", "-n", "/bin/sh", "-c", "id"),
              ("sudo", "-n", python, "-m", "modelserve.sandbox.privileged", "check")]
    for abuse in abuses:
        done = run_as(deploy_user, *abuse)
        assert done.returncode != 0 and b"password is required" in done.stderr, abuse
    listed = run_as(deploy_user, "sudo", "-n", "-l").stdout.decode()
    assert listed.count("modelserve.sandbox.privileged") == len(JOBS), listed  # one rule a job

    garbage = run_as(deploy_user, "sudo", "-n", python, "-I", "-m",
                     "modelserve.sandbox.privileged", "check", stdin=b"not a tar" * 1000)
    answer = protocol.read_answer(garbage.stdout, 1 << 20, set())
    assert garbage.returncode == 0 and "tar" in answer.error, garbage.stderr

    removed = run_cli("sandbox", "remove", "--for-user", deploy_user.name, home=tmp_path)
    assert removed.returncode == 0 and "removed" in removed.stdout
    assert cli_as(deploy_user, "sandbox", "status").returncode == 1
    reliability.record(
        "Security", "a non-root serving account and its sudo rule",
        "without the rule: one line naming `modelserve sandbox setup --for-user`; with it: the "
        "check ran confined through sudo; other command lines through sudo refused",
        abuses_refused=len(abuses), jobs_allowed=3)


def test_setup_refuses_an_installation_another_user_could_change(deploy_user):
    """The rule runs our code as root: code the account could edit would make it root."""
    base = Path(tempfile.mkdtemp(prefix="modelserve-install-", dir="/var/tmp"))  # noqa: S108
    try:
        base.chmod(0o755)
        (base / "venv").mkdir()
        module = base / "venv" / "site.py"
        module.write_text("")
        assert writable_by_others([str(base / "venv")]) is None
        os.chown(module, deploy_user.uid, deploy_user.gid)
        assert writable_by_others([str(base / "venv")]) == str(module)
        (base / "open").mkdir()
        (base / "open").chmod(0o777)
        assert writable_by_others([str(base / "open")]) == str(base / "open")
        assert writable_by_others([str(deploy_user.home)]) == str(deploy_user.home)
        # The system's own trees: their top only (Debian's python3 is a venv's base).
        assert writable_by_others(["/usr", "/usr/lib/python3"]) is None
        refused = run_cli("sandbox", "setup", "--for-user", "root", home=base)
        assert refused.returncode == 1 and "root needs no sudo rule" in refused.stderr
    finally:
        shutil.rmtree(base)
