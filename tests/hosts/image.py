"""The test hosts' image: a fresh Debian server (systemd, sshd, cloud-init never run yet).

Built from the debootstrapped base image with chroot + apt-get on this machine (which reaches
the Debian mirror, as debootstrap does), imported into the engine, and tagged with a hash of
everything it is made from: a changed package list or file makes a new image, an unchanged one
is reused. It carries every OS package our cloud-init templates and Ansible roles install, so
that `apt: state=present` is a no-op and a converge does not depend on the mirror's speed.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from containers.engine import (
    Engine,
    docker_binary,
    drop_apt_caches,
    import_rootfs,
    remove_other_tags,
    run,
    short_hash,
)

HOST_PACKAGES = (
    "systemd", "systemd-sysv", "dbus", "openssh-server", "openssh-client", "sudo", "python3",
    "python3-venv", "python3-apt", "git", "rsync", "locales", "cloud-init", "ca-certificates",
    "iproute2", "nftables", "rabbitmq-server", "curl",
)
# Files written into the image (path: content).
HOST_FILES = {
    # Each host makes its own SSH host keys on first start (none are baked into the image);
    # sshd -t, which Debian's unit runs first, would fail without them.
    "etc/systemd/system/ssh.service.d/host-keys.conf": (
        "[Service]\nExecStartPre=\nExecStartPre=/usr/bin/ssh-keygen -A\n"
        "ExecStartPre=/usr/sbin/sshd -t\n"),
    # cloud-init sets LANG=en_US.UTF-8 on Debian, and Debian's locale-gen makes only what
    # this file lists: the cloud images have it generated, so ours must too.
    "etc/locale.gen": "en_US.UTF-8 UTF-8\n",
    # The engine gives each container its address: cloud-init must not rewrite the network.
    "etc/cloud/cloud.cfg.d/05_test_host_network.cfg": "network: {config: disabled}\n",
}
# Units that a fresh server would not run until a role or user-data asks for them: Debian's
# broker would only hold memory on every test host.
DISABLED_UNITS = ("rabbitmq-server.service",)
IMAGE_CHANGES = (
    'CMD ["/sbin/init"]',
    "ENV container=docker",
)
SFTP = "Subsystem sftp /usr/lib/openssh/sftp-server"
HOST_RECIPE = 3  # raise when the steps below change in a way the hash does not see


def host_image_tag(base: str) -> str:
    """The host image's tag, named after its base and everything added to it."""
    key = short_hash(base, HOST_PACKAGES, HOST_FILES, DISABLED_UNITS, IMAGE_CHANGES, HOST_RECIPE)
    return f"modelserve-test-host:{key}"


def ensure_host_image(engine: Engine, base: str, work: Path) -> str:
    """Build the host image from the base image unless the engine has it; return its tag."""
    tag = host_image_tag(base)
    if engine.has_image(tag):
        return tag
    rootfs = work / "host-rootfs"
    shutil.rmtree(rootfs, ignore_errors=True)
    try:
        export_image(engine, base, rootfs)
        install_packages(rootfs, HOST_PACKAGES)
        make_fresh(rootfs)
        import_rootfs(engine, rootfs, tag, IMAGE_CHANGES)
    finally:
        shutil.rmtree(rootfs, ignore_errors=True)
    remove_other_tags(engine, (tag,))
    return tag


def export_image(engine: Engine, image: str, rootfs: Path) -> None:
    """Unpack an image's file system into a directory (`docker export | tar -x`)."""
    rootfs.mkdir(parents=True)
    container = engine.docker("create", image, "/bin/true").stdout.strip()
    try:
        export = subprocess.Popen([docker_binary(), "export", container], env=engine.env(),
                                  stdout=subprocess.PIPE)
        try:
            run(["tar", "-C", str(rootfs), "--numeric-owner", "-x"], stdin=export.stdout)
        finally:
            export.stdout.close()
            if export.wait(60) != 0:
                raise AssertionError(f"docker export {image} exited {export.returncode}")
    finally:
        engine.docker("rm", container)


def install_packages(rootfs: Path, packages: tuple[str, ...]) -> None:
    """apt-get install into a root file system, starting no service."""
    policy = rootfs / "usr" / "sbin" / "policy-rc.d"
    policy.write_text("#!/bin/sh\n# no service starts inside the build\nexit 101\n")
    policy.chmod(0o755)
    # Docker's export leaves the resolver file empty (the engine mounts one at run time).
    resolv = rootfs / "etc" / "resolv.conf"
    resolv.unlink(missing_ok=True)
    shutil.copy2("/etc/resolv.conf", resolv)
    apt = ["chroot", str(rootfs), "env", "DEBIAN_FRONTEND=noninteractive", "apt-get", "-qq"]
    try:
        run([*apt, "update"])
        run([*apt, "install", "-y", "--no-install-recommends", *packages], timeout=1200)
    finally:
        policy.unlink()
        resolv.write_text("")
    drop_apt_caches(rootfs)


def make_fresh(rootfs: Path) -> None:
    """Write our files and remove what must differ per host: a server that never booted."""
    for relative, content in HOST_FILES.items():
        path = rootfs / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(content)
    add_sftp(rootfs / "etc" / "ssh" / "sshd_config")
    for key in (rootfs / "etc" / "ssh").glob("ssh_host_*"):
        key.unlink()
    # systemd makes a machine id on first boot when the file is empty.
    (rootfs / "etc" / "machine-id").write_text("")
    (rootfs / "var" / "lib" / "dbus" / "machine-id").unlink(missing_ok=True)
    run(["chroot", str(rootfs), "locale-gen"])
    run(["chroot", str(rootfs), "systemctl", "disable", *DISABLED_UNITS])
    # As `cloud-init clean` leaves it: cloud-init runs at the first boot of each host.
    shutil.rmtree(rootfs / "var" / "lib" / "cloud", ignore_errors=True)
    (rootfs / "var" / "lib" / "rabbitmq" / ".erlang.cookie").unlink(missing_ok=True)


def add_sftp(config: Path) -> None:
    """Make sure sshd offers SFTP (Ansible copies modules with it, else falls back and warns)."""
    text = config.read_text()
    # Debian's config has the line; sshd refuses a second one, so add it only when missing.
    if not any(line.split()[:2] == ["Subsystem", "sftp"] for line in text.splitlines()
               if line.strip()):
        config.write_text(text + SFTP + "\n")
