"""What a push may change in the repository: pure rules on ref updates and tree entries.

Only what can deploy is accepted: the deployed branch moving forward, and (by configuration)
other branches and new tags under the same limits. The model files are read from git's tree
entries, so an entry that is not a plain file (a symbolic link, a submodule, a folder) is
refused before anything is read.
"""

from __future__ import annotations

from dataclasses import dataclass

from modelserve.delivery.config import DeliveryConfig

ZERO = "0" * 40
FILE_MODES = ("100644", "100755")
NOT_A_FILE = {"120000": "a symbolic link", "160000": "a submodule", "040000": "a folder"}


@dataclass(frozen=True)
class TreeEntry:
    """One entry of `git ls-tree -l -z`: mode, type, object id, size (None for trees), path."""

    mode: str
    kind: str
    oid: str
    size: int | None
    path: str


def parse_entries(output: bytes) -> list[TreeEntry]:
    """Parse `git ls-tree -l -z` output (`MODE TYPE OID SIZE<TAB>PATH` records, NUL-ended)."""
    entries = []
    for record in output.split(b"\0"):
        if not record:
            continue
        header, _, path = record.partition(b"\t")
        mode, kind, oid, size = header.decode("ascii").split()
        entries.append(TreeEntry(mode, kind, oid, None if size == "-" else int(size),
                                 path.decode(errors="replace")))
    return entries


def ref_refusal(ref: str, old: str, new: str, config: DeliveryConfig) -> str | None:
    """Why this ref update must not happen (one `refused:` line), or None if it may."""
    deployed = f"refs/heads/{config.branch}"
    if new == ZERO:
        if ref == deployed:
            return f"refused: deleting {config.branch} would leave nothing deployed"
        return f"refused: deleting {ref}: this repository keeps what it stored"
    if ref == deployed:
        return None
    if config.other_refs != "store":
        return (f"refused: {ref}: only {config.branch} is accepted here (this server stores "
                "no other branches or tags)")
    if not ref.startswith(("refs/heads/", "refs/tags/")):
        return f"refused: {ref}: only branches and tags are stored here"
    if ref.startswith("refs/tags/") and old != ZERO:
        return f"refused: {ref}: a tag stored here is never moved"
    return None


def model_file_refusal(entry: TreeEntry) -> str | None:
    """Why a model file's tree entry cannot be read as the model (one line), or None."""
    if entry.mode in FILE_MODES and entry.kind == "blob" and entry.size is not None:
        return None
    what = NOT_A_FILE.get(entry.mode, f"not a plain file (mode {entry.mode})")
    return f"refused: {entry.path} is {what}; push the file itself"


def too_many_entries(commit: str, count: int, cap: int) -> str | None:
    """The refusal of a commit whose tree holds more than cap entries, or None."""
    if count <= cap:
        return None
    return (f"refused: commit {commit[:12]} holds more than {cap:,} files and folders, the "
            "limit of this repository (a model needs a handful)")


def too_large(total: int, max_bytes: int, where: str) -> str | None:
    """The refusal of files over the size limit, or None."""
    if total <= max_bytes:
        return None
    return f"refused: the files in {where} are {total:,} bytes, over the {max_bytes:,} byte limit"
