"""Read a push's objects (still in git's quarantine) without trusting their number or size.

Every read is bounded before it is made: tree entries are counted as git streams them and
the count stops at the cap; a blob is read only once its size is known to be within limits,
straight into a file.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

from modelserve.delivery.refs import TreeEntry, parse_entries
from modelserve.errors import UserError

READ_CHUNK = 1 << 16
MAX_NEW_COMMITS = 1000  # one push brings a few commits; each is counted in full


class GitReadError(UserError):
    """git could not read what was pushed; the message is one `refused:` line."""


def _git(*args: str) -> bytes:
    """Run git in the hook's repository (quarantined objects included) and return stdout."""
    done = subprocess.run(["git", *args], capture_output=True, check=False)  # noqa: S603,S607
    if done.returncode != 0:
        message = done.stderr.decode(errors="replace").strip().splitlines()
        raise GitReadError(f"refused: git {args[0]} failed: {(message or ['?'])[-1]}")
    return done.stdout


def peeled_commit(oid: str) -> str | None:
    """The commit an object is or (as a tag) points at; None for a tree or a blob."""
    done = subprocess.run(["git", "rev-parse", "--verify", "--quiet",  # noqa: S603,S607
                           f"{oid}^{{commit}}"], capture_output=True, text=True, check=False)
    return done.stdout.strip() if done.returncode == 0 else None


def new_trees(tips: list[str]) -> dict[str, str]:
    """Map each tree the push's new commits hold to one of those commits (refs not counted)."""
    listing = _git("rev-list", "--no-commit-header", "--format=%H %T",
                   f"--max-count={MAX_NEW_COMMITS + 1}", *tips, "--not", "--all").decode()
    pairs = [line.split() for line in listing.splitlines() if line.strip()]
    if len(pairs) > MAX_NEW_COMMITS:
        raise GitReadError(f"refused: the push brings more than {MAX_NEW_COMMITS:,} new commits;"
                           " push a shorter history")
    return {tree: commit for commit, tree in reversed(pairs)}


def count_entries(tree: str, cap: int) -> int:
    """Count a tree's files and folders, recursively, stopping once the count passes cap."""
    command = ["git", "ls-tree", "-r", "-t", "-z", tree]
    count = 0
    with subprocess.Popen(command, stdout=subprocess.PIPE,  # noqa: S603,S607
                          stderr=subprocess.DEVNULL) as listing:
        stream = listing.stdout
        while stream is not None and (chunk := stream.read(READ_CHUNK)):
            count += chunk.count(b"\0")
            if count > cap:  # the rest is never listed: 200,000 entries cost no more than cap
                listing.kill()
                return count
    if listing.returncode != 0:
        raise GitReadError(f"refused: git ls-tree cannot read tree {tree[:12]}")
    return count


def is_ancestor(old: str, new: str) -> bool:
    """Tell whether new contains old (a fast-forward)."""
    done = subprocess.run(["git", "merge-base", "--is-ancestor", old, new],  # noqa: S603,S607
                          capture_output=True, check=False)
    if done.returncode not in (0, 1):
        raise GitReadError(f"refused: git merge-base cannot compare {old[:12]} and {new[:12]}")
    return done.returncode == 0


def entries(commit: str, paths: list[str], recursive: bool = False) -> list[TreeEntry]:
    """The tree entries (with sizes) of these paths in a commit; call after the entry cap."""
    return parse_entries(_git("ls-tree", "-l", "-z", *(["-r"] if recursive else []), commit,
                              "--", *paths))


def write_blob(entry: TreeEntry, destination: Path) -> None:
    """Copy a blob of known, checked size into a new file (never through a link)."""
    with open(destination, "xb") as out:
        done = subprocess.run(["git", "cat-file", "blob", entry.oid],  # noqa: S603,S607
                              stdout=out, stderr=subprocess.PIPE, check=False)
    if done.returncode != 0 or destination.stat().st_size != entry.size:
        raise GitReadError(f"refused: git cat-file cannot read {entry.path}")
