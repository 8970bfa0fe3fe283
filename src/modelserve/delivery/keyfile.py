"""An authorized_keys that its account cannot rewrite: root's file in root's immutable folder.

sshd's StrictModes accepts keys owned by root or by the account, in folders nobody else can
write. Root-owned (0644 in 0755) stops a write as the account; but the account owns its
home, so it could still rename ~/.ssh away and make its own: the folder is also made
immutable (FS_IMMUTABLE_FL, what `chattr +i` sets), which forbids renaming it. Everything is
done through a descriptor of the folder opened without following links, since the account
could plant a link to make root write elsewhere.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import secrets
import stat
import struct
from collections.abc import Callable
from pathlib import Path

KEY_FILES = ("authorized_keys", "authorized_keys2")  # sshd's default AuthorizedKeysFile
_LONG = struct.calcsize("l")
FS_IOC_GETFLAGS = (2 << 30) | (_LONG << 16) | (ord("f") << 8) | 1
FS_IOC_SETFLAGS = (1 << 30) | (_LONG << 16) | (ord("f") << 8) | 2
FS_IMMUTABLE_FL = 0x10

Merge = Callable[[list[str]], list[str]]


def account_of(ssh_dir: Path) -> int | None:
    """The uid owning the account's home (ssh_dir's parent), or None if it does not exist."""
    try:
        return os.lstat(ssh_dir.parent).st_uid
    except FileNotFoundError:
        return None


def write_root_owned(ssh_dir: Path, merge: Merge) -> tuple[bool, str | None]:
    """Rewrite ssh_dir/authorized_keys as root's; return (changed, a warning or None)."""
    with contextlib.suppress(FileExistsError):
        os.mkdir(ssh_dir, 0o755)
    try:
        fd = os.open(ssh_dir, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
    except OSError as error:  # a link (ELOOP) or a file (ENOTDIR) where the folder should be
        raise OSError(error.errno, f"{ssh_dir} is not a folder", str(ssh_dir)) from None
    try:
        _set_immutable(fd, False)  # an earlier run set it; nothing can be written inside
        changed = _own(fd, 0o755)
        existing = _read_lines(fd, KEY_FILES[0])
        wanted = merge(existing)
        if wanted != existing:
            _replace(fd, KEY_FILES[0], "\n".join(wanted) + "\n")
            changed = True
        for name in KEY_FILES:
            changed |= _own_entry(fd, name)
    finally:
        immutable = _set_immutable(fd, True)  # also when the merge refused: as it was
        os.close(fd)
    if immutable:
        return changed, None
    return changed, (f"warning: {ssh_dir} cannot be made immutable on this file system: its "
                     f"account can still rename it away and bring its own keys")


def _own(fd: int, mode: int) -> bool:
    """Make an open file or folder root's with this mode; return whether it changed."""
    before = os.fstat(fd)
    os.fchown(fd, 0, 0)
    os.fchmod(fd, mode)
    return (before.st_uid, before.st_gid, stat.S_IMODE(before.st_mode)) != (0, 0, mode)


def _own_entry(dir_fd: int, name: str) -> bool:
    """Make a key file in the folder root's 0644 (a link there is removed); whether it changed."""
    try:
        info = os.lstat(name, dir_fd=dir_fd)
    except FileNotFoundError:
        return False
    if not stat.S_ISREG(info.st_mode):
        os.unlink(name, dir_fd=dir_fd)  # a link or a folder where sshd reads keys: not ours
        return True
    fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW, dir_fd=dir_fd)
    try:
        return _own(fd, 0o644)
    finally:
        os.close(fd)


def _read_lines(dir_fd: int, name: str) -> list[str]:
    """The lines of a regular file in the folder, never through a link; [] if missing."""
    try:
        fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK, dir_fd=dir_fd)
    except FileNotFoundError:
        return []
    except OSError:  # a link (ELOOP): whatever it points at is not our keys
        return []
    with os.fdopen(fd, "rb") as stream:
        if not stat.S_ISREG(os.fstat(stream.fileno()).st_mode):
            return []
        return stream.read(1 << 20).decode(errors="replace").splitlines()


def _replace(dir_fd: int, name: str, text: str) -> None:
    """Write a root-owned 0644 file next to name, flush it, and rename it over name."""
    temporary = f".{name}.{secrets.token_hex(4)}"
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644,
                 dir_fd=dir_fd)
    try:
        with os.fdopen(fd, "wb") as stream:
            stream.write(text.encode())
            os.fchown(stream.fileno(), 0, 0)
            os.fchmod(stream.fileno(), 0o644)
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(temporary, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary, dir_fd=dir_fd)
        raise
    os.fsync(dir_fd)


def _set_immutable(fd: int, on: bool) -> bool:
    """Set or clear the immutable flag of an open folder; False where it is not supported."""
    try:
        flags = struct.unpack("l", fcntl.ioctl(fd, FS_IOC_GETFLAGS, struct.pack("l", 0)))[0]
        wanted = flags | FS_IMMUTABLE_FL if on else flags & ~FS_IMMUTABLE_FL
        if wanted != flags:
            fcntl.ioctl(fd, FS_IOC_SETFLAGS, struct.pack("l", wanted))
    except OSError:  # tmpfs, overlayfs without support, or no CAP_LINUX_IMMUTABLE
        return False
    return True
