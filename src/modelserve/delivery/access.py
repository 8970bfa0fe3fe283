"""The deploy key: an authorized_keys entry that can push to and fetch one repository, nothing else.

sshd runs the forced command whatever the client asked for; the client's request arrives in
SSH_ORIGINAL_COMMAND, and only `git-receive-pack` / `git-upload-pack` of our repository pass.
"""

from __future__ import annotations

import os
import shlex
import sys
from pathlib import Path

from modelserve.errors import UserError
from modelserve.fsutil import atomic_write_text

GIT_COMMANDS = ("git-receive-pack", "git-upload-pack")
KEY_TYPES = ("ssh-ed25519", "ssh-rsa", "ecdsa-sha2-nistp256", "ecdsa-sha2-nistp384",
             "ecdsa-sha2-nistp521", "sk-ssh-ed25519@openssh.com")


def forced_command(home: Path) -> str:
    """The command sshd runs for the deploy key."""
    return (f"MODELSERVE_HOME={shlex.quote(str(home.resolve()))} "
            f"{shlex.quote(sys.executable)} -m modelserve delivery serve-git")


def authorized_line(public_key: str, home: Path) -> str:
    """One authorized_keys line: the key, restricted to our forced command."""
    parts = public_key.split()
    if len(parts) < 2 or parts[0] not in KEY_TYPES:
        raise UserError("not an OpenSSH public key (expected e.g. `ssh-ed25519 AAAA... name`)")
    command = forced_command(home).replace("\\", "\\\\").replace('"', '\\"')
    return f'restrict,command="{command}" {" ".join(parts[:3])}'


def authorize(public_key: str, home: Path, ssh_dir: Path) -> bool:
    """Add (or refresh) the deploy key in ssh_dir/authorized_keys; return whether it changed."""
    line = authorized_line(public_key, home)
    key_body = public_key.split()[1]
    path = ssh_dir / "authorized_keys"
    existing = path.read_text().splitlines() if path.is_file() else []
    # Any other entry for this key (say, an unrestricted one) goes: the key gets ours only.
    kept = [entry for entry in existing if key_body not in entry.split()]
    if existing.count(line) == 1 and len(kept) == len(existing) - 1:
        return False
    ssh_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    old_umask = os.umask(0o077)
    try:
        atomic_write_text(path, "\n".join([*kept, line]) + "\n")
    finally:
        os.umask(old_umask)
    return True


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
