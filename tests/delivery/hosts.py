"""Real SSH hosts for delivery tests: a network namespace running its own sshd, and users.

A namespace shares the file system and the users with this machine (see TESTHOSTS.md), so it
stands in for a remote host on the network, not for a fresh server. Everything here needs
root and tears itself down on exit, also when the test inside failed.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import pwd
import random
import secrets
import shlex
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

SSHD = "/usr/sbin/sshd"  # sshd re-executes itself and insists on an absolute path
SFTP_SERVER = "/usr/lib/openssh/sftp-server"
PRIVSEP_DIR = Path("/run/sshd")
SUBNET_PREFIX = "10.231"
# Serialises subnet choice between parallel runs: two veths may carry the same address.
SUBNET_LOCK = Path("/run/lock/modelserve-netns-subnet.lock")
STARTUP_SECONDS = 10.0


def run(*command: str | Path, check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run a command with captured text output; by default raise with its stderr on failure."""
    result = subprocess.run([str(part) for part in command], capture_output=True, text=True,
                            check=False)
    if check and result.returncode != 0:
        raise RuntimeError(f"{shlex.join(result.args)} exited {result.returncode}: "
                           f"{result.stderr.strip()}")
    return result


def generate_key(directory: Path, name: str = "id_ed25519") -> Path:
    """Generate an ed25519 key pair without passphrase; return the private key's path."""
    key = Path(directory) / name
    run("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", name, "-f", key)
    return key


def live_pids(pids: list[int]) -> list[int]:
    """The pids still running: zombies count as gone, PID 1 here may never reap them."""
    alive = []
    for pid in pids:
        with contextlib.suppress(OSError):
            if Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z":
                alive.append(pid)
    return alive


def kill_pids(pids: list[int], grace: float = 3.0) -> None:
    """SIGTERM the given processes, then SIGKILL those still running after the grace time."""
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, 15)
    deadline = time.monotonic() + grace
    while live_pids(pids) and time.monotonic() < deadline:
        time.sleep(0.05)
    for pid in live_pids(pids):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, 9)


def pids_of_uid(uid: int) -> list[int]:
    """The processes running with the given real uid."""
    pids = []
    for entry in Path("/proc").iterdir():
        with contextlib.suppress(OSError, ValueError):
            if entry.name.isdigit() and entry.stat().st_uid == uid:
                pids.append(int(entry.name))
    return pids


@dataclass
class LocalUser:
    """A throw-away local user that can log in by key only; deleted with its home on exit."""

    name: str
    home: Path
    uid: int
    gid: int

    @classmethod
    @contextlib.contextmanager
    def create(cls, prefix: str = "ms-deploy", sandbox: bool = False) -> Iterator[LocalUser]:
        """Create the user (unique name), yield it, then delete it and its home.

        sandbox: let it start the model sandbox as an installer would (`modelserve sandbox
        setup --for-user`), as a serving account that runs the hooks must; removed on exit.
        """
        name = f"{prefix}-{secrets.token_hex(3)}"
        run("useradd", "--create-home", "--shell", "/bin/bash", name)
        try:
            # useradd's locked password ("!") makes sshd refuse key logins too; "*" does not.
            run("usermod", "-p", "*", name)
            if sandbox:
                run(sys.executable, "-m", "modelserve", "sandbox", "setup", "--for-user", name)
            entry = pwd.getpwnam(name)
            yield cls(name, Path(entry.pw_dir), entry.pw_uid, entry.pw_gid)
        finally:
            cls._delete(name)

    @staticmethod
    def _delete(name: str) -> None:
        """Delete the user, its home and sandbox rule; its processes would make userdel refuse."""
        run(sys.executable, "-m", "modelserve", "sandbox", "remove", "--for-user", name,
            check=False)
        with contextlib.suppress(KeyError):
            entry = pwd.getpwnam(name)
            kill_pids(pids_of_uid(entry.pw_uid))
            # `delivery authorize` run as root makes ~/.ssh immutable: userdel could not delete it.
            run("chattr", "-i", Path(entry.pw_dir) / ".ssh", check=False)
        run("userdel", "-r", name, check=False)

    def run(self, *command: str | Path, check: bool = True) -> subprocess.CompletedProcess[str]:
        """Run a command as this user (so files it creates belong to it)."""
        return run("runuser", "-u", self.name, "--", *command, check=check)

    def authorize(self, public_key: Path) -> None:
        """Append a public key to ~/.ssh/authorized_keys, with the modes StrictModes wants."""
        ssh_dir = self.home / ".ssh"
        ssh_dir.mkdir(mode=0o700, exist_ok=True)
        authorized = ssh_dir / "authorized_keys"
        with authorized.open("a") as keys:
            keys.write(Path(public_key).read_text())
        authorized.chmod(0o600)
        for path in (ssh_dir, authorized):
            os.chown(path, self.uid, self.gid)


@dataclass
class SshClient:
    """An identity and the one host key it trusts; never reads or writes ~/.ssh."""

    key: Path
    known_hosts: Path

    def command(self) -> list[str]:
        """The ssh command line, up to (not including) the destination."""
        return [
            "ssh", "-F", "none",  # no ~/.ssh/config, and ssh then does not create ~/.ssh
            "-o", "StrictHostKeyChecking=yes",
            "-o", f"UserKnownHostsFile={self.known_hosts}",
            "-o", "GlobalKnownHostsFile=/dev/null",
            "-o", "IdentitiesOnly=yes",
            "-o", "BatchMode=yes",
            "-o", "ConnectTimeout=5",
            # A host torn down under an open session must not leave the client hanging.
            "-o", "ServerAliveInterval=5",
            "-o", "ServerAliveCountMax=2",
            "-i", str(self.key),
        ]

    def ssh(self, destination: str, *remote: str,
            timeout: float = 30) -> subprocess.CompletedProcess[str]:
        """Run a remote command over ssh; the result is returned whatever its exit status."""
        return subprocess.run([*self.command(), destination, *remote], capture_output=True,
                              text=True, timeout=timeout, check=False)

    def git_env(self, base: dict[str, str] | None = None) -> dict[str, str]:
        """An environment in which git talks SSH with this identity only."""
        env = dict(os.environ if base is None else base)
        env["GIT_SSH_COMMAND"] = shlex.join(self.command())  # git hands it to a shell
        env["GIT_TERMINAL_PROMPT"] = "0"
        return env

    def git(self, *args: str, cwd: Path | None = None,
            timeout: float = 60) -> subprocess.CompletedProcess[str]:
        """Run git with git_env(); the result is returned whatever its exit status."""
        return subprocess.run(["git", *args], cwd=cwd, env=self.git_env(), capture_output=True,
                              text=True, timeout=timeout, check=False)


class NetnsHost:
    """A network namespace behind a veth pair, running its own sshd on port 22.

    The root namespace gets 10.231.X.1/24, the namespace 10.231.X.2 (X random per host).
    """

    def __init__(self, root_keys: Path | None = None, users_run_python: bool = False) -> None:
        # root_keys: let root log in with the keys of this file only (the deploy account of
        # tests: our interpreter lives under /root, which other users cannot enter here).
        self.root_keys = root_keys
        # users_run_python: sshd's sessions see a /root that holds only our interpreter's
        # folder, enterable by anyone (a mount namespace of sshd's own: nothing changes here).
        self.users_run_python = users_run_python
        token = secrets.token_hex(3)
        self.name = f"ms-{token}"
        self.host_link = f"msh-{token}"  # interface names are limited to 15 characters
        self.netns_link = f"msn-{token}"
        self.host_address = ""
        self.address = ""
        self.workdir = Path()
        self.known_hosts = Path()
        self.sshd: subprocess.Popen | None = None
        self._stack = contextlib.ExitStack()

    def __enter__(self) -> NetnsHost:
        """Create the namespace and its link, start sshd; undo what was done if any step fails."""
        with self._stack as stack:
            self.workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="ms-")))
            self._create_namespace()
            stack.callback(self._delete_namespace)
            self._create_link()
            stack.callback(run, "ip", "link", "del", self.host_link, check=False)
            self._start_sshd()
            stack.callback(self._stop_sshd)
            self._stack = stack.pop_all()
        return self

    def __exit__(self, *exc_info: object) -> None:
        """Stop sshd and every process in the namespace, delete the link and the namespace."""
        self._stack.close()

    def client(self, key: Path) -> SshClient:
        """An SSH client using this private key and trusting only this host's key."""
        return SshClient(Path(key), self.known_hosts)

    def exec(self, *command: str | Path, check: bool = True) -> subprocess.CompletedProcess[str]:
        """Run a command inside the namespace."""
        return run("ip", "netns", "exec", self.name, *command, check=check)

    def pids(self) -> list[int]:
        """The processes living in the namespace."""
        listed = run("ip", "netns", "pids", self.name, check=False).stdout
        return [int(pid) for pid in listed.split()]

    def _create_namespace(self) -> None:
        """Add the namespace with its loopback up."""
        run("ip", "netns", "add", self.name)
        self.exec("ip", "link", "set", "lo", "up")

    def _delete_namespace(self) -> None:
        """Kill what still runs inside (if sshd never got started), then delete it."""
        kill_pids(self.pids())
        run("ip", "netns", "del", self.name, check=False)

    def _create_link(self) -> None:
        """Add the veth pair, move one end inside and address both ends on a free /24."""
        run("ip", "link", "add", self.host_link, "type", "veth", "peer", "name", self.netns_link)
        run("ip", "link", "set", self.netns_link, "netns", self.name)
        SUBNET_LOCK.parent.mkdir(parents=True, exist_ok=True)
        with SUBNET_LOCK.open("w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            subnet = free_subnet()
            self.host_address, self.address = f"{subnet}.1", f"{subnet}.2"
            run("ip", "addr", "add", f"{self.host_address}/24", "dev", self.host_link)
        self.exec("ip", "addr", "add", f"{self.address}/24", "dev", self.netns_link)
        self.exec("ip", "link", "set", self.netns_link, "up")
        run("ip", "link", "set", self.host_link, "up")

    def _start_sshd(self) -> None:
        """Start sshd in the foreground inside the namespace and wait until it answers."""
        host_key = generate_key(self.workdir, "ssh_host_ed25519_key")
        public = host_key.with_suffix(".pub").read_text().split()
        self.known_hosts = self.workdir / "known_hosts"
        self.known_hosts.write_text(f"{self.address} {public[0]} {public[1]}\n")
        config = self.workdir / "sshd_config"
        config.write_text(sshd_config(self.address, host_key, self.workdir / "sshd.pid",
                                      self.root_keys))
        # sshd refuses to start without its privilege separation directory.
        PRIVSEP_DIR.mkdir(mode=0o755, exist_ok=True)
        log = (self.workdir / "sshd.log").open("w")
        with log:
            self.sshd = subprocess.Popen(
                ["ip", "netns", "exec", self.name, *self._python_for_users(),
                 SSHD, "-D", "-e", "-f", str(config)],
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)
        self._wait_for_sshd()

    def _python_for_users(self) -> list[str]:
        """A prefix that runs sshd where other users can start our interpreter, or nothing."""
        if not self.users_run_python:
            return []
        return python_for_users(self.workdir / "root")

    def _wait_for_sshd(self) -> None:
        """Return once the SSH banner arrives on ADDRESS:22; fail early if sshd died."""
        deadline = time.monotonic() + STARTUP_SECONDS
        while time.monotonic() < deadline:
            if self.sshd is not None and self.sshd.poll() is not None:
                raise RuntimeError(f"sshd exited {self.sshd.returncode}: {self.log()}")
            if ssh_banner(self.address):
                return
            time.sleep(0.05)
        raise RuntimeError(f"sshd did not answer on {self.address}:22: {self.log()}")

    def _stop_sshd(self) -> None:
        """Stop the listening sshd (our child), then its sessions, while the link still exists.

        Sessions killed after the link is gone cannot tell their clients: those hang forever.
        """
        if self.sshd is not None:
            self.sshd.terminate()
            try:
                self.sshd.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.sshd.kill()
                self.sshd.wait()
        # Session processes call setsid(): they are neither our children nor in our group.
        kill_pids(self.pids())

    def log(self) -> str:
        """What sshd has written to its log so far."""
        path = self.workdir / "sshd.log"
        return path.read_text() if path.exists() else ""


def sshd_config(address: str, host_key: Path, pid_file: Path,
                root_keys: Path | None = None) -> str:
    """An sshd configuration for key-only logins on ADDRESS:22."""
    if root_keys is not None:
        # The keys file sits in a temporary directory, which StrictModes would refuse.
        return "\n".join([*_common_sshd_lines(address, host_key, pid_file),
                          "PermitRootLogin prohibit-password", "StrictModes no",
                          f"AuthorizedKeysFile {root_keys}", ""])
    return "\n".join([*_common_sshd_lines(address, host_key, pid_file),
                      "PermitRootLogin no", "StrictModes yes",
                      "AuthorizedKeysFile .ssh/authorized_keys", ""])


def _common_sshd_lines(address: str, host_key: Path, pid_file: Path) -> list[str]:
    """The settings every test sshd shares."""
    return [
        f"ListenAddress {address}",
        "Port 22",
        f"HostKey {host_key}",
        f"PidFile {pid_file}",
        "PasswordAuthentication no",
        "KbdInteractiveAuthentication no",
        "PubkeyAuthentication yes",
        "UsePAM no",
        f"Subsystem sftp {SFTP_SERVER}",  # Ansible falls back with warnings without it
    ]


def python_for_users(stage: Path) -> list[str]:
    """A command prefix under which other users can run our interpreter (if it is in /root).

    The command runs in a mount namespace of its own whose /root holds only the interpreter's
    folder, enterable by anyone; nothing changes outside it. stage: a new, empty folder.
    """
    interpreter = Path(os.path.realpath(sys.executable))
    if not interpreter.is_relative_to("/root"):
        return []
    stage.mkdir()
    script = ('set -e; mount --bind /root "$1"; '
              'mount -t tmpfs -o mode=0755,size=1m modelserve-root /root; '
              'mkdir "/root/$2"; mount --bind "$1/$2" "/root/$2"; umount -l "$1"; '
              'shift 2; exec "$@"')
    return ["unshare", "--mount", "--propagation", "private", "--", "sh", "-c", script,
            "sh", str(stage), interpreter.relative_to("/root").parts[0]]


def free_subnet() -> str:
    """A 10.231.X prefix no interface of the root namespace uses (call under SUBNET_LOCK)."""
    used = run("ip", "-o", "-4", "addr", "show").stdout
    candidates = list(range(1, 255))
    random.shuffle(candidates)
    for third in candidates:
        if f" {SUBNET_PREFIX}.{third}." not in used:
            return f"{SUBNET_PREFIX}.{third}"
    raise RuntimeError(f"no free {SUBNET_PREFIX}.X.0/24 subnet left")


def ssh_banner(address: str, port: int = 22) -> bool:
    """Tell whether an SSH server greets on ADDRESS:PORT."""
    try:
        with socket.create_connection((address, port), timeout=1) as conn:
            return conn.recv(64).startswith(b"SSH-")
    except OSError:
        return False
