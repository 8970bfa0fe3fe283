"""The .keras archive check: what Keras writes passes; bombs and traps are refused unopened.

The pure checks run on zip directory entries made here; the whole check runs on archives
written by zipfile and h5py; the bombs go through `modelserve model check` in a fresh process,
with its peak memory and time measured against a stated bound.
"""

from __future__ import annotations

import io
import json
import struct
import zipfile
from collections.abc import Callable
from pathlib import Path

import h5py
import numpy as np
import pytest
from measured_run import run_modelserve_measured

from modelserve.fsutil import sha256_file
from modelserve.model.archive import (
    ARCHIVE_LIMITS,
    ArchiveLimits,
    check_archive,
    end_record_problem,
    member_problem,
    name_problem,
)
from modelserve.model.bundle import FORMAT, MODEL_FILE, BundleError, write_manifest

CONFIG = json.dumps({"class_name": "Sequential", "config": {"name": "m", "layers": []}})
# `model check` refusing an archive imports no TensorFlow: the CLI and its checker stay under.
MEMORY_BOUND_MIB = 256
TIME_BOUND_S = 30
MANY_MEMBERS = 20_000


def weights_h5(change: Callable[[h5py.File], None] | None = None) -> bytes:
    """The bytes of a model.weights.h5 laid out as Keras 3 writes one (dense + normalization)."""
    buffer = io.BytesIO()
    with h5py.File(buffer, "w") as h5:
        h5.create_group("vars").attrs["name"] = "sequential"
        h5.create_dataset("layers/dense/vars/0", data=np.ones((8, 1), "<f4"))
        h5.create_dataset("layers/dense/vars/1", data=np.zeros(1, "<f4"))
        h5["layers/dense/vars"].attrs["name"] = "dense"
        h5.create_dataset("layers/normalization/vars/2", data=np.int64(765))
        if change is not None:
            change(h5)
    return buffer.getvalue()


def write_archive(path: Path, members: dict[str, bytes], *,
                  method: int = zipfile.ZIP_STORED) -> Path:
    """Write a zip holding the given members."""
    with zipfile.ZipFile(path, "w", compression=method) as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return path


def keras_like(path: Path, **extra: bytes) -> Path:
    """A zip with the members Keras writes, plus any extra ones."""
    members = {"metadata.json": b'{"keras_version": "3.15.1"}', "config.json": CONFIG.encode(),
               "model.weights.h5": weights_h5(), **extra}
    return write_archive(path, members)


def info(name: str, size: int = 10, stored: int | None = None,
         method: int = zipfile.ZIP_STORED) -> zipfile.ZipInfo:
    """A zip directory entry with the given sizes."""
    entry = zipfile.ZipInfo(name)
    entry.file_size, entry.compress_size, entry.compress_type = size, stored or size, method
    return entry


@pytest.mark.parametrize("name", ["/etc/passwd", "../model.keras", "assets/../../x",
                                  "assets\\..\\x", "C:/x", "readme.txt", "model.weights.npz",
                                  "assets//x", "config.json/", "con\x00fig.json", ""])
def test_member_names_keras_does_not_write_are_refused(name: str) -> None:
    assert name_problem(name) is not None


@pytest.mark.parametrize("name", ["config.json", "metadata.json", "model.weights.h5",
                                  "assets/", "assets/string_lookup/vocabulary.txt"])
def test_member_names_keras_writes_pass(name: str) -> None:
    assert name_problem(name) is None


def test_sizes_methods_and_ratios_are_checked_from_the_directory() -> None:
    """Caps per member, the ratio above its floor, only stored or deflate, no encryption."""
    limits = ARCHIVE_LIMITS
    assert member_problem(info("config.json", limits.max_config_bytes), limits) is None
    too_big = member_problem(info("config.json", limits.max_config_bytes + 1), limits)
    assert too_big and "at most 4,194,304" in too_big
    bomb = info("model.weights.h5", 2 << 20, 2 << 10, zipfile.ZIP_DEFLATED)
    assert "expands 1,024-fold" in (member_problem(bomb, limits) or "")
    small = info("config.json", 1 << 20, 100, zipfile.ZIP_DEFLATED)  # under the ratio floor
    assert member_problem(small, limits) is None
    lzma = info("config.json", method=zipfile.ZIP_LZMA)
    assert "compression method 14" in (member_problem(lzma, limits) or "")
    deflated = info("model.weights.h5", 32 << 20, 30 << 20, zipfile.ZIP_DEFLATED)
    assert "Keras stores it uncompressed" in (member_problem(deflated, limits) or "")
    encrypted = info("config.json")
    encrypted.flag_bits |= 0x1
    assert member_problem(encrypted, limits) == "is encrypted"


def _end_record(entries: int, directory_bytes: int) -> bytes:
    """A zip end-of-central-directory record announcing these counts."""
    return struct.pack("<4s4H2LH", b"PK\x05\x06", 0, 0, entries, entries, directory_bytes, 0, 0)


def test_the_end_record_is_read_before_the_directory() -> None:
    """Too many members or too large a directory is refused before zipfile parses it."""
    assert end_record_problem(_end_record(3, 200), ARCHIVE_LIMITS) is None
    assert "lists 60,000 members" in end_record_problem(_end_record(60_000, 200), ARCHIVE_LIMITS)
    assert "directory is" in end_record_problem(_end_record(3, 10 << 20), ARCHIVE_LIMITS)
    locator = b"PK\x06\x07" + bytes(16)
    assert "ZIP64" in end_record_problem(locator + _end_record(3, 200), ARCHIVE_LIMITS)
    assert "not a zip" in end_record_problem(b"garbage" * 10, ARCHIVE_LIMITS)


def test_an_archive_as_keras_writes_it_passes(tmp_path: Path) -> None:
    report = check_archive(keras_like(tmp_path / "m.keras", **{"assets/vocab.txt": b"a\nb\n"}))
    assert (report.members, report.datasets) == (4, 3)
    assert report.weight_bytes == 8 * 4 + 4 + 8


def _external(h5: h5py.File, secret: Path) -> None:
    h5.create_dataset("layers/dense/vars/2", shape=(4,), dtype="<f4",
                      external=[(str(secret), 0, 16)])


def _soft(h5: h5py.File, _secret: Path) -> None:
    h5["layers/dense/vars/2"] = h5py.SoftLink("/layers/dense/vars/0")


def _external_link(h5: h5py.File, secret: Path) -> None:
    h5["layers/dense/vars/2"] = h5py.ExternalLink(str(secret), "/data")


def _virtual(h5: h5py.File, secret: Path) -> None:
    layout = h5py.VirtualLayout(shape=(4,), dtype="<f4")
    layout[:] = h5py.VirtualSource(str(secret), "data", shape=(4,))
    h5.create_virtual_dataset("layers/dense/vars/2", layout)


def _strings(h5: h5py.File, _secret: Path) -> None:
    h5.create_dataset("layers/dense/vars/2", data=np.array([b"abc"] * 4))


def _declared(h5: h5py.File, _secret: Path) -> None:
    h5.create_dataset("layers/dense/vars/2", shape=(16384, 16384), dtype="<f4",
                      chunks=(1024, 1024), compression="gzip")


def _big_attribute(h5: h5py.File, _secret: Path) -> None:
    h5["vars"].attrs.create("blob", np.zeros(10_000, "<f4"))  # 40,000 bytes


WEIGHT_TRAPS = {
    "external storage": (_external, "uses external storage"),
    "soft link": (_soft, "is a soft link"),
    "external link": (_external_link, "is an external link"),
    "virtual dataset": (_virtual, "is a virtual dataset"),
    "string dataset": (_strings, "has element type string"),
    "1 GiB declared": (_declared, "the weights declare over 268,435,456 bytes in all"),
}


@pytest.mark.parametrize("kind", WEIGHT_TRAPS)
def test_traps_in_the_weights_file_are_refused(kind: str, tmp_path: Path) -> None:
    """model.weights.h5 inside the zip gets the legacy reader's checks."""
    trap, words = WEIGHT_TRAPS[kind]
    secret = tmp_path / "secret.h5"
    with h5py.File(secret, "w") as other:
        other.create_dataset("data", data=np.arange(4, dtype="<f4"))
    path = keras_like(tmp_path / "m.keras")
    members = {"metadata.json": b"{}", "config.json": CONFIG.encode(),
               "model.weights.h5": weights_h5(lambda h5: trap(h5, secret))}
    with pytest.raises(BundleError) as refused:
        check_archive(write_archive(path, members))
    message = str(refused.value)
    assert message.startswith("model.weights.h5/layers/dense/vars/2: ") and words in message, \
        message
    assert str(tmp_path) not in message


def test_an_attribute_over_its_cap_is_refused(tmp_path: Path) -> None:
    members = {"config.json": CONFIG.encode(),
               "model.weights.h5": weights_h5(lambda h5: _big_attribute(h5, tmp_path))}
    limits = ArchiveLimits(max_attribute_bytes=32 << 10)
    with pytest.raises(BundleError, match="attribute 'blob' is over 32,768 bytes"):
        check_archive(write_archive(tmp_path / "m.keras", members), limits)


@pytest.mark.parametrize(("members", "words"), [
    ({"config.json": CONFIG.encode()}, "no model.weights.h5"),
    ({"model.weights.h5": weights_h5()}, "no config.json"),
    ({"config.json": b"{}", "model.weights.h5": weights_h5(), "../escape": b"x"},
     "member '../escape' has a name that is absolute"),
])
def test_missing_or_foreign_members_are_refused(members: dict, words: str,
                                                tmp_path: Path) -> None:
    with pytest.raises(BundleError, match=words):
        check_archive(write_archive(tmp_path / "m.keras", members))


@pytest.mark.slow
def test_a_trained_bundle_passes_and_still_loads(trained_bundle: Path) -> None:
    """The archive of a model this platform trained (Normalization keeps an int64 count)."""
    report = check_archive(trained_bundle / MODEL_FILE)
    assert report.members == 3 and report.datasets > 4


# ---- the bombs, through `modelserve model check` ------------------------------------------


def bundle_around(directory: Path, model: Path) -> Path:
    """A bundle directory whose manifest records this model.keras (and 8 plain features)."""
    directory.mkdir(parents=True)
    model.rename(directory / MODEL_FILE)
    path = directory / MODEL_FILE
    write_manifest(directory, {
        "format": FORMAT, "created_at": "2026-01-01T00:00:00+00:00",
        "input": {"features": [{"name": f"f{i}"} for i in range(8)],
                  "examples": [{"values": [0] * 8, "probability": 0.5}]},
        "output": {"name": "diabetic", "labels": ["no", "yes"]},
        "metrics": {"accuracy": 0.7, "roc_auc": 0.8, "log_loss": 0.5},
        "files": {MODEL_FILE: {"sha256": sha256_file(path), "bytes": path.stat().st_size}},
    })
    return directory


def config_bomb(path: Path) -> Path:
    """About 1 MB on disk: a config.json of 1 GiB (deflate at its best ratio), and weights."""
    entry = zipfile.ZipInfo("config.json")
    entry.compress_type = zipfile.ZIP_DEFLATED
    with zipfile.ZipFile(path, "w", compresslevel=9) as archive:
        archive.writestr("metadata.json", b"{}")
        with archive.open(entry, "w") as stream:
            stream.write(b'{"class_name": "Sequential", "config": {"name": "')
            chunk = b"a" * (1 << 20)
            for _ in range(1024):
                stream.write(chunk)
            stream.write(b'"}}')
        archive.writestr("model.weights.h5", weights_h5())
    return path


def many_members(path: Path) -> Path:
    """A model archive plus 20,000 empty assets, each of which Keras would extract."""
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("config.json", CONFIG)
        archive.writestr("model.weights.h5", weights_h5())
        for index in range(MANY_MEMBERS):
            archive.writestr(f"assets/{index}", b"")
    return path


BOMBS = {
    "1 GiB config.json in a 1 MB model.keras": (config_bomb, "member 'config.json' is "
                                                "1,073,741,876 bytes uncompressed"),
    f"{MANY_MEMBERS:,} members": (many_members, f"the archive lists {MANY_MEMBERS + 2:,} members"),
}


@pytest.mark.slow
@pytest.mark.parametrize("kind", BOMBS)
def test_archive_bombs_are_refused_by_model_check_within_bounds(
    kind: str, tmp_path: Path, reliability
) -> None:
    """`modelserve model check` refuses each bomb in one line, within memory and time bounds."""
    make, words = BOMBS[kind]
    model = make(tmp_path / "model.keras")
    size = model.stat().st_size
    bundle = bundle_around(tmp_path / "bundle", model)
    result = run_modelserve_measured("model", "check", bundle, home=tmp_path / "home",
                                     timeout=120)
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 1 and len(lines) == 1, result.stderr[-2000:]
    assert "cannot be loaded as a Keras model" in lines[0] and words in lines[0], lines[0]
    reliability.record(
        "Security", f"zip bomb into `modelserve model check`: {kind}",
        f"refused from the zip directory before Keras opens it; bounds {MEMORY_BOUND_MIB} MiB "
        f"peak RSS, {TIME_BOUND_S} s", file_mib=round(size / (1 << 20), 2),
        peak_rss_mib=round(result.peak_mib), seconds=round(result.seconds, 2))
    assert result.peak_mib < MEMORY_BOUND_MIB and result.seconds < TIME_BOUND_S, result
