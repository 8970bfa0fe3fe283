"""The deploy key: an authorized_keys entry that can push to and fetch one repository, nothing else.

sshd runs the forced command whatever the client asked for; the client's request arrives in
SSH_ORIGINAL_COMMAND, and only `git-receive-pack` / `git-upload-pack` of our repository pass.
"""

from __future__ import annotations

import hashlib
import os
import pwd
import re
import shlex
import sys
from dataclasses import dataclass
from pathlib import Path

from modelserve.delivery import keyfile
from modelserve.errors import UserError
from modelserve.fsutil import atomic_write_text

GIT_COMMANDS = ("git-receive-pack", "git-upload-pack")
KEY_TYPES = ("ssh-ed25519", "ssh-rsa", "ecdsa-sha2-nistp256", "ecdsa-sha2-nistp384",
             "ecdsa-sha2-nistp521", "sk-ssh-ed25519@openssh.com")
# serve-git hands the key's name to git-receive-pack, hence to the hooks, in this variable.
PUSHER_ENV = "MODELSERVE_PUSHER"
KEY_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
_NAMED = re.compile(r"serve-git --key ([A-Za-z0-9._-]+)")


@dataclass(frozen=True)
class Authorization:
    """What `delivery authorize` did: the key's name, whether the file changed, any warning."""

    name: str
    path: Path
    changed: bool
    warning: str | None = None


def key_name(public_key: str, name: str | None = None) -> str:
    """The name the history records for a key: the one given, or one made of its comment."""
    if name is not None:
        if not KEY_NAME.fullmatch(name):
            raise UserError(f"{name!r} is not a key name: 1-64 letters, digits, '.', '_' or '-'"
                            ", starting with a letter or digit")
        return name
    parts = public_key.split()
    plain = re.sub(r"[^A-Za-z0-9._-]+", "-", " ".join(parts[2:]))
    derived = re.sub(r"-{2,}", "-", plain).strip("-._")[:64].rstrip("-._")
    if derived:
        return derived
    return "key-" + hashlib.sha256(parts[1].encode() if len(parts) > 1 else b"").hexdigest()[:8]


def forced_command(home: Path, name: str) -> str:
    """The command sshd runs for the deploy key called name."""
    return (f"MODELSERVE_HOME={shlex.quote(str(home.resolve()))} "
            f"{shlex.quote(sys.executable)} -m modelserve delivery serve-git --key {name}")


def authorized_line(public_key: str, home: Path, name: str) -> str:
    """One authorized_keys line: the key, restricted to our forced command."""
    parts = public_key.split()
    if len(parts) < 2 or parts[0] not in KEY_TYPES:
        raise UserError("not an OpenSSH public key (expected e.g. `ssh-ed25519 AAAA... name`)")
    if not KEY_NAME.fullmatch(name):
        raise UserError(f"{name!r} is not a key name")
    command = forced_command(home, name).replace("\\", "\\\\").replace('"', '\\"')
    return f'restrict,command="{command}" {" ".join(parts[:3])}'


def merged_entries(existing: list[str], public_key: str, line: str, name: str) -> list[str]:
    """The authorized_keys lines with ours for this key (any other entry for it removed)."""
    key_body = public_key.split()[1]
    ours = [i for i, entry in enumerate(existing) if key_body in entry.split()]
    kept = [entry for entry in existing if key_body not in entry.split()]
    for entry in kept:
        taken = _NAMED.search(entry)
        if taken and taken.group(1) == name:
            raise UserError(f"the name {name!r} is already another key's here; "
                            "give this one its own with --name")
    # Our line stays where this key's first entry was: entries others add later (a worker
    # host's follow key) must not make the next run see a change in their order.
    at = ours[0] if ours else len(kept)
    return [*kept[:at], line, *kept[at:]]


def authorize(public_key: str, home: Path, ssh_dir: Path, name: str | None = None
              ) -> Authorization:
    """Add (or refresh) the deploy key in ssh_dir/authorized_keys, out of the account's reach.

    Run as root for another account's ssh dir, the file and its folder become root's (and
    the folder immutable where the file system allows): code running as that account cannot
    give itself a shell. Run as the account, its keys stay writable by it: we warn.
    """
    name = key_name(public_key, name)
    line = authorized_line(public_key, home, name)
    path = ssh_dir / "authorized_keys"
    owner = keyfile.account_of(ssh_dir)
    if os.geteuid() == 0 and owner not in (None, 0):
        changed, problem = keyfile.write_root_owned(
            ssh_dir, lambda existing: merged_entries(existing, public_key, line, name))
        return Authorization(name, path, changed, problem)
    existing = path.read_text().splitlines() if path.is_file() else []
    entries = merged_entries(existing, public_key, line, name)
    changed = entries != existing
    if changed:
        ssh_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        old_umask = os.umask(0o077)
        try:
            atomic_write_text(path, "\n".join(entries) + "\n")
        finally:
            os.umask(old_umask)
    return Authorization(name, path, changed, _writable_warning(path) if os.geteuid() else None)


def _writable_warning(path: Path) -> str:
    """The warning for keys the account itself can rewrite."""
    account = pwd.getpwuid(os.geteuid()).pw_name
    return (f"warning: {account} can rewrite {path} (code running as {account} could add a "
            f"key with a shell); as root, run `modelserve delivery authorize KEY.pub --ssh-dir "
            f"{path.parent}` to make it root-owned")


def git_command_for(original: str | None, repository: Path) -> list[str]:
    """The git command to run for a client's request, or refuse anything else."""
    try:
        words = shlex.split(original or "")
    except ValueError:
        words = []
    if len(words) != 2 or words[0] not in GIT_COMMANDS:
        raise UserError(f"this key can only push to and fetch {repository}; "
                        f"{(original or 'a shell')[:60]!r} is not allowed")
    wanted = Path(words[1]).expanduser()
    if wanted.resolve() != repository.resolve():
        raise UserError(f"this key can only push to and fetch {repository}")
    return [words[0], str(repository.resolve())]
