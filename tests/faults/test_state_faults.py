"""Faults of the model store under a serving stack: a full disk, a corrupt active model, kill -9.

Each scenario runs a real stack (`modelserve up`, two workers) under a bounded load and the real
command line, and checks the bar: the stack keeps serving a good model (every answer correct
for the version it names; nothing failed, lost or hung), and the registry says what happened.
"""

from __future__ import annotations

import json
import math
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from cli_helpers import run_cli
from serving.conftest import prepare_home, version_of_seed
from serving.stack_helpers import (
    ROW,
    BoundedLoad,
    RunningStack,
    alive,
    http,
    start_stack,
)

from faults.conftest import wait_for_answers, wait_for_new_workers
from modelserve.model.bundle import MANIFEST_FILE, MODEL_FILE, write_manifest
from modelserve.model.runtime import ModelRuntime
from modelserve.registry import Registry, RegistryError

pytestmark = pytest.mark.slow

PAGE = 4096  # tmpfs counts whole pages
SEED = 8  # the kill delays are random, but the same on every run
ADD_KILLS = 8
SWITCH_KILLS = 10


# -- homes, bundles and expected answers ------------------------------------------------------


@pytest.fixture(scope="module")
def state_template(tmp_path_factory, shared_data: Path, pima_csv: Path) -> Path:
    """A home with both seed models; development was active before production, which is."""
    home = tmp_path_factory.mktemp("state-template") / "home"
    # The session's template with development activated (serving/conftest), then production.
    prepare_home(home, shared_data, pima_csv, ("production", "development"), active="development")
    result = run_cli("models", "activate", version_of_seed(home, "production"), home=home)
    assert result.returncode == 0, result.stderr
    return home


@pytest.fixture
def state_home(state_template: Path, tmp_path: Path) -> Path:
    """A private copy of the template home."""
    return Path(shutil.copytree(state_template, tmp_path / "home", symlinks=True))


def seeds(home: Path) -> tuple[str, str]:
    """The production and development versions."""
    return version_of_seed(home, "production"), version_of_seed(home, "development")


def variant_bundle(home: Path, version: str, out: Path, number: int) -> Path:
    """A bundle of a stored version's model with another creation time: a new version."""
    out.mkdir(parents=True)
    source = home / "registry" / "versions" / version
    shutil.copyfile(source / MODEL_FILE, out / MODEL_FILE)
    manifest = json.loads((source / MANIFEST_FILE).read_text())
    manifest["created_at"] = f"2030-01-01T00:{number // 60:02d}:{number % 60:02d}+00:00"
    write_manifest(out, manifest)
    return out


class Expected:
    """The probability each version must answer for ROW, computed here from its stored files."""

    def __init__(self, home: Path):
        self.registry = Registry(home / "registry")
        self.known: dict[str, float] = {}

    def __call__(self, version: str) -> float:
        if version not in self.known:
            runtime = ModelRuntime.load(self.registry.get(version).path)
            self.known[version] = float(runtime.score([ROW]).probabilities[0])
        return self.known[version]


def tally(load: BoundedLoad, expected: Expected) -> dict[str, int]:
    """Count a load's answers: correct for the version they name, wrong, failed, lost, hung."""
    counts = load.tally(expected)
    refused = sum(n for key, n in counts.items() if key.startswith("status "))
    return {key: counts[key] for key in ("sent", "correct", "wrong", "lost", "hung")} | {
        "failed": refused}


def assert_served_well(load: BoundedLoad, counts: dict[str, int]) -> None:
    """The bar: every request answered, correctly for its version."""
    bad = [(a.status, a.body) for a in load.answers if a.status != 200][:5]
    assert counts["sent"] > 0
    assert counts["correct"] == counts["sent"], (counts, bad)


def served_versions(load: BoundedLoad) -> Counter:
    """How many answers each version gave."""
    return Counter(a.body["model_version"] for a in list(load.answers) if a.status == 200)


def ready_status(stack: RunningStack) -> dict:
    """The readiness answer (any status code)."""
    return http("GET", f"{stack.url}/v2/health/ready").json()


def cli(home: Path, *args: str):
    """Run the command line; its output is always one of ours (no traceback)."""
    result = run_cli(*args, home=home)
    assert "Traceback" not in result.stderr, result.stderr
    return result


def history_lines(registry: Registry) -> list[str]:
    """The raw history file, which must always be whole JSON lines."""
    data = (registry.root / "history.jsonl").read_bytes()
    assert data.endswith(b"\n"), data[-200:]
    lines = data.decode().splitlines()
    for line in lines:
        json.loads(line)
    return lines


def staging(registry: Registry) -> list[str]:
    """What is in the staging directory."""
    path = registry.root / "staging"
    return sorted(os.listdir(path)) if path.is_dir() else []


def assert_store_whole(home: Path, *, allow_staging: bool = False) -> str:
    """The link names a complete version that loads; `models list` shows only whole versions."""
    registry = Registry(home / "registry")
    active = registry.active_version()
    assert active is not None and registry.damage(active) is None
    ModelRuntime.load(registry.get(active).path)
    listing = cli(home, "models", "list")
    assert listing.returncode == 0, listing.stderr
    rows = listing.stdout.splitlines()[1:]
    stored = sorted(name for name in os.listdir(registry.root / "versions"))
    assert sorted(row.split()[1] for row in rows) == stored  # MODEL, then VERSION
    assert all(row.split()[-1] == "ok" for row in rows), listing.stdout
    if not allow_staging:
        assert staging(registry) == []
    return active


# -- 1. a full disk under the registry --------------------------------------------------------


@contextmanager
def tmpfs(directory: Path, size_bytes: int) -> Iterator[Path]:
    """Mount a tmpfs of this size on a directory (we are root), always unmounted after."""
    directory.mkdir(parents=True, exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size_bytes}", "tmpfs",  # noqa: S607
                    str(directory)], check=True)
    try:
        yield directory
    finally:
        if subprocess.run(["umount", str(directory)], check=False).returncode:  # noqa: S607
            subprocess.run(["umount", "-l", str(directory)], check=True)  # noqa: S607


def fill(directory: Path, leave: int = 0) -> Path:
    """Fill a file system with one file until it is full, then free `leave` bytes of it."""
    filler = directory / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        while True:
            os.write(fd, b"\0" * PAGE)
    except OSError as error:
        assert error.errno == 28, error  # ENOSPC
    finally:
        os.close(fd)
    os.truncate(filler, max(filler.stat().st_size - leave, 0))
    assert os.statvfs(directory).f_bavail * os.statvfs(directory).f_frsize == leave
    return filler


def pages(*paths: Path) -> int:
    """The bytes of whole pages these files take on a tmpfs."""
    return sum(math.ceil(path.stat().st_size / PAGE) for path in paths) * PAGE


@pytest.fixture
def full_disk_home(state_home: Path) -> Iterator[Path]:
    """The home with its registry moved onto a 256 KiB tmpfs."""
    original = state_home / "registry-on-disk"
    (state_home / "registry").rename(original)
    with tmpfs(state_home / "registry", 256 * 1024) as mounted:
        shutil.copytree(original, mounted, symlinks=True, dirs_exist_ok=True)
        yield state_home


def test_a_full_disk_under_the_registry(full_disk_home: Path, tmp_path: Path, reliability):
    """add and activate on a full disk: one clear line, nothing half done, serving goes on."""
    home = full_disk_home
    registry = Registry(home / "registry")
    production, development = seeds(home)
    expected = Expected(home)
    expected(production), expected(development)
    bundle = variant_bundle(home, development, tmp_path / "bundle", 1)
    stack = start_stack(home, "--workers", "2")
    try:
        stack.wait_ready(workers=2)
        with BoundedLoad(stack.url, threads=2, seconds=300, limit=500_000) as load:
            outcomes = _full_disk_steps(home, registry, bundle, production, development)
        counts = tally(load, expected)
    finally:
        assert stack.stop() == 0
    assert_served_well(load, counts)
    reliability.record(
        "Faults", "registry: full disk (tmpfs) under add and activate, then space freed",
        note=("add refused with one line in the copy and in the check phase (e.g. "
              f"`{outcomes.pop('add refusal (check phase)')}`), no staging left, no partial "
              f"version; activate worked {outcomes['activations before the disk refused']} times "
              "until the history needed a new page, then was refused with the link and history "
              "unchanged; after freeing space add and activate worked"),
        requests=counts["sent"], correct=counts["correct"], failed=counts["failed"],
        lost=counts["lost"], hung=counts["hung"], **outcomes)


def _full_disk_steps(home: Path, registry: Registry, bundle: Path, production: str,
                     development: str) -> dict[str, object]:
    """The full-disk scenario's commands and checks, while the load runs."""
    root, outcomes = registry.root, {}
    before = (root / "history.jsonl").read_bytes()
    # No space at all: the copy fails.
    filler = fill(root)
    refusal = _refused_add(home, registry, bundle, before)
    assert "No space left on device" in refusal and "nothing was added" in refusal, refusal
    # Room for the copy but not for the plan the check writes: the check fails.
    filler.unlink()
    fill(root, leave=pages(bundle / MODEL_FILE, bundle / MANIFEST_FILE))
    refusal = _refused_add(home, registry, bundle, before)
    assert "No space left on device" in refusal and "plan.npz" in refusal, refusal
    outcomes["add refusal (check phase)"] = (
        refusal.replace(str(bundle), "BUNDLE").replace(str(home), "$MODELSERVE_HOME"))
    # Activations append to the history until its last page is full; the next one needs a page.
    (root / "filler").unlink()
    fill(root)
    outcomes["activations before the disk refused"] = _activate_until_refused(
        home, registry, production, development)
    rollback = cli(home, "models", "rollback")
    assert rollback.returncode == 1 and "No space left on device" in rollback.stderr
    # Space again: the same commands work.
    (root / "filler").unlink()
    added = cli(home, "models", "add", str(bundle), "--activate")
    assert added.returncode == 0, added.stderr
    assert f"active: {registry.active_version()}" in added.stdout
    assert cli(home, "models", "activate", production).returncode == 0
    assert_store_whole(home)
    assert len(registry.list_versions()) == 3
    return outcomes


def _refused_add(home: Path, registry: Registry, bundle: Path, history: bytes) -> str:
    """Run `models add` on a full disk: one line, exit 1, nothing stored, nothing left."""
    versions = sorted(os.listdir(registry.root / "versions"))
    active = registry.active_version()
    result = cli(home, "models", "add", str(bundle))
    assert result.returncode == 1, (result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: cannot add "), result.stderr
    assert sorted(os.listdir(registry.root / "versions")) == versions
    assert staging(registry) == []
    assert registry.active_version() == active
    assert (registry.root / "history.jsonl").read_bytes() == history
    return lines[0]


def _activate_until_refused(home: Path, registry: Registry, *versions: str) -> int:
    """Switch between two versions on a full disk until refused; return how many worked.

    The first switch and the refusal are commands; those between (filling the history's last
    page, one event at a time) go through the same Registry calls, which is quicker.
    """
    for done in range(40):
        active = registry.active_version()
        target = versions[1] if active == versions[0] else versions[0]
        history = (registry.root / "history.jsonl").read_bytes()
        try:
            if done == 0:
                result = cli(home, "models", "activate", target)
                assert result.stdout == f"active: {target} (was {active})\n", result.stderr
            else:
                registry.activate(target, source="test")
        except RegistryError:
            pass
        else:
            assert registry.active_version() == target
            history_lines(registry)
            continue
        result = cli(home, "models", "activate", target)
        assert result.returncode == 1, result.stderr
        assert result.stderr.strip() == (
            f"Error: cannot activate {target}: No space left on device "
            f"({registry.root / 'history.jsonl'}); {active} is still active; "
            "free some space and try again")
        assert registry.active_version() == active
        assert (registry.root / "history.jsonl").read_bytes() == history  # no torn line
        return done
    raise AssertionError("40 activations on a full disk all worked")


# -- 2. the active model's files corrupted while it serves ------------------------------------


def overwrite_middle(path: Path, data: bytes = b"\xde\xad\xbe\xef" * 8) -> None:
    """Overwrite bytes in the middle of a file, in place, as a failing disk or a stray dd would."""
    with open(path, "r+b") as stream:
        stream.seek(path.stat().st_size // 2)
        stream.write(data)


def worker_pid(body: dict) -> int:
    """The process that computed an answer."""
    return int(body["worker"].rsplit(":", 1)[1])


def kill_worker_and_wait(stack: RunningStack, pid: int, timeout: float = 60) -> list[int]:
    """kill -9 a worker and wait until the supervisor has started its replacement."""
    others = set(stack.worker_pids()) - {pid}
    os.kill(pid, signal.SIGKILL)
    pids = set(wait_for_new_workers(stack, {pid}, 2, timeout))
    assert others <= pids, f"another worker went with {pid}: {pids}\n{stack.log()}"
    return sorted(pids - others)


def test_a_corrupt_active_model_is_not_served_by_fresh_workers(state_home: Path, reliability):
    """Running workers serve it from memory; a restarted worker serves the previous good model."""
    home = state_home
    registry = Registry(home / "registry")
    production, development = seeds(home)
    expected = Expected(home)
    expected(production), expected(development)
    stack = start_stack(home, "--workers", "2")
    try:
        stack.wait_ready(workers=2)
        with BoundedLoad(stack.url, threads=2, seconds=300, limit=500_000) as load:
            wait_for_answers(load, 20, accept=lambda body: True)
            figures = _corrupt_and_restart(stack, home, registry, load, production, development)
        counts = tally(load, expected)
        log = stack.log()
    finally:
        assert stack.stop() == 0
    assert_served_well(load, counts)
    by_version = served_versions(load)
    assert by_version[production] > 0 and by_version[development] > 0, by_version
    damaged = f"{registry.root}/versions/{production}: model.keras does not match its sha256"
    assert f"cannot load the active version {production}: {damaged}" in log, log
    assert f"serving {development} instead" in log, log
    reliability.record(
        "Faults", "registry: active model.keras and plan.npz overwritten, both workers kill -9",
        note=(f"running workers kept the version in memory; each restarted worker served "
              f"{development[:6]}, the previous activation, and logged the corrupt file; "
              "readiness and `models list` named it; a rollback cleared the problem"),
        requests=counts["sent"], correct=counts["correct"], failed=counts["failed"],
        lost=counts["lost"], hung=counts["hung"], kills=2,
        **{"answers by the corrupt version (from memory)": by_version[production],
           "answers by the previous version": by_version[development]}, **figures)


def test_a_web_started_on_a_damaged_active_manifest_serves_the_previous_model(
        state_home: Path):
    """The active manifest is garbage when a web process starts: its pages and API answer with
    the previous activation's contract and model (in-process scoring), and say what happened."""
    from modelserve.config import load_settings
    from modelserve.web import create_app

    production, development = seeds(state_home)
    (state_home / "registry" / "versions" / production / MANIFEST_FILE).write_text("{garbage")
    app = create_app(load_settings({"MODELSERVE_HOME": str(state_home)}), inline=True)
    client = app.test_client()
    page = client.get("/")
    answer = client.post("/api/v1/predict", json={"rows": [ROW]})
    ready = client.get("/v2/health/ready").json
    assert page.status_code == 200 and b"is damaged" in page.data
    assert answer.status_code == 200, answer.json
    assert answer.json["model_version"] == development
    assert abs(answer.json["probabilities"][0] - Expected(state_home)(development)) < 1e-4
    assert f"the active version {production} is damaged" in ready["problem"]


def _corrupt_and_restart(stack: RunningStack, home: Path, registry: Registry,
                         load: BoundedLoad, production: str, development: str) -> dict:
    """Corrupt production's files, restart both workers, check what says so; then roll back."""
    folder = registry.root / "versions" / production
    overwrite_middle(folder / MODEL_FILE)
    overwrite_middle(folder / "plan.npz")
    wait_for_answers(load, 20,  # served from memory
                     accept=lambda body: body["model_version"] == production)
    status = ready_status(stack)
    assert status["ready"] is True and status["active_version"] == production
    assert production in status["problem"] and "model.keras does not match" in status["problem"]
    assert f"serve {development}" in status["problem"], status
    page = http("GET", f"{stack.url}/").body.decode()
    assert f"the active version {production} is damaged" in page
    listing = cli(home, "models", "list")
    assert listing.returncode == 0 and f"{production} is corrupt: " in listing.stdout
    assert "the active version of diabetes is corrupt" in listing.stdout
    row = next(line for line in listing.stdout.splitlines() if line.split()[1:2] == [production])
    assert row.split()[-2:] == ["*", "CORRUPT"], listing.stdout
    recovery = []
    for old in stack.worker_pids():
        killed = time.monotonic()
        (new,) = kill_worker_and_wait(stack, old)
        wait_for_answers(load, 1, accept=lambda body, new=new: worker_pid(body) == new
                         and body["model_version"] == development)
        recovery.append(time.monotonic() - killed)
    # Both workers are fresh: every answer now comes from the previous good model.
    wait_for_answers(load, 20, accept=lambda body: True)
    assert {a.body["model_version"] for a in load.answers[-10:]} == {development}
    rollback = cli(home, "models", "rollback", "--reason", "production's files are corrupt")
    assert rollback.returncode == 0 and f"{development} is active" in rollback.stdout
    assert ready_status(stack)["problem"] is None
    return {"time from kill to answers of the previous model":
            " / ".join(f"{seconds:.1f} s" for seconds in recovery)}


# -- 3. kill -9 in the middle of add, activate and rollback -----------------------------------


def start_command(home: Path, *args: str) -> subprocess.Popen:
    """Start the command line in the background, in a session of its own."""
    env = dict(os.environ, MODELSERVE_HOME=str(home))
    return subprocess.Popen(  # noqa: S603 (our interpreter, argument list)
        [sys.executable, "-m", "modelserve", *args], env=env, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True, start_new_session=True)


def kill_9(process: subprocess.Popen) -> bool:
    """kill -9 a command and the model checker it may run; tell whether it was still running."""
    running = process.poll() is None
    if running:
        # Its process group: a checker left running would only finish its check and exit.
        os.killpg(process.pid, signal.SIGKILL)
    _out, err = process.communicate(timeout=60)
    assert "Traceback" not in err, err
    return running


def sandboxed_checkers(wait: float = 5.0) -> list[int]:
    """The sandbox's processes (`modelserve.sandbox.*`) still alive after `wait` seconds.

    A confined check names no path on its command line (its inputs come on stdin), so it is
    found by its module; none may outlive the `models add` that started it (pdeathsig), and
    this test's registry is the only one adding models while it runs.
    """
    deadline = time.monotonic() + wait
    while True:
        found = []
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit():
                try:
                    cmdline = (entry / "cmdline").read_bytes()
                except OSError:
                    continue
                if b"modelserve.sandbox." in cmdline:
                    found.append(int(entry.name))
        running = [pid for pid in found if alive(pid)]
        if not running or time.monotonic() > deadline:
            return running
        time.sleep(0.05)


def holds_lock(pid: int, lock: str) -> bool:
    """Tell whether a process has the registry's lock file open (it is inside a mutation)."""
    try:
        fds = os.listdir(f"/proc/{pid}/fd")
    except OSError:
        return False
    for fd in fds:
        try:
            if os.readlink(f"/proc/{pid}/fd/{fd}") == lock:
                return True
        except OSError:
            continue
    return False


def reconcile(home: Path, registry: Registry) -> str:
    """Run the cheapest mutation (activate what is active), which repairs; return its output."""
    result = cli(home, "models", "activate", registry.active_version())
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_kill_9_in_the_middle_of_add_activate_and_rollback(state_home: Path, tmp_path: Path,
                                                          reliability):
    """After each kill: a whole version is active, `models list` works, the next change repairs."""
    home = state_home
    registry = Registry(home / "registry")
    production, development = seeds(home)
    expected = Expected(home)
    expected(production), expected(development)
    rng = random.Random(SEED)  # noqa: S311 (when to kill, not a secret)
    stack = start_stack(home, "--workers", "2")
    try:
        stack.wait_ready(workers=2)
        with BoundedLoad(stack.url, threads=2, seconds=600, limit=500_000) as add_load:
            adds, add_seconds = _kill_adds(home, registry, tmp_path, development, rng)
        with BoundedLoad(stack.url, threads=2, seconds=600, limit=500_000) as switch_load:
            switches = _kill_switches(home, registry, production, development, rng)
    finally:
        assert stack.stop() == 0
    add_counts, switch_counts = tally(add_load, expected), tally(switch_load, expected)
    assert_served_well(add_load, add_counts)
    assert_served_well(switch_load, switch_counts)
    notes = {"add": f"an uninterrupted add took {add_seconds:.1f} s; half the kills at 5-100 % "
                    "of that, half 0-10 ms after it took the lock to publish",
             "activate/rollback": "half the kills at 0.2-1.5 s, half 0-5 ms after it took the "
                                  "registry lock"}
    for kind, landed, counts in (("add", adds, add_counts),
                                 ("activate/rollback", switches, switch_counts)):
        where = ", ".join(f"{place}: {n}" for place, n in sorted(landed.items()))
        reliability.record(
            "Faults", f"registry: kill -9 in the middle of `models {kind}` (seeded delays)",
            note=f"{notes[kind]}; landed {where}; after each: a whole version active, "
                 "`models list` clean, the next change repaired and said so",
            requests=counts["sent"], correct=counts["correct"], failed=counts["failed"],
            lost=counts["lost"], hung=counts["hung"],
            kills=sum(landed.values()) - landed["after it finished"])


def _kill_adds(home: Path, registry: Registry, tmp_path: Path, development: str,
               rng: random.Random) -> tuple[Counter, float]:
    """kill -9 `models add`: half at a random time, half as it publishes; check and repair after."""
    lock = os.path.realpath(registry.root / ".lock")
    began = time.monotonic()
    done = cli(home, "models", "add", str(variant_bundle(home, development, tmp_path / "b0", 0)))
    assert done.returncode == 0, done.stderr
    duration, landed = time.monotonic() - began, Counter()
    for attempt in range(1, ADD_KILLS + 1):
        bundle = variant_bundle(home, development, tmp_path / f"b{attempt}", attempt)
        version = json.loads((bundle / MANIFEST_FILE).read_text())["version"]
        process = start_command(home, "models", "add", str(bundle))
        if attempt % 2:
            time.sleep(rng.uniform(0.05, 1.0) * duration)  # the point to kill at
        else:
            _wait_until_publishing(process, registry, lock)
            time.sleep(rng.uniform(0, 0.01))
        if not kill_9(process):
            landed["after it finished"] += 1
            continue
        assert sandboxed_checkers() == []
        left = staging(registry)
        checked = bool(left) and (registry.root / "staging" / left[0] / "plan.npz").is_file()
        stored = (registry.root / "versions" / version).is_dir()
        recorded = any(e["action"] == "add" and e["version"] == version for e in registry.history())
        assert_store_whole(home, allow_staging=True)
        output = reconcile(home, registry)
        assert staging(registry) == []
        if left:
            landed["checked, before publishing" if checked else "in copy or check"] += 1
            assert f"recovered: removed staging/{left[0]} (left by an add that was interrupted)" \
                in output, output
            assert registry.history()[-1]["action"] == "cleanup"
        elif stored and not recorded:
            landed["between the rename and the add event"] += 1
            assert "found in the store without an add event" in output, output
        elif stored:
            landed["after the version was stored"] += 1
        else:
            landed["before staging"] += 1
            assert output.strip() == f"{registry.active_version()} is already active"
    return landed, duration


def _wait_until_publishing(process: subprocess.Popen, registry: Registry, lock: str) -> None:
    """Wait until an add has checked its copy (the plan is written) and takes the lock again."""
    def checked() -> bool:
        return any((registry.root / "staging" / name / "plan.npz").is_file()
                   for name in staging(registry))

    while process.poll() is None and not checked():
        time.sleep(0.05)
    while process.poll() is None and not holds_lock(process.pid, lock):
        time.sleep(0.001)  # a tight poll: publishing lasts milliseconds


def _kill_switches(home: Path, registry: Registry, production: str, development: str,
                   rng: random.Random) -> Counter:
    """kill -9 activate/rollback: half at a random time, half once it holds the registry lock."""
    lock, landed = os.path.realpath(registry.root / ".lock"), Counter()
    for attempt in range(SWITCH_KILLS):
        active = registry.active_version()
        if active == development and registry.fallbacks(development):
            command = ("models", "rollback")
        else:
            command = ("models", "activate", development if active == production else production)
        history = len(registry.history())
        process = start_command(home, *command)
        if attempt % 2:
            time.sleep(rng.uniform(0.2, 1.5))
        else:
            while process.poll() is None and not holds_lock(process.pid, lock):
                time.sleep(0.001)  # a tight poll: the mutation itself lasts milliseconds
            time.sleep(rng.uniform(0, 0.005))
        if not kill_9(process):
            landed["after it finished"] += 1
            continue
        now, grew = registry.active_version(), len(registry.history()) > history
        link_left = bool(list(registry.root.glob(".active-tmp-*")))
        assert now in (production, development)
        assert_store_whole(home)
        output = reconcile(home, registry)
        if now != active:
            landed["after the switch"] += 1
        elif grew:
            landed["between the history event and the switch"
                   + (" (temporary link left)" if link_left else "")] += 1
            assert "was interrupted; " in output, output
            recover = next(e for e in reversed(registry.history()) if e["action"] != "cleanup")
            assert (recover["action"], recover["undo"]) == ("recover", True), recover
        else:
            landed["before any change"] += 1
        assert not list(registry.root.glob(".active-tmp-*"))
    return landed
