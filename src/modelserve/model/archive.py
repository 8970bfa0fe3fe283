"""Check a `.keras` archive before Keras opens it: only what Keras writes, within limits.

A `.keras` file is a zip that Keras 3's saving_lib writes with `metadata.json`,
`config.json`, `model.weights.h5` (stored, not compressed) and, for layers with files of their
own, `assets/...`. Keras reads config.json whole into memory and, when the archive holds more
than those three members, extracts every member to disk. So a 1 MB file declaring a 1 GiB
config.json, or 200,000 tiny members, costs the server gigabytes or minutes before Keras
says anything. Everything here is decided from the zip's central directory (sizes, names,
methods) without decompressing a byte; then, optionally, the weights file inside is walked
with the same HDF5 checks as the legacy reader (no external storage, virtual datasets or
links; numeric types; declared sizes within limits), reading its metadata, never its data.
"""

from __future__ import annotations

import struct
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from modelserve.model.bundle import BundleError

CONFIG_MEMBER = "config.json"
METADATA_MEMBER = "metadata.json"
WEIGHTS_MEMBER = "model.weights.h5"
ASSETS_PREFIX = "assets/"
KERAS_MEMBERS = (METADATA_MEMBER, CONFIG_MEMBER, WEIGHTS_MEMBER)
METHODS = {zipfile.ZIP_STORED: "stored", zipfile.ZIP_DEFLATED: "deflate"}
MAX_NAME_CHARS = 255
_END_RECORD = struct.Struct("<4s4H2LH")  # the zip's end of central directory record
_END_SIGNATURE = b"PK\x05\x06"
_ZIP64_LOCATOR = b"PK\x06\x07"
_MAX_COMMENT = 0xFFFF


@dataclass(frozen=True)
class ArchiveLimits:
    """What a model archive may hold; the defaults fit any MLP this platform serves, 1000-fold."""

    max_archive_bytes: int = 256 << 20
    max_members: int = 64
    max_directory_bytes: int = 64 << 10
    max_member_bytes: int = 256 << 20  # uncompressed, any one member
    max_total_bytes: int = 512 << 20  # uncompressed, all members
    max_config_bytes: int = 4 << 20
    max_metadata_bytes: int = 64 << 10
    max_ratio: float = 100.0  # uncompressed / compressed, above ratio_floor_bytes
    ratio_floor_bytes: int = 1 << 20
    max_deflated_weights_bytes: int = 16 << 20
    inspect_weights: bool = True
    max_weight_objects: int = 10_000
    max_weight_depth: int = 32
    max_weight_bytes: int = 256 << 20  # declared by all datasets together
    max_attributes: int = 64  # per object
    max_attribute_bytes: int = 64 << 10


ARCHIVE_LIMITS = ArchiveLimits()


@dataclass(frozen=True)
class ArchiveReport:
    """What a checked archive holds."""

    members: int
    uncompressed_bytes: int
    datasets: int
    weight_bytes: int


def check_archive(path: Path, limits: ArchiveLimits = ARCHIVE_LIMITS) -> ArchiveReport:
    """Refuse a .keras file that is not a plain Keras archive within limits; never decompress."""
    path = Path(path)
    size = path.stat().st_size
    if size > limits.max_archive_bytes:
        raise BundleError(f"the file is {size:,} bytes; at most {limits.max_archive_bytes:,}")
    with open(path, "rb") as stream:
        directory_problem = end_record_problem(_tail(stream, size), limits)
        if directory_problem:
            raise BundleError(directory_problem)
        try:
            archive = zipfile.ZipFile(stream)
        except (zipfile.BadZipFile, OSError, ValueError, EOFError) as error:
            raise BundleError(f"not a zip archive ({error})") from None
        with archive:
            infos = archive.infolist()
            problem = members_problem(infos, limits)
            if problem:
                raise BundleError(problem)
            datasets, weight_bytes = (
                inspect_weights(archive, limits) if limits.inspect_weights else (0, 0)
            )
    return ArchiveReport(len(infos), sum(i.file_size for i in infos), datasets, weight_bytes)


def _tail(stream: Any, size: int) -> bytes:
    """Read the part of the file that holds the end record (and its comment, if any)."""
    length = min(size, _END_RECORD.size + _MAX_COMMENT)
    stream.seek(size - length)
    return stream.read(length)


def end_record_problem(tail: bytes, limits: ArchiveLimits) -> str | None:
    """Say why the zip's end record announces too much or is not there, or None."""
    # Found as zipfile finds it (the last signature), so both read the same directory.
    position = tail.rfind(_END_SIGNATURE)
    if position < 0 or len(tail) - position < _END_RECORD.size:
        return "not a zip archive (no end of central directory record)"
    _sig, _disk, _start, _here, entries, directory_bytes, _offset, _comment = (
        _END_RECORD.unpack_from(tail, position)
    )
    if position >= 20 and tail[position - 20 : position - 16] == _ZIP64_LOCATOR:
        return "a ZIP64 archive; Keras writes a plain zip for a model of this size"
    if entries > limits.max_members:
        return f"the archive lists {entries:,} members; at most {limits.max_members}"
    if directory_bytes > limits.max_directory_bytes:
        return (f"the archive's directory is {directory_bytes:,} bytes; "
                f"at most {limits.max_directory_bytes:,}")
    return None


def members_problem(infos: list[zipfile.ZipInfo], limits: ArchiveLimits) -> str | None:
    """Say why the members are not what Keras writes or are too large in all, or None."""
    if len(infos) > limits.max_members:
        return f"the archive holds {len(infos):,} members; at most {limits.max_members}"
    names = [info.filename for info in infos]
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        return f"member {_shown(repeated[0])} appears more than once"
    for info in infos:
        problem = member_problem(info, limits)
        if problem:
            return f"member {_shown(info.filename)} {problem}"
    for required in (CONFIG_MEMBER, WEIGHTS_MEMBER):
        if required not in names:
            return f"no {required} (Keras writes config.json and {WEIGHTS_MEMBER})"
    total = sum(info.file_size for info in infos)
    if total > limits.max_total_bytes:
        return f"the members add up to {total:,} bytes; at most {limits.max_total_bytes:,}"
    return None


def member_problem(info: zipfile.ZipInfo, limits: ArchiveLimits) -> str | None:
    """Say why one member's name, method or sizes are refused, or None."""
    problem = name_problem(info.filename)
    if problem:
        return problem
    if info.flag_bits & 0x1:
        return "is encrypted"
    if info.compress_type not in METHODS:
        return f"uses compression method {info.compress_type}, not {' or '.join(METHODS.values())}"
    if (info.filename == WEIGHTS_MEMBER and info.compress_type != zipfile.ZIP_STORED
            and info.file_size > limits.max_deflated_weights_bytes):
        # HDF5 seeks all over the file; in a deflated member each backward seek decompresses
        # from the start again. Keras stores this member uncompressed.
        return (f"is deflated and {info.file_size:,} bytes; Keras stores it uncompressed "
                f"(deflated at most {limits.max_deflated_weights_bytes:,})")
    cap = member_cap(info.filename, limits)
    if info.file_size > cap:
        return f"is {info.file_size:,} bytes uncompressed; at most {cap:,}"
    if (info.file_size > limits.ratio_floor_bytes
            and info.file_size > limits.max_ratio * max(info.compress_size, 1)):
        ratio = info.file_size / max(info.compress_size, 1)
        return (f"expands {ratio:,.0f}-fold ({info.compress_size:,} to {info.file_size:,} "
                f"bytes); at most {limits.max_ratio:.0f}-fold")
    return None


def name_problem(name: str) -> str | None:
    """Say why a member name is not one Keras writes, or could land outside a directory."""
    parts = name.split("/")
    if (not name or len(name) > MAX_NAME_CHARS or name.startswith("/") or "\\" in name
            or any(ord(c) < 32 for c in name) or ".." in parts or ":" in parts[0]):
        return "has a name that is absolute, climbs out with '..', or is not plain"
    if name in KERAS_MEMBERS:
        return None
    inner = parts[1:-1] if name.endswith("/") else parts[1:]
    if name.startswith(ASSETS_PREFIX) and all(part not in ("", ".") for part in inner):
        return None
    return f"is not one Keras writes ({', '.join(KERAS_MEMBERS)}, {ASSETS_PREFIX}...)"


def member_cap(name: str, limits: ArchiveLimits) -> int:
    """Return how many uncompressed bytes a member of this name may have."""
    if name == CONFIG_MEMBER:
        return limits.max_config_bytes
    if name == METADATA_MEMBER:
        return limits.max_metadata_bytes
    return limits.max_member_bytes


def inspect_weights(archive: zipfile.ZipFile, limits: ArchiveLimits) -> tuple[int, int]:
    """Walk model.weights.h5 inside the archive; return its dataset count and declared bytes."""
    from modelserve.model import h5safe  # deferred: h5py only where an archive is inspected

    label = WEIGHTS_MEMBER
    try:
        with archive.open(WEIGHTS_MEMBER) as member, h5safe.open_file(member, label) as h5:
            return _walk_weights(h5, label, limits)
    except (OSError, KeyError, ValueError, RuntimeError, TypeError, zipfile.BadZipFile) as error:
        raise BundleError(f"{label}: not a readable HDF5 file ({h5safe.reason(error)})") from None


def _walk_weights(h5: Any, label: str, limits: ArchiveLimits) -> tuple[int, int]:
    """Check every object of the weights file (links, datasets, attributes) within limits."""
    import h5py

    from modelserve.model import h5safe

    count, datasets, declared = 0, 0, 0
    _check_attributes(h5, label, limits)
    for path, found in h5safe.walk(h5, label, limits.max_weight_depth, limits.max_weight_objects):
        count += 1
        if count > limits.max_weight_objects:
            raise BundleError(f"{label}: more than {limits.max_weight_objects} objects")
        _check_attributes(found, path, limits)
        if isinstance(found, h5py.Dataset):
            shape = h5safe.check_dataset(found, path, integers=True)  # Keras keeps int counters
            datasets += 1
            declared += h5safe.declared_bytes(found, shape)
            if declared > limits.max_weight_bytes:
                raise BundleError(
                    f"{path}: the weights declare over {limits.max_weight_bytes:,} bytes in all"
                )
    return datasets, declared


def _check_attributes(found: Any, label: str, limits: ArchiveLimits) -> None:
    """Refuse an object with too many or too large attributes (Keras reads some of them)."""
    count = len(found.attrs)  # from the object header, before any name is listed
    if count > limits.max_attributes:
        raise BundleError(f"{label}: {count} attributes; at most {limits.max_attributes}")
    for name in found.attrs:
        if found.attrs.get_id(name).get_storage_size() > limits.max_attribute_bytes:
            raise BundleError(
                f"{label}: attribute {_shown(name)} is over {limits.max_attribute_bytes:,} bytes"
            )


def _shown(value: Any) -> str:
    """Show a name from the archive in a message: one line, cut short."""
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."
