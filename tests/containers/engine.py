"""A private Docker engine and the images the container tests need, built here, cached.

No image registry is reachable from this machine: the base image is a Debian root file system
made with debootstrap, the broker image adds Debian's rabbitmq-server to it, and our image is
built from the repository with a local wheelhouse. Everything lives under one cache directory
(MODELSERVE_TEST_CACHE, default /var/cache/modelserve-tests) and survives between runs.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
import tomllib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
DOCKERFILE = REPO / "deploy" / "docker" / "Dockerfile"
COMPOSE_FILE = REPO / "deploy" / "docker" / "compose.yaml"
WHEELHOUSE = REPO / "deploy" / "docker" / "wheelhouse"
DEFAULT_CACHE = Path("/var/cache/modelserve-tests")
CACHE = Path(os.environ.get("MODELSERVE_TEST_CACHE", DEFAULT_CACHE))
# Our own bridge and ranges, away from Docker's defaults (docker0, 172.17+): another engine
# on this machine may use or remove docker0, and must never share a subnet with ours.
BRIDGE = "msctbr0"
BRIDGE_IP = "10.231.255.1/24"
ADDRESS_POOL = "base=10.231.0.0/17,size=24"
# Engines of other cache directories (two runs at once) take one of these second octets.
OTHER_OCTETS = range(232, 248)
SUITE = "bookworm"
BASE_PACKAGES = ("python3", "python3-venv", "ca-certificates", "git")
BROKER_CHANGES = (
    "USER rabbitmq",
    "ENV HOME=/var/lib/rabbitmq RABBITMQ_LOGS=-",
    "WORKDIR /var/lib/rabbitmq",
    "EXPOSE 5672",
    # The server itself, not Debian's wrapper, which sends the log to a file.
    'CMD ["/usr/lib/rabbitmq/bin/rabbitmq-server"]',
)
IMAGE = "modelserve-test:latest"
BUILD_STAGES = ("venv", "app")  # the Dockerfile's stages that the final image copies from
RECIPE = 2  # raise when the way the base images are made changes: they are rebuilt
START_SECONDS = 60


class EngineUnavailable(RuntimeError):
    """dockerd cannot start on this machine."""


def run(argv: list[str], timeout: float = 600, **kwargs) -> subprocess.CompletedProcess:
    """Run a command, failing with its output when it fails."""
    done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False,
                          **kwargs)
    if done.returncode != 0:
        raise AssertionError(f"{shlex.join(argv)} exited {done.returncode}:\n"
                             f"{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    return done


def docker_binary() -> str:
    """The docker client on PATH."""
    return shutil.which("docker") or "docker"


@dataclass
class Engine:
    """A dockerd of our own: its socket, directories and process."""

    root: Path
    process: subprocess.Popen | None = None
    bridge: str = BRIDGE  # removed when the engine stops

    @property
    def host(self) -> str:
        """The DOCKER_HOST value that reaches this engine."""
        return f"unix://{self.root / 'docker.sock'}"

    def env(self, **extra: str) -> dict[str, str]:
        """The environment for docker and compose clients of this engine."""
        return dict(os.environ, DOCKER_HOST=self.host, **extra)

    def docker(self, *args: str, timeout: float = 600, **kwargs) -> subprocess.CompletedProcess:
        """Run `docker ARGS` against this engine; fail with its output."""
        return run([docker_binary(), *args], timeout=timeout, env=self.env(), **kwargs)

    def has_image(self, tag: str) -> bool:
        """Tell whether the engine holds an image with this tag."""
        done = subprocess.run([docker_binary(), "image", "inspect", tag], env=self.env(),
                              capture_output=True, check=False)
        return done.returncode == 0


@contextmanager
def exclusive(path: Path) -> Iterator[None]:
    """Hold a lock file: two test runs must not share one engine's directories at once."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


@dataclass(frozen=True)
class Bridge:
    """The bridge an engine's containers use by default, and its pool for other networks."""

    name: str
    address: str
    pool: str


def bridge_for(cache: Path) -> Bridge:
    """Fixed ones for the default cache; for another cache, ones named and numbered after it.

    Two engines (two test runs with different caches) must share neither a bridge nor a subnet.
    """
    if cache.resolve() == DEFAULT_CACHE.resolve():
        return Bridge(BRIDGE, BRIDGE_IP, ADDRESS_POOL)
    key = short_hash(str(cache.resolve()))
    octet = OTHER_OCTETS[int(key, 16) % len(OTHER_OCTETS)]
    return Bridge(f"msbr{key[:8]}", f"10.{octet}.255.1/24", f"base=10.{octet}.0.0/17,size=24")


def start_engine(root: Path, cache: Path = CACHE) -> Engine:
    """Start dockerd with its own socket, data and exec roots; raise EngineUnavailable if not."""
    if not shutil.which("dockerd"):
        raise EngineUnavailable("dockerd is not installed (./dev test installs docker.io)")
    root.mkdir(parents=True, exist_ok=True)
    _stop_leftover(root / "dockerd.pid")
    bridge = bridge_for(cache)
    _add_bridge(bridge)
    (root / "docker.sock").unlink(missing_ok=True)
    argv = ["dockerd", "--host", f"unix://{root / 'docker.sock'}",
            "--data-root", str(root / "data"), "--exec-root", str(root / "exec"),
            "--pidfile", str(root / "dockerd.pid"), "--bridge", bridge.name,
            "--default-address-pool", bridge.pool, "--log-level", "warn"]
    with open(root / "dockerd.log", "ab") as log:
        process = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT,  # noqa: S603
                                   start_new_session=True)
    engine = Engine(root, process, bridge.name)
    deadline = time.monotonic() + START_SECONDS
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise EngineUnavailable(f"dockerd exited ({process.returncode}):\n{_tail(root)}")
        probe = subprocess.run([docker_binary(), "version"], env=engine.env(),
                               capture_output=True, check=False)
        if probe.returncode == 0:
            return engine
        time.sleep(0.3)
    stop_engine(engine)
    raise EngineUnavailable(f"dockerd did not answer within {START_SECONDS} s:\n{_tail(root)}")


def _tail(root: Path, lines: int = 20) -> str:
    """The last lines of the engine's log."""
    text = (root / "dockerd.log").read_text(errors="replace").splitlines()
    return "\n".join(text[-lines:])


def _stop_leftover(pidfile: Path) -> None:
    """Stop a dockerd that an interrupted run of ours left behind (found by our pidfile)."""
    try:
        pid = int(pidfile.read_text().strip())
        if b"dockerd" not in Path(f"/proc/{pid}/cmdline").read_bytes():
            return
    except (OSError, ValueError):
        return
    os.kill(pid, signal.SIGTERM)
    for _ in range(150):
        if not Path(f"/proc/{pid}").exists():
            return
        time.sleep(0.2)
    os.kill(pid, signal.SIGKILL)


def _add_bridge(bridge: Bridge) -> None:
    """Create an engine's default bridge with its address, unless it is there already."""
    if not Path(f"/sys/class/net/{bridge.name}").exists():
        run(["ip", "link", "add", bridge.name, "type", "bridge"])
    run(["ip", "addr", "replace", bridge.address, "dev", bridge.name])
    run(["ip", "link", "set", bridge.name, "up"])


def stop_engine(engine: Engine, timeout: float = 30) -> None:
    """Stop dockerd (it stops its containerd too), killing it if it hangs; drop our bridge."""
    if engine.process is not None and engine.process.poll() is None:
        engine.process.send_signal(signal.SIGTERM)
        try:
            engine.process.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(engine.process.pid, signal.SIGKILL)
            engine.process.wait(10)
    subprocess.run(["ip", "link", "delete", engine.bridge],  # noqa: S607
                   capture_output=True, check=False)


# ---------------------------------------------------------------- images


def debian_mirror() -> str:
    """The Debian mirror this machine's apt uses (deb822 sources, else sources.list)."""
    sources = Path("/etc/apt/sources.list.d/debian.sources")
    if sources.is_file():
        for stanza in sources.read_text().split("\n\n"):
            suites = re.search(r"^Suites:\s*(.+)$", stanza, re.M)
            uris = re.search(r"^URIs:\s*(\S+)", stanza, re.M)
            if suites and uris and SUITE in suites.group(1).split():
                return uris.group(1)
    for line in Path("/etc/apt/sources.list").read_text().splitlines():
        words = line.split()
        if len(words) >= 3 and words[0] == "deb" and words[2] == SUITE:
            return words[1]
    raise AssertionError(f"no Debian {SUITE} mirror found in the apt sources")


def short_hash(*parts: object) -> str:
    """A short, stable hash of some values: the cache key of an artefact."""
    return hashlib.sha256(json.dumps(parts, default=str).encode()).hexdigest()[:12]


def base_tags(mirror: str) -> tuple[str, str]:
    """Tags of the base and broker images, named after what they are built from."""
    key = short_hash(SUITE, BASE_PACKAGES, mirror, RECIPE)
    return (f"modelserve-test-base:{key}",
            f"modelserve-test-broker:{short_hash(key, BROKER_CHANGES)}")


def ensure_base_images(engine: Engine, work: Path) -> tuple[str, str]:
    """Build the Debian base image and the broker image unless the engine has them."""
    mirror = debian_mirror()
    base, broker = base_tags(mirror)
    if engine.has_image(base) and engine.has_image(broker):
        return base, broker
    rootfs = work / "rootfs"
    shutil.rmtree(rootfs, ignore_errors=True)
    try:
        run(["debootstrap", "--variant=minbase", f"--include={','.join(BASE_PACKAGES)}",
             SUITE, str(rootfs), mirror], timeout=900)
        drop_apt_caches(rootfs)
        import_rootfs(engine, rootfs, base)
        add_rabbitmq(rootfs)
        import_rootfs(engine, rootfs, broker, BROKER_CHANGES)
    finally:
        shutil.rmtree(rootfs, ignore_errors=True)
    remove_other_tags(engine, (base, broker))
    return base, broker


def remove_other_tags(engine: Engine, keep: tuple[str, ...]) -> None:
    """Delete base and broker images of earlier recipes: they only fill the cache."""
    for tag in keep:
        repository = tag.split(":")[0]
        listed = engine.docker("image", "ls", "--format", "{{.Repository}}:{{.Tag}}", repository)
        stale = [old for old in listed.stdout.split() if old not in keep]
        if stale:
            engine.docker("image", "rm", *stale)


def add_rabbitmq(rootfs: Path) -> None:
    """Install Debian's rabbitmq-server into a root file system, without starting it."""
    policy = rootfs / "usr" / "sbin" / "policy-rc.d"
    policy.write_text("#!/bin/sh\n# no service starts inside the build\nexit 101\n")
    policy.chmod(0o755)
    apt = ["chroot", str(rootfs), "env", "DEBIAN_FRONTEND=noninteractive", "apt-get", "-qq"]
    run([*apt, "update"])
    run([*apt, "install", "-y", "--no-install-recommends", "rabbitmq-server"])
    policy.unlink()
    # Each broker container makes its own Erlang cookie on first start, not one baked in.
    (rootfs / "var" / "lib" / "rabbitmq" / ".erlang.cookie").unlink(missing_ok=True)
    drop_apt_caches(rootfs)


def drop_apt_caches(rootfs: Path) -> None:
    """Remove downloaded packages and package lists (100 MB that no container needs)."""
    for pattern in ("var/cache/apt/*.bin", "var/cache/apt/archives/*.deb",
                    "var/lib/apt/lists/*_*"):
        for path in rootfs.glob(pattern):
            path.unlink()


def import_rootfs(engine: Engine, rootfs: Path, tag: str, changes: tuple[str, ...] = ()) -> None:
    """Turn a root file system into an image (`tar | docker import`)."""
    flags = [arg for change in changes for arg in ("--change", change)]
    tar = subprocess.Popen(["tar", "-C", str(rootfs), "--numeric-owner", "-c", "."],  # noqa: S607
                           stdout=subprocess.PIPE)
    try:
        engine.docker("import", *flags, "-", tag, stdin=tar.stdout)
    finally:
        tar.stdout.close()
        tar.wait()


def runtime_requirements() -> list[str]:
    """The package's runtime dependencies and its build backend, as pyproject.toml names them."""
    project = tomllib.loads((REPO / "pyproject.toml").read_text())
    return [*project["build-system"]["requires"], *project["project"]["dependencies"]]


def ensure_wheelhouse(cache: Path) -> Path:
    """Download the wheels the image needs (pinned by requirements.lock), once per lock."""
    lock = (REPO / "requirements.lock").read_text()
    key = short_hash(runtime_requirements(), lock, sys.version_info[:2])
    target = cache / "wheelhouse" / key
    if (target / ".complete").is_file():
        return target
    shutil.rmtree(target.parent, ignore_errors=True)  # older wheelhouses are no longer used
    run([sys.executable, "-m", "pip", "download", "-q", "--only-binary=:all:", "-d",
         str(target), "-c", str(REPO / "requirements.lock"), *runtime_requirements()],
        timeout=1200)
    (target / ".complete").write_text(key)
    return target


def build_image(engine: Engine, base: str, wheelhouse: Path, tag: str = IMAGE,
                context: Path = REPO, *flags: str) -> float:
    """Build our image offline from a checkout (the repository); return the seconds it took."""
    staged = stage_wheels(wheelhouse, context / WHEELHOUSE.relative_to(REPO))
    argv = ["build", "-q", "-f", str(context / DOCKERFILE.relative_to(REPO)), "--build-arg",
            f"BASE={base}", "--build-arg", "PIP_NO_INDEX=1"]
    try:
        started = time.monotonic()
        engine.docker(*argv, *flags, "-t", tag, str(context), timeout=1800)
        seconds = time.monotonic() - started
        # The classic builder's cache is its intermediate images: tag the last one of each
        # build stage (both fully cached now), or the prune below would take the 1.7 GB of
        # dependencies with it and the next build would start from nothing.
        for stage in BUILD_STAGES:
            engine.docker(*argv, "--target", stage, "-t", f"{tag.split(':')[0]}-stage:{stage}",
                          str(context), timeout=600)
    finally:
        for path in staged:
            path.unlink(missing_ok=True)
    # Images that earlier builds made and this one untagged would fill the cache directory.
    engine.docker("image", "prune", "-f")
    return seconds


def stage_wheels(wheelhouse: Path, into: Path) -> list[Path]:
    """Link the wheels into the build context's wheelhouse; return their paths there."""
    staged = []
    for wheel in sorted(wheelhouse.glob("*.whl")):
        target = into / wheel.name
        target.unlink(missing_ok=True)  # left by an interrupted run, or another version
        try:
            os.link(wheel, target)
        except OSError:  # another file system: copy instead
            shutil.copy2(wheel, target)
        staged.append(target)
    return staged
