"""Open a file beneath a directory, once, with no check-then-open race.

``open_beneath(dirfd, rel, flags)`` resolves ``rel`` (bytes, relative; ``..``,
symlinks and ``//`` allowed) strictly inside the directory ``dirfd`` refers to
and returns a descriptor opened with ``flags``, or raises OSError:

- EXDEV: the path (a ``..``, a symlink, an absolute symlink even one that points
  back inside) would leave the directory;
- ELOOP: too many symlinks, or a "magic" /proc link;
- ENOENT, ENOTDIR, EACCES, ...: as open(2).

Where the kernel has openat2(2) (Linux 5.6+) it does the whole job with
``RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS`` (syscall 437 on x86_64 and aarch64,
through ctypes). Elsewhere (ENOSYS, a seccomp filter saying EPERM, another
architecture) a walk does the same in user space: each component opened with
``O_NOFOLLOW`` relative to its parent's descriptor, symlinks read with
readlinkat and resolved by the walk itself, ``..`` popping the stack of
descriptors and refused at the top. Both check the descriptors they hold, never
a path string, so swapping a component for a symlink mid-way cannot lead out.
"""

from __future__ import annotations

import ctypes
import errno
import os
import platform
import stat
import struct

RESOLVE_NO_MAGICLINKS = 0x02
RESOLVE_BENEATH = 0x08
_SYS_OPENAT2 = {"x86_64": 437, "aarch64": 437, "arm64": 437}.get(platform.machine())
MAX_LINKS = 40
_O_PATH = getattr(os, "O_PATH", 0)


class _Openat2:
    """The openat2(2) syscall through libc's syscall(); ``ok`` False when unusable."""

    def __init__(self) -> None:
        self.ok = False
        if _SYS_OPENAT2 is None or not hasattr(os, "O_PATH"):
            return
        try:
            self._syscall = ctypes.CDLL(None, use_errno=True).syscall
        except (OSError, AttributeError):
            return
        self._hows: dict[int, bytes] = {}
        self._syscall.restype = ctypes.c_long
        self._syscall.argtypes = [ctypes.c_long, ctypes.c_int, ctypes.c_char_p,
                                  ctypes.c_char_p, ctypes.c_size_t]
        self.ok = True

    def raw(self, dirfd: int, path: bytes, flags: int) -> int:
        """The descriptor, or -errno (no exception: cheap for an expected miss)."""
        how = self._hows.get(flags)
        if how is None:  # struct open_how {u64 flags, mode, resolve}
            how = self._hows[flags] = struct.pack("QQQ", flags | os.O_CLOEXEC, 0,
                                                  RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS)
        fd = self._syscall(_SYS_OPENAT2, dirfd, path, how, 24)
        return int(fd) if fd >= 0 else -ctypes.get_errno()

    def __call__(self, dirfd: int, path: bytes, flags: int) -> int:
        fd = self.raw(dirfd, path, flags)
        if fd < 0:
            raise OSError(-fd, os.strerror(-fd), os.fsdecode(path))
        return fd

    def probe(self, dirfd: int) -> bool:
        """Does the kernel (and any seccomp filter) let us use it? Turns
        ``ok`` off for good when not."""
        if not self.ok:
            return False
        try:
            os.close(self(dirfd, b".", _O_PATH))
        except OSError as exc:
            if exc.errno in (errno.ENOSYS, errno.EPERM, errno.EINVAL, errno.E2BIG):
                self.ok = False
        return self.ok


OPENAT2 = _Openat2()


def _components(path: bytes) -> list[bytes]:
    return [p for p in path.split(b"/") if p and p != b"."]


def walk_beneath(dirfd: int, rel: bytes, flags: int) -> int:
    """The user-space twin of openat2(RESOLVE_BENEATH): see the module docstring."""
    if rel.startswith(b"/"):
        raise OSError(errno.EXDEV, os.strerror(errno.EXDEV), os.fsdecode(rel))
    stack: list[int] = []  # descriptors of the directories below dirfd we are in
    todo = _components(rel)[::-1]  # next component last
    links = 0
    trailing_slash = rel.endswith(b"/")
    try:
        while True:
            parent = stack[-1] if stack else dirfd
            if not todo:  # rel was "" or "." or walked back up to a directory
                return os.open(".", flags | os.O_CLOEXEC, dir_fd=parent)
            comp = todo.pop()
            if comp == b"..":
                if not stack:
                    raise OSError(errno.EXDEV, os.strerror(errno.EXDEV), os.fsdecode(rel))
                os.close(stack.pop())
                continue
            last = not todo
            if last and not trailing_slash:
                try:
                    return os.open(comp, flags | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=parent)
                except OSError as exc:
                    if exc.errno != errno.ELOOP:
                        raise
                    # a symlink (O_NOFOLLOW): resolve it below
                fd = os.open(comp, _O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=parent)
            else:
                fd = os.open(comp, _O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=parent)
            mode = os.fstat(fd).st_mode
            if stat.S_ISLNK(mode):
                os.close(fd)
                links += 1
                if links > MAX_LINKS:
                    raise OSError(errno.ELOOP, os.strerror(errno.ELOOP), os.fsdecode(rel))
                target = os.readlink(comp, dir_fd=parent)
                if target.startswith(b"/"):
                    raise OSError(errno.EXDEV, os.strerror(errno.EXDEV), os.fsdecode(rel))
                todo.extend(_components(target)[::-1])
                if target.endswith(b"/") and not todo:
                    trailing_slash = True
                continue
            if not stat.S_ISDIR(mode):
                os.close(fd)
                raise OSError(errno.ENOTDIR, os.strerror(errno.ENOTDIR), os.fsdecode(rel))
            stack.append(fd)
            if last:
                todo = []
                trailing_slash = False
    finally:
        for fd in stack:
            os.close(fd)


def try_beneath(dirfd: int, rel: bytes, flags: int) -> int:
    """``open_beneath`` for a file that is often missing: -1 instead of any OSError."""
    if OPENAT2.ok and b"\0" not in rel:
        fd = OPENAT2.raw(dirfd, rel or b".", flags)
        if fd >= 0 or fd not in (-errno.ENOSYS, -errno.EPERM):
            return fd if fd >= 0 else -1
    try:
        return open_beneath(dirfd, rel, flags)
    except OSError:
        return -1


def open_beneath(dirfd: int, rel: bytes, flags: int) -> int:
    """Open ``rel`` beneath ``dirfd`` with ``flags``; see the module docstring."""
    if b"\0" in rel:
        raise OSError(errno.ENOENT, "NUL in path")
    if OPENAT2.ok:
        try:
            return OPENAT2(dirfd, rel or b".", flags)
        except OSError as exc:
            if exc.errno not in (errno.ENOSYS, errno.EPERM) or OPENAT2.probe(dirfd):
                raise
    return walk_beneath(dirfd, rel, flags)
