"""Read HDF5 files that someone else made: walk hard links only, check every dataset first.

HDF5 can make a dataset's bytes come from anywhere: another file on the server (external
storage, virtual datasets, external links), another object of the file (soft links), or
nowhere at all (a 16384 x 16384 kernel stored as a few unallocated chunks, which h5py
still hands back as 1 GiB of fill values). So nothing is read until the link that leads to
it is a hard link, the dataset keeps its bytes in this file, has a plain numeric type, uses
no filter but the built-in ones, and declares a size the caller agreed to. Every refusal is
one BundleError line that names the object inside the file, never a path on the server.
Keras' own `saving_lib.safe_get_h5_dataset` refuses the same things.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import h5py
import numpy as np
from h5py import h5d, h5l, h5s, h5t, h5z

from modelserve.model.bundle import BundleError

MAX_NAME_CHARS = 256
FLOAT_TYPES = (h5t.IEEE_F16LE, h5t.IEEE_F16BE, h5t.IEEE_F32LE, h5t.IEEE_F32BE,
               h5t.IEEE_F64LE, h5t.IEEE_F64BE)
INTEGER_TYPES = tuple(getattr(h5t, f"STD_{sign}{bits}{order}") for sign in "IU"
                      for bits in (8, 16, 32, 64) for order in ("LE", "BE"))
# Built into HDF5 itself: any other filter id makes HDF5 look for a plugin library to load.
SAFE_FILTERS = {h5z.FILTER_DEFLATE: "deflate", h5z.FILTER_SHUFFLE: "shuffle",
                h5z.FILTER_FLETCHER32: "fletcher32"}
SAFE_LAYOUTS = (h5d.COMPACT, h5d.CONTIGUOUS, h5d.CHUNKED)
_LINK_KINDS = {h5l.TYPE_SOFT: "a soft link (to another object of the file)",
               h5l.TYPE_EXTERNAL: "an external link (to another file)"}


def open_file(source: Any, label: str, what: str = "HDF5 file") -> h5py.File:
    """Open an HDF5 file (a path or a seekable binary stream) for reading."""
    try:
        return h5py.File(source, "r")
    except (OSError, ValueError, RuntimeError) as error:
        raise BundleError(f"{label}: not a readable {what} ({reason(error, source)})") from None


def reason(error: BaseException, source: Any = None) -> str:
    """Return the first line of an h5py error, without the file's path on this machine."""
    text = str(error).splitlines()[0] if str(error) else type(error).__name__
    if isinstance(source, str | Path):
        for shown in {str(Path(source).absolute()), str(source)}:
            text = text.replace(shown, Path(source).name)
    return text


def child(group: h5py.Group, name: str, label: str) -> h5py.Group | h5py.Dataset:
    """Return group[name], refusing a bad name and any link but a hard link (never followed)."""
    if not name or "/" in name or name in (".", "..") or len(name) > MAX_NAME_CHARS:
        raise BundleError(f"{label}: {name[:MAX_NAME_CHARS]!r} is not a plain HDF5 name")
    encoded = name.encode()
    # The low-level calls look at the link itself; `name in group` would follow it first.
    if not group.id.links.exists(encoded):
        raise BundleError(f"{label}: missing")
    kind = group.id.links.get_info(encoded).type
    if kind != h5l.TYPE_HARD:
        described = _LINK_KINDS.get(kind, "a user-defined link")
        raise BundleError(f"{label}: is {described}; only objects stored in the file are read")
    return group[name]


def child_group(group: h5py.Group, name: str, label: str) -> h5py.Group:
    """Return a hard-linked child that must be a group."""
    found = child(group, name, label)
    if not isinstance(found, h5py.Group):
        raise BundleError(f"{label}: is not an HDF5 group")
    return found


def child_dataset(group: h5py.Group, name: str, label: str) -> h5py.Dataset:
    """Return a hard-linked child that must be a dataset."""
    found = child(group, name, label)
    if not isinstance(found, h5py.Dataset):
        raise BundleError(f"{label}: is not an HDF5 dataset")
    return found


def storage_problem(dataset: h5py.Dataset) -> str | None:
    """Say why a dataset's bytes may come from outside the file or need a plugin, or None."""
    plist = dataset.id.get_create_plist()
    if plist.get_external_count() > 0 or dataset.external:
        return "uses external storage (its data is kept in another file)"
    layout = plist.get_layout()
    if layout == h5d.VIRTUAL or dataset.is_virtual:
        return "is a virtual dataset (its data comes from other files)"
    if layout not in SAFE_LAYOUTS:
        return f"has an unknown storage layout ({layout})"
    for index in range(plist.get_nfilters()):
        code = plist.get_filter(index)[0]
        if code not in SAFE_FILTERS:
            return f"uses HDF5 filter {code}, not one of {', '.join(SAFE_FILTERS.values())}"
    return None


def type_problem(dataset: h5py.Dataset, integers: bool) -> str | None:
    """Say why a dataset's element type is not plain IEEE float (or integer if allowed)."""
    stored = dataset.id.get_type()
    allowed = FLOAT_TYPES + (INTEGER_TYPES if integers else ())
    if any(stored.equal(kind) for kind in allowed):
        return None
    wanted = "float16/32/64 or integer" if integers else "float16, float32 or float64"
    return f"has element type {_type_name(dataset)}, not {wanted}"


def shape_of(dataset: h5py.Dataset, label: str) -> tuple[int, ...]:
    """Return a dataset's declared shape, refusing a null or unlimited dataspace."""
    space = dataset.id.get_space()
    if space.get_simple_extent_type() not in (h5s.SIMPLE, h5s.SCALAR):
        raise BundleError(f"{label}: has no data (a null dataspace)")
    return tuple(int(n) for n in space.shape)


def chunk_problem(dataset: h5py.Dataset, shape: tuple[int, ...]) -> str | None:
    """Say why a chunked dataset's chunks are larger than the dataset itself, or None."""
    chunks = dataset.chunks
    if chunks is None:
        return None
    # A chunk is decompressed whole: one larger than the data is a bomb, not a layout.
    if len(chunks) != len(shape) or any(c > max(n, 1) for c, n in zip(chunks, shape, strict=True)):
        return f"declares chunks {tuple(chunks)} larger than its shape {shape}"
    return None


def check_dataset(dataset: h5py.Dataset, label: str, *, integers: bool = False) -> tuple[int, ...]:
    """Refuse a dataset that is not plain numeric data kept in this file; return its shape."""
    problem = storage_problem(dataset) or type_problem(dataset, integers)
    shape = shape_of(dataset, label)
    problem = problem or chunk_problem(dataset, shape)
    if problem:
        raise BundleError(f"{label}: {problem}")
    return shape


def declared_bytes(dataset: h5py.Dataset, shape: tuple[int, ...]) -> int:
    """Return how many bytes reading the dataset whole would take."""
    return math.prod(shape) * dataset.id.get_type().get_size()


def read_float32(dataset: h5py.Dataset, shape: tuple[int, ...], label: str) -> np.ndarray:
    """Read a checked dataset of a known shape into a new float32 array (HDF5 converts)."""
    out = np.empty(shape, np.float32)
    try:
        if out.size:
            dataset.read_direct(out)
    except (OSError, ValueError, RuntimeError, TypeError) as error:
        raise BundleError(f"{label}: cannot be read ({reason(error)})") from None
    return out


def walk(group: h5py.Group, label: str, max_depth: int,
         max_members: int) -> Iterator[tuple[str, Any]]:
    """Yield (path, object) for every object under a group, through hard links only."""
    for name in _member_names(group, label, max_members):
        path = f"{label}/{name}"
        found = child(group, name, path)
        yield path, found
        if isinstance(found, h5py.Group):
            if max_depth <= 1:
                raise BundleError(f"{path}: groups nested too deeply")
            yield from walk(found, path, max_depth - 1, max_members)


def _member_names(group: h5py.Group, label: str, limit: int) -> list[str]:
    """List a group's link names without following any link, at most `limit` of them."""
    names: list[bytes] = []

    def collect(name: bytes) -> bool | None:
        names.append(name)
        return True if len(names) > limit else None  # anything but None stops the iteration

    # A hard link to an ancestor makes a cycle; the depth cap in walk() ends it.
    group.id.links.iterate(collect)
    if len(names) > limit:
        raise BundleError(f"{label}: holds more than {limit} objects")
    try:
        return [name.decode() for name in names]
    except UnicodeDecodeError:
        raise BundleError(f"{label}: holds a name that is not UTF-8") from None


def _type_name(dataset: h5py.Dataset) -> str:
    """Describe a stored element type in a few words."""
    kinds = {h5t.INTEGER: "integer", h5t.FLOAT: "float", h5t.STRING: "string",
             h5t.COMPOUND: "compound", h5t.VLEN: "variable-length", h5t.ENUM: "enum",
             h5t.ARRAY: "array", h5t.OPAQUE: "opaque", h5t.REFERENCE: "reference",
             h5t.BITFIELD: "bitfield", h5t.TIME: "time"}
    stored = dataset.id.get_type()
    return f"{kinds.get(stored.get_class(), 'unknown')} of {stored.get_size()} bytes"
