"""The repository accepts only what deploys: real pushes that git or the gate must refuse.

These need no serving stack: every refusal here comes before a model is loaded, so each test
has its own home with `delivery init` only, and a development clone of its repository.
"""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
from cli_helpers import run_cli

from delivery.gitops import commit, git, push

EMPTY_BLOB = "e69de29bb2d1d6434b8b29ae775ad8c2e48c5391"


class Server:
    """A production home with delivery set up, and a development clone of its repository."""

    def __init__(self, root: Path):
        self.home = root / "home"
        self.repo = self.home / "delivery" / "models.git"
        self.checkout = root / "dev"

    def init(self, *options: str) -> subprocess.CompletedProcess:
        """Run `delivery init` with these options (again: updates the settings)."""
        result = run_cli("delivery", "init", *options, home=self.home)
        assert result.returncode == 0, result.stderr
        return result

    def refs(self) -> list[str]:
        """Every ref the repository holds."""
        listed = git("for-each-ref", "--format=%(refname)", cwd=self.repo).stdout
        return listed.split()

    def stored_bytes(self) -> int:
        """The size of the repository's objects (loose, packed, and any quarantine left)."""
        return sum(path.stat().st_size for path in (self.repo / "objects").rglob("*")
                   if path.is_file())


@pytest.fixture
def server(tmp_path: Path) -> Server:
    """A repository holding one commit on master (put there on the server, not pushed)."""
    made = Server(tmp_path)
    made.init()
    git("clone", "-q", str(made.repo), str(made.checkout), cwd=tmp_path)
    (made.checkout / "README").write_text("models of this team\n")
    commit(made.checkout, "start")
    git("fetch", "-q", str(made.checkout), "HEAD:refs/heads/master", cwd=made.repo)
    git("fetch", "-q", "origin", cwd=made.checkout)
    return made


def refusal(result: subprocess.CompletedProcess) -> str:
    """The gate's one `refused:` line (stderr must hold exactly one, and no traceback)."""
    lines = [line for line in result.stderr.splitlines() if "refused: " in line]
    assert result.returncode != 0 and len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr
    return lines[0]


def empty_files_commit(checkout: Path, count: int) -> str:
    """A commit on HEAD whose tree holds `count` empty files (built with git's plumbing)."""
    git("hash-object", "-w", "--stdin", cwd=checkout)  # the empty blob, stdin is empty
    listing = "".join(f"100644 blob {EMPTY_BLOB}\tf{i:06d}\n" for i in range(count))
    tree = subprocess.run(["git", "mktree"], cwd=checkout, input=listing, text=True,
                          capture_output=True, check=True).stdout.strip()
    made = git("commit-tree", tree, "-p", "HEAD", "-m", f"{count} empty files", cwd=checkout)
    return made.stdout.strip()


@pytest.mark.slow
def test_a_push_of_200000_files_is_refused_by_the_entry_cap_quickly(server, reliability):
    """The gate counts the tree as git lists it and stops at the cap: nothing is extracted."""
    many = empty_files_commit(server.checkout, 200_000)
    started = time.monotonic()
    result = git("push", "origin", f"{many}:refs/heads/master", cwd=server.checkout,
                 check=False)
    seconds = time.monotonic() - started
    line = refusal(result)
    assert "more than 1,000 files and folders" in line, line
    assert git("rev-parse", "master", cwd=server.repo).stdout.strip() != many
    assert seconds < 20, seconds
    reliability.record("Security", "a push of 200,000 empty files (one commit)",
                       "refused by the tree-entry cap (1,000) before anything is extracted; "
                       "was accepted after 41 s", files=200_000, refused=1,
                       seconds=round(seconds, 1))


@pytest.mark.slow
def test_an_80_mb_branch_is_refused_by_git_and_nothing_is_stored(server, reliability):
    """Past receive.maxInputSize git stops reading the pack: no ref, no objects kept."""
    before = server.stored_bytes()
    (server.checkout / "weights.bin").write_bytes(np.random.default_rng(1).bytes(80 << 20))
    commit(server.checkout, "80 MB")
    started = time.monotonic()
    result = push(server.checkout, branch="experiment")
    seconds = time.monotonic() - started
    assert result.returncode != 0 and "pack exceeds maximum allowed size" in result.stderr, (
        result.stderr)
    assert server.refs() == ["refs/heads/master"]
    kept = server.stored_bytes() - before
    assert kept < 1 << 20, kept
    reliability.record("Security", "an 80 MB push to another branch (--max-mb 50)",
                       "git's receive.maxInputSize (62.5 MiB) stops the pack; was stored",
                       pushed_mb=80, refused=1, stored_bytes=kept, seconds=round(seconds, 1))


@pytest.mark.slow
def test_receive_max_input_size_follows_max_mb_and_init_says_so(server):
    """`init --max-mb 1` resets git's own limit (and says so): 3 MB never reaches the gate."""
    again = server.init("--max-mb", "1")
    assert f"set receive.maxInputSize = {2 << 20}" in again.stdout, again.stdout
    assert "unchanged" in server.init("--max-mb", "1").stdout
    (server.checkout / "ballast.bin").write_bytes(np.random.default_rng(2).bytes(3 << 20))
    commit(server.checkout, "3 MB")
    result = push(server.checkout)
    assert result.returncode != 0 and "pack exceeds maximum allowed size" in result.stderr
    assert "refused: " not in result.stderr  # git's refusal: the hook never ran
    assert not list((server.repo / "objects").glob("incoming-*"))


@pytest.mark.slow
def test_a_force_push_of_the_deployed_branch_is_refused(server, reliability):
    """A rewritten history is refused by the gate itself, before any model is looked at."""
    master = git("rev-parse", "HEAD", cwd=server.checkout).stdout.strip()
    (server.checkout / "README").write_text("history rewritten\n")
    git("commit", "-q", "-a", "--amend", "-m", "rewritten", cwd=server.checkout)
    result = git("push", "--force", "origin", "HEAD:master", cwd=server.checkout, check=False)
    line = refusal(result)
    assert "is not a fast-forward" in line, line
    assert git("rev-parse", "master", cwd=server.repo).stdout.strip() == master
    reliability.record("Security", "a force push (non-fast-forward) of the deployed branch",
                       "refused by the gate, and by receive.denyNonFastForwards; was accepted",
                       refused=1)


@pytest.mark.slow
def test_other_refs_are_refused_unless_stored_under_the_same_limits(server, reliability):
    """Default: branches and tags refused. `--other-refs store`: kept, within every limit."""
    git("tag", "v1", cwd=server.checkout)
    refused = [refusal(push(server.checkout, branch="topic")),
               refusal(git("push", "origin", "v1", cwd=server.checkout, check=False))]
    assert all("only master is accepted" in line for line in refused), refused
    assert server.refs() == ["refs/heads/master"]

    server.init("--other-refs", "store", "--max-mb", "1", "--max-tree-entries", "50")
    stored = push(server.checkout, branch="topic")
    assert stored.returncode == 0 and "stored, not deployed" in stored.stderr, stored.stderr
    assert git("push", "origin", "v1", cwd=server.checkout, check=False).returncode == 0
    # 1.5 MB passes git's pack limit (2 MiB) but not the gate's size limit (1 MiB).
    (server.checkout / "big.bin").write_bytes(np.random.default_rng(3).bytes(3 << 19))
    commit(server.checkout, "1.5 MB")
    too_big = refusal(push(server.checkout, branch="topic"))
    git("rm", "-q", "big.bin", cwd=server.checkout)
    commit(server.checkout, "drop it")
    for i in range(60):
        (server.checkout / f"note{i}").write_text("x\n")
    commit(server.checkout, "60 files")
    too_many = refusal(push(server.checkout, branch="topic"))
    deleted = refusal(git("push", "origin", ":topic", cwd=server.checkout, check=False))
    assert "byte limit" in too_big and "more than 50 files" in too_many, (too_big, too_many)
    assert "keeps what it stored" in deleted
    assert server.refs() == ["refs/heads/master", "refs/heads/topic", "refs/tags/v1"]
    reliability.record("Security", "other branches and tags", "refused by default; with "
                       "--other-refs store: kept under the size and tree-entry limits",
                       refused_by_default=2, stored=2, refused_over_limits=3)


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["relative link", "absolute link", "submodule"])
def test_a_model_file_that_is_not_a_file_is_refused(server, kind: str):
    """Only regular blobs are read as model files: a link is never followed on the server."""
    checkout = server.checkout
    (checkout / "real.keras").write_bytes(b"PK not really a model")
    (checkout / "manifest.json").write_text("{}")
    if kind == "submodule":
        head = git("rev-parse", "HEAD", cwd=checkout).stdout.strip()
        git("add", "-A", cwd=checkout)
        git("update-index", "--add", "--cacheinfo", f"160000,{head},model.keras", cwd=checkout)
        git("commit", "-q", "-m", kind, cwd=checkout)
    else:
        target = "real.keras" if kind == "relative link" else "/etc/passwd"
        (checkout / "model.keras").symlink_to(target)
        commit(checkout, kind)
    line = refusal(push(checkout))
    words = "a submodule" if kind == "submodule" else "a symbolic link"
    assert f"model.keras is {words}" in line, line
    assert git("rev-parse", "master", cwd=server.repo).stdout.strip() != git(
        "rev-parse", "HEAD", cwd=checkout).stdout.strip()
