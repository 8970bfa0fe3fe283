"""The repository's rules on ref updates and tree entries, without git or processes."""

from __future__ import annotations

import pytest

from modelserve.delivery.config import DeliveryConfig
from modelserve.delivery.refs import (
    ZERO,
    TreeEntry,
    model_file_refusal,
    parse_entries,
    ref_refusal,
    too_large,
    too_many_entries,
)
from modelserve.delivery.setup import git_settings, max_input_bytes

A, B = "a" * 40, "b" * 40
REFUSE, STORE = DeliveryConfig(), DeliveryConfig(other_refs="store")


def test_ls_tree_records_are_parsed_with_sizes_and_odd_names():
    """`-l -z` output: padded sizes, '-' for trees and submodules, tabs and newlines in names."""
    output = (b"100644 blob " + A.encode() + b"    1234\tmodel.keras\0"
              b"120000 blob " + B.encode() + b"      11\tmanifest.json\0"
              b"040000 tree " + A.encode() + b"       -\tdir\twith\ttabs\nand newline\0")
    entries = parse_entries(output)
    assert entries[0] == TreeEntry("100644", "blob", A, 1234, "model.keras")
    assert entries[1].mode == "120000" and entries[1].size == 11
    assert entries[2].size is None and entries[2].path == "dir\twith\ttabs\nand newline"


@pytest.mark.parametrize(("entry", "words"), [
    (TreeEntry("120000", "blob", A, 11, "model.keras"), "symbolic link"),
    (TreeEntry("160000", "commit", A, None, "model.h5"), "submodule"),
    (TreeEntry("040000", "tree", A, None, "manifest.json"), "folder"),
])
def test_only_plain_files_are_read_as_the_model(entry: TreeEntry, words: str):
    """A link could name /etc/shadow once checked out; a submodule or folder is no file."""
    refusal = model_file_refusal(entry)
    assert refusal and refusal.startswith("refused: ") and words in refusal
    assert model_file_refusal(TreeEntry("100755", "blob", A, 3, "model.h5")) is None


@pytest.mark.parametrize(("ref", "old", "new", "config", "words"), [
    ("refs/heads/master", A, ZERO, STORE, "would leave nothing deployed"),
    ("refs/heads/topic", A, ZERO, STORE, "keeps what it stored"),
    ("refs/heads/topic", ZERO, A, REFUSE, "only master is accepted"),
    ("refs/tags/v1", ZERO, A, REFUSE, "only master is accepted"),
    ("refs/notes/commits", ZERO, A, STORE, "only branches and tags"),
    ("refs/tags/v1", A, B, STORE, "never moved"),
])
def test_refused_ref_updates(ref, old, new, config, words):
    """Each refusal is one `refused:` line naming the ref's rule."""
    refusal = ref_refusal(ref, old, new, config)
    assert refusal and refusal.startswith("refused: ") and "\n" not in refusal
    assert words in refusal


@pytest.mark.parametrize(("ref", "old", "config"), [
    ("refs/heads/master", A, REFUSE),
    ("refs/heads/master", ZERO, REFUSE),
    ("refs/heads/topic", A, STORE),  # fast-forward or not: decided with git, not here
    ("refs/tags/v1", ZERO, STORE),
])
def test_accepted_ref_updates(ref, old, config):
    """The deployed branch always; other branches and new tags when configured to store."""
    assert ref_refusal(ref, old, B, config) is None


def test_limits_say_what_and_how_much():
    """The entry cap and the size limit: None within, one line beyond."""
    assert too_many_entries(A, 1000, 1000) is None
    assert "more than 1,000 files and folders" in too_many_entries(A, 1001, 1000)
    assert too_large(50, 50, "models") is None
    assert "51 bytes, over the 50 byte limit" in too_large(51, 50, "models")


def test_git_refuses_what_the_gate_would_too():
    """Non-fast-forwards, malformed objects and oversized packs: git's own settings."""
    settings = git_settings(DeliveryConfig(max_bytes=50 << 20))
    assert settings["receive.denyNonFastForwards"] == "true"
    assert settings["receive.fsckObjects"] == "true"
    assert settings["receive.denyDeletes"] == "true"
    assert int(settings["receive.maxInputSize"]) == max_input_bytes(50 << 20) == 65536000
    assert max_input_bytes(1 << 20) == 2 << 20  # at least a MiB of headroom
