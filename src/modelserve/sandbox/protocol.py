"""What crosses the sandbox's wall: a bounded tar each way, and typed requests and results.

The caller writes a tar of `request.json` and the input files to the job's stdin; the job
answers with a tar of `result.json` and its output files on stdout. Both sides read the other's
tar as hostile: plain member names only, regular files only, a cap on members and on bytes.
"""

from __future__ import annotations

import io
import json
import re
import tarfile
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import IO, Any, TypeVar

from modelserve.errors import UserError

REQUEST_MEMBER = "request.json"
RESULT_MEMBER = "result.json"
MAX_MEMBERS = 16
MAX_JSON_BYTES = 1 << 20
PLAIN_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}")
T = TypeVar("T")


class ProtocolError(UserError):
    """A tar from the other side of the sandbox that breaks the rules."""


@dataclass(frozen=True)
class CheckRequest:
    """Check the bundle sent as manifest.json + the files it lists; `shown` names it in messages."""

    shown: str


@dataclass(frozen=True)
class CheckResult:
    """A bundle that passed: what the check found (plan.npz comes beside it when compiled)."""

    version: str
    examples: int
    max_difference: float
    runtime: str  # "plan" (plan.npz was derived) or "keras"


@dataclass(frozen=True)
class ConvertRequest:
    """Convert the legacy pair sent as `architecture` + `weights`, evaluated on `dataset.csv`."""

    architecture_name: str  # the pair's own file names: the manifest records them
    weights_name: str
    architecture_shown: str
    weights_shown: str
    dataset_shown: str


@dataclass(frozen=True)
class ConvertResult:
    """The bundle written and checked (model.keras, manifest.json and any plan.npz beside it)."""

    version: str
    runtime: str  # as CheckResult.runtime: "plan" when plan.npz was derived


@dataclass(frozen=True)
class ImportRequest:
    """Import model.keras (made elsewhere) on the table sent as features.npy + target.npy."""

    model_shown: str  # the caller's names for the model file and the data, in messages
    data_shown: str
    feature_names: list[str]
    task: str
    classes: list[str]
    label: str
    sha256: str  # of the data file, recorded in the manifest
    seed: int
    test_fraction: float


@dataclass(frozen=True)
class ImportResult:
    """The bundle written and checked (model.keras, manifest.json and any plan.npz beside it)."""

    version: str
    runtime: str  # as CheckResult.runtime: "plan" when plan.npz was derived
    held_out: int  # rows the metrics were computed on


@dataclass(frozen=True)
class ScoreRequest:
    """Score rows.npy with the bundle sent beside it."""

    shown: str


@dataclass(frozen=True)
class ScoreResult:
    """How the rows were scored (outputs.npy, float32 (rows, width), comes beside it)."""

    rows: int
    width: int  # the model's numbers per row: its output width (1, or k classes)
    kind: str


@dataclass(frozen=True)
class Answer:
    """A job's answer: a result, or the one-line reason it refused; and its output files."""

    result: dict[str, Any] = field(default_factory=dict)
    error: str = ""
    files: Mapping[str, bytes] = field(default_factory=dict)


def to_json(message: Any) -> bytes:
    """Serialize a request or result dataclass."""
    return json.dumps(asdict(message)).encode()


def from_json(kind: type[T], raw: Mapping[str, Any]) -> T:
    """Build a request or result dataclass from JSON, refusing missing or unknown keys."""
    names = {f.name for f in fields(kind)}  # type: ignore[arg-type]
    if not isinstance(raw, Mapping) or set(raw) != names:
        raise ProtocolError(f"a {kind.__name__} must have exactly {sorted(names)}")
    return kind(**raw)


def write_tar(stream: IO[bytes], members: Mapping[str, bytes | Path]) -> None:
    """Write members (bytes, or a file's path read without following links) as a tar stream."""
    with tarfile.open(fileobj=stream, mode="w|", format=tarfile.PAX_FORMAT) as tar:
        for name, content in members.items():
            if not PLAIN_NAME.fullmatch(name):
                raise ProtocolError(f"{name!r} is not a plain member name")
            if isinstance(content, Path):
                _add_file(tar, name, content)
            else:
                info = tarfile.TarInfo(name)
                info.size = len(content)
                tar.addfile(info, io.BytesIO(content))


def _add_file(tar: tarfile.TarFile, name: str, path: Path) -> None:
    """Add a regular file; a symbolic link (which may point anywhere) is refused."""
    if path.is_symlink() or not path.is_file():
        raise ProtocolError(f"{path}: not a regular file")
    with path.open("rb") as file:
        info = tar.gettarinfo(fileobj=file, arcname=name)
        info.uid = info.gid = 0
        info.uname = info.gname = ""
        info.mode = 0o644
        tar.addfile(info, file)


def read_members(stream: IO[bytes], max_bytes: int) -> Iterator[tuple[str, IO[bytes], int]]:
    """Yield (name, file, size) for each member of a tar stream, within the rules."""
    budget = max_bytes
    try:
        with tarfile.open(fileobj=stream, mode="r|") as tar:
            for count, member in enumerate(tar, start=1):
                if count > MAX_MEMBERS:
                    raise ProtocolError(f"more than {MAX_MEMBERS} files")
                if not member.isfile() or not PLAIN_NAME.fullmatch(member.name):
                    raise ProtocolError(f"{member.name[:64]!r} is not a plain file name")
                budget -= member.size
                if budget < 0:
                    raise ProtocolError(f"more than {max_bytes:,} bytes")
                extracted = tar.extractfile(member)
                assert extracted is not None  # noqa: S101 (a regular file always has content)
                yield member.name, extracted, member.size
    except (tarfile.TarError, EOFError) as error:
        raise ProtocolError(f"not a well-formed tar ({error})") from None


def read_answer(data: bytes, max_bytes: int, expected: set[str]) -> Answer:
    """Parse a job's output tar: result.json, and only the files this job may give."""
    files: dict[str, bytes] = {}
    for name, content, _size in read_members(io.BytesIO(data), max_bytes):
        if name != RESULT_MEMBER and name not in expected:
            raise ProtocolError(f"the job gave a file it must not give: {name!r}")
        if name in files:
            raise ProtocolError(f"the job gave {name!r} twice")
        files[name] = content.read()
    if RESULT_MEMBER not in files:
        raise ProtocolError(f"the job gave no {RESULT_MEMBER}")
    raw = parse_json(files.pop(RESULT_MEMBER))
    error = raw.get("error") if isinstance(raw, dict) else None
    result = raw.get("result") if isinstance(raw, dict) else None
    if isinstance(error, str):
        return Answer(error=_one_line(error), files=files)
    if not isinstance(result, dict):
        raise ProtocolError(f"{RESULT_MEMBER} holds neither a result nor an error")
    return Answer(result=result, files=files)


def parse_json(data: bytes) -> Any:
    """Decode a small JSON member, refusing an oversized or malformed one."""
    if len(data) > MAX_JSON_BYTES:
        raise ProtocolError(f"a JSON member over {MAX_JSON_BYTES} bytes")
    try:
        return json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise ProtocolError("a JSON member that is not valid JSON") from None


def _one_line(text: str, limit: int = 2000) -> str:
    """A message from inside, safe to print: one line, printable, cut short."""
    line = " ".join(text.split())
    cleaned = "".join(c if c.isprintable() else "?" for c in line)
    return cleaned if len(cleaned) <= limit else cleaned[: limit - 3] + "..."
