"""The deploy key's restrictions: one forced command, one repository, two git programs."""

from __future__ import annotations

from pathlib import Path

import pytest

from modelserve.delivery import access
from modelserve.errors import UserError

KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGq3vY1z2dQ0ZfV7m8rJ6n0Hk1pXc3sQ9wYtR5uV8aBc dev@box"


def test_the_entry_is_restricted_to_the_forced_command(tmp_path: Path):
    """restrict (no pty, no forwarding) and command= pinned to serve-git."""
    line = access.authorized_line(KEY, tmp_path, "dev-box")
    assert line.startswith('restrict,command="') and line.endswith(KEY)
    assert "-m modelserve delivery serve-git --key dev-box" in line


def test_not_a_public_key_is_refused(tmp_path: Path):
    """A private key or garbage is not written anywhere."""
    with pytest.raises(UserError, match="not an OpenSSH public key"):
        access.authorized_line("-----BEGIN OPENSSH PRIVATE KEY-----", tmp_path, "dev")


def test_authorize_is_idempotent_and_replaces_an_unrestricted_entry(tmp_path: Path):
    """Run twice: one line; an earlier unrestricted line for the key is dropped; 0600."""
    ssh = tmp_path / ".ssh"
    ssh.mkdir()
    (ssh / "authorized_keys").write_text(f"{KEY}\nssh-rsa AAAAB3other other@box\n")
    assert access.authorize(KEY, tmp_path / "home", ssh).changed is True
    assert access.authorize(KEY, tmp_path / "home", ssh).changed is False
    lines = (ssh / "authorized_keys").read_text().splitlines()
    # Replaced where it was: the other entry keeps its place.
    assert len(lines) == 2 and lines[0].startswith("restrict,command=")
    assert lines[1] == "ssh-rsa AAAAB3other other@box"
    assert (ssh / "authorized_keys").stat().st_mode & 0o777 == 0o600
    # An entry someone adds after ours (a worker host's follow key) is no change for us: the
    # Ansible run that added it must find nothing to do the next time (it did, once).
    with (ssh / "authorized_keys").open("a") as keys:
        keys.write("ssh-ed25519 AAAAC3follow modelserve follow worker1\n")
    assert access.authorize(KEY, tmp_path / "home", ssh).changed is False


@pytest.mark.parametrize(("comment", "name"), [
    ("dev@box", "dev-box"),
    ("modelserve deploy key", "modelserve-deploy-key"),
    ("--; rm -rf / $(id)", "rm-rf-id"),
    ("", "key-"),
])
def test_a_key_is_named_after_its_comment_as_a_plain_identifier(comment: str, name: str):
    """No shell or option syntax survives; a key without a comment is named by its hash."""
    derived = access.key_name(f"{' '.join(KEY.split()[:2])} {comment}".strip())
    assert derived.startswith(name) and access.KEY_NAME.fullmatch(derived)


@pytest.mark.parametrize("name", ["", "-rf", "a b", "x;id", "$(id)", "é", "a" * 65])
def test_a_given_name_must_be_plain(name: str):
    """--name is checked, not sanitized: what the operator typed is what the history says."""
    with pytest.raises(UserError, match="not a key name"):
        access.key_name(KEY, name)


def test_a_name_belongs_to_one_key(tmp_path: Path):
    """Two keys cannot share a name: the history could not tell their pushes apart."""
    ssh = tmp_path / ".ssh"
    other = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOtherOtherOtherOtherOtherOtherOtherOthe dev@box"
    assert access.authorize(KEY, tmp_path / "home", ssh).name == "dev-box"
    with pytest.raises(UserError, match="already another key's"):
        access.authorize(other, tmp_path / "home", ssh)
    assert access.authorize(other, tmp_path / "home", ssh, name="dev-2").changed
    renamed = access.authorize(KEY, tmp_path / "home", ssh, name="alice")
    assert renamed.changed and "--key alice" in (ssh / "authorized_keys").read_text()


@pytest.mark.parametrize("program", ["git-receive-pack", "git-upload-pack"])
def test_push_and_fetch_of_our_repository_pass(tmp_path: Path, program: str):
    """What git sends over SSH for a push or a fetch of our repository."""
    repo = tmp_path / "models.git"
    repo.mkdir()
    assert access.git_command_for(f"{program} '{repo}'", repo) == [program, str(repo.resolve())]


@pytest.mark.parametrize("request_text", [
    None,  # an interactive shell
    "bash",
    "ls /",
    "git-receive-pack '/etc'",
    "git-receive-pack '{repo}/../other.git'",
    "git-receive-pack '{repo}'; rm -rf /",
    "git-upload-archive '{repo}'",
    "scp -t /tmp",
    "git-receive-pack '{repo}",  # unbalanced quote
])
def test_anything_else_is_refused(tmp_path: Path, request_text: str | None):
    """Shells, other programs, other paths, injections: all refused with one message."""
    repo = tmp_path / "models.git"
    repo.mkdir()
    (tmp_path / "other.git").mkdir()
    text = request_text.format(repo=repo) if request_text else None
    with pytest.raises(UserError, match="can only push to and fetch"):
        access.git_command_for(text, repo)
