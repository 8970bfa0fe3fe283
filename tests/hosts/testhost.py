"""Fresh servers for tests: containers running systemd and sshd, each with its own address.

A host is a container of the host image on a network of ours, started the way
../shared/TESTHOSTS.md says systemd runs in a container on this machine (`--privileged` fails
here). Tests reach it as a real server: SSH as the operator account `ops` (passwordless sudo,
the session's key), which is what Ansible connects as; `docker exec` is for diagnostics.
"""

from __future__ import annotations

import io
import json
import shlex
import subprocess
import tarfile
import time
from dataclasses import dataclass
from pathlib import Path

from containers.engine import Engine, docker_binary, run

ADMIN = "ops"
LABEL = "modelserve-test-host"  # every container and network made here carries it
SYSTEMD_FLAGS = (
    "--cap-add", "SYS_ADMIN", "--cap-add", "NET_ADMIN",
    "--security-opt", "seccomp=unconfined", "--security-opt", "apparmor=unconfined",
    "--cgroupns=host", "-v", "/sys/fs/cgroup:/sys/fs/cgroup:rw",
    "--tmpfs", "/run", "--tmpfs", "/run/lock",
    "--stop-signal", "SIGRTMIN+3",  # what systemd takes as "shut down" (import cannot set it)
)
SSH_OPTIONS = ("-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null")
BOOT_SECONDS = 90
# Written before the first start of a host that Ansible (not cloud-init) sets up.
CLOUD_INIT_DISABLED = "/etc/cloud/cloud-init.disabled"
NOCLOUD_SEED = "/var/lib/cloud/seed/nocloud"
CLOUD_INIT_SECONDS = 900


@dataclass(frozen=True)
class TestHost:
    """One running host: how to reach it by docker and by SSH."""

    __test__ = False  # not a test class, whatever pytest thinks of the name

    name: str
    address: str
    container: str
    engine: Engine
    key: Path

    def exec(self, *argv: str, check: bool = True, timeout: float = 120,
             user: str = "root") -> subprocess.CompletedProcess:
        """Run a command in the host as root (docker exec); fail with its output if check."""
        command = [docker_binary(), "exec", "-u", user, self.container, *argv]
        return _run(command, self.engine.env(), check, timeout)

    def ssh(self, *argv: str, check: bool = True, timeout: float = 120,
            user: str = ADMIN) -> subprocess.CompletedProcess:
        """Run a command on the host over SSH as ops (or user), with the session's key."""
        return _run(ssh_argv(self.address, self.key, user, *argv), None, check, timeout)

    def journal(self, unit: str, lines: int = 80) -> str:
        """The unit's last journal lines, for an assertion's message."""
        done = self.exec("journalctl", "--no-pager", "-n", str(lines), "-u", unit, check=False)
        return done.stdout + done.stderr

    def put(self, files: dict[str, bytes | str]) -> None:
        """Copy files (absolute path in the host: content) into the host, owned by root."""
        put_files(self.engine, self.container, files)


def _run(argv: list[str], env: dict | None, check: bool, timeout: float
         ) -> subprocess.CompletedProcess:
    """Run a command with text output; with check, fail showing what it printed."""
    if check:
        return run(argv, timeout=timeout, env=env)
    return subprocess.run(argv, capture_output=True, text=True, timeout=timeout, env=env,
                          check=False)


def ssh_argv(address: str, key: Path, user: str, *argv: str) -> list[str]:
    """The ssh command line that runs argv (quoted for the remote shell) on a host."""
    return ["ssh", "-i", str(key), *SSH_OPTIONS, "-o", "BatchMode=yes", "-o", "LogLevel=ERROR",
            "-o", "ConnectTimeout=5", f"{user}@{address}", "--", shlex.join(argv)]


def make_key(folder: Path) -> Path:
    """Generate an ed25519 key pair in folder; return the private key's path."""
    key = folder / "id_ed25519"
    run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "modelserve-tests", "-f",
         str(key)])
    return key


def create_network(engine: Engine, name: str) -> str:
    """Make a bridge network for hosts (its subnet comes from the engine's pool)."""
    engine.docker("network", "create", "--label", LABEL, name)
    return name


def gateway(engine: Engine, network: str) -> str:
    """The address of this machine on a network: what hosts reach it by."""
    inspected = json.loads(engine.docker("network", "inspect", network).stdout)[0]
    return inspected["IPAM"]["Config"][0]["Gateway"]


def remove_leftovers(engine: Engine) -> None:
    """Remove hosts and networks that an interrupted run of ours left in the engine."""
    listed = engine.docker("ps", "-aq", "--filter", f"label={LABEL}").stdout.split()
    if listed:
        engine.docker("rm", "-f", "-v", *listed)
    networks = engine.docker("network", "ls", "-q", "--filter", f"label={LABEL}").stdout.split()
    if networks:
        engine.docker("network", "rm", *networks)


def put_files(engine: Engine, container: str, files: dict[str, bytes | str]) -> None:
    """Copy files into a container, created or running (a tar stream to `docker cp`)."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as archive:
        for path, content in files.items():
            data = content.encode() if isinstance(content, str) else content
            info = tarfile.TarInfo(path.lstrip("/"))
            info.size, info.mode, info.mtime = len(data), 0o644, int(time.time())
            archive.addfile(info, io.BytesIO(data))
    done = subprocess.run([docker_binary(), "cp", "-", f"{container}:/"], env=engine.env(),
                          input=buffer.getvalue(), capture_output=True, check=False, timeout=120)
    if done.returncode != 0:
        raise AssertionError(f"docker cp into {container}: {done.stderr.decode()}")


def create_host(engine: Engine, image: str, network: str, name: str, prefix: str) -> str:
    """Create (not start) a systemd container named prefix-name with hostname name."""
    return engine.docker(
        "create", "--name", f"{prefix}-{name}", "--hostname", name, "--network", network,
        "--label", LABEL, *SYSTEMD_FLAGS, image, "/sbin/init").stdout.strip()


def start_host(engine: Engine, container: str, name: str, key: Path) -> TestHost:
    """Start a created host; return it once it has an address."""
    engine.docker("start", container)
    inspected = json.loads(engine.docker("inspect", container).stdout)[0]
    networks = inspected["NetworkSettings"]["Networks"]
    address = next(iter(networks.values()))["IPAddress"]
    return TestHost(name, address, container, engine, key)


def wait_booted(host: TestHost, seconds: float = BOOT_SECONDS) -> str:
    """Wait until systemd finished booting (running or degraded); return that state."""
    deadline = time.monotonic() + seconds
    state = ""
    while time.monotonic() < deadline:
        state = host.exec("systemctl", "is-system-running", check=False).stdout.strip()
        if state in ("running", "degraded"):
            return state
        time.sleep(0.5)
    failed = host.exec("systemctl", "list-units", "--failed", "--no-pager", check=False)
    raise AssertionError(f"{host.name}: systemd is {state!r} after {seconds} s\n{failed.stdout}")


def nocloud_seed(name: str, user_data: str) -> dict[str, str]:
    """The files that make cloud-init boot from user-data (NoCloud), as a cloud would."""
    return {
        f"{NOCLOUD_SEED}/user-data": user_data,
        f"{NOCLOUD_SEED}/meta-data": f"instance-id: iid-{name}\nlocal-hostname: {name}\n",
        "/etc/cloud/cloud.cfg.d/90_nocloud.cfg": "datasource_list: [ NoCloud, None ]\n",
    }


def wait_cloud_init(host: TestHost, seconds: float = CLOUD_INIT_SECONDS) -> str:
    """Wait until cloud-init finished; fail with its log if it reports an error."""
    done = host.exec("cloud-init", "status", "--wait", "--long", check=False, timeout=seconds)
    if done.returncode != 0:
        log = host.exec("tail", "-n", "60", "/var/log/cloud-init-output.log", check=False)
        raise AssertionError(f"{host.name}: cloud-init failed:\n{done.stdout}{done.stderr}\n"
                             f"{log.stdout}")
    return done.stdout


def add_admin(host: TestHost) -> None:
    """Make the ops account as a cloud image's user-data would: sudo, the session's key."""
    public = host.key.with_suffix(".pub").read_text()
    host.exec("useradd", "--create-home", "--shell", "/bin/bash", "--groups", "sudo", ADMIN)
    # "*": no password logs in, but the account is not locked ("!"), which refuses keys too.
    host.exec("usermod", "-p", "*", ADMIN)
    host.put({f"/home/{ADMIN}/.ssh/authorized_keys": public,
              f"/etc/sudoers.d/{ADMIN}": f"{ADMIN} ALL=(ALL) NOPASSWD:ALL\n"})
    host.exec("chown", "-R", f"{ADMIN}:{ADMIN}", f"/home/{ADMIN}/.ssh")
    host.exec("chmod", "0440", f"/etc/sudoers.d/{ADMIN}")


def wait_ssh(host: TestHost, seconds: float = BOOT_SECONDS) -> None:
    """Wait until sshd lets ops in with the session's key."""
    deadline = time.monotonic() + seconds
    while True:
        done = host.ssh("true", check=False, timeout=15)
        if done.returncode == 0:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"{host.name}: no SSH login as {ADMIN}: {done.stderr}\n"
                                 f"{host.journal('ssh')}")
        time.sleep(0.5)


def inventory(groups: dict[str, list[TestHost]], key: Path, path: Path | None = None) -> Path:
    """Write an Ansible INI inventory of these groups of hosts (default: beside the key)."""
    path = path or key.parent / "inventory.ini"
    lines = []
    for group, members in groups.items():
        lines.append(f"[{group}]")
        lines += [f"{host.name} ansible_host={host.address}" for host in members]
        lines.append("")
    common_args = " ".join(SSH_OPTIONS)
    lines += ["[all:vars]", f"ansible_user={ADMIN}", f"ansible_ssh_private_key_file={key}",
              f"ansible_ssh_common_args='{common_args}'",
              "ansible_python_interpreter=/usr/bin/python3", ""]
    path.write_text("\n".join(lines))
    return path
