"""The C openat2 (csrc/fastpath_open.c) against its ctypes twin
(cycle/static_open.py): the same descriptor-or-errno for every path, on a
tree with the escapes static files must refuse."""

from __future__ import annotations

import os
import random

import pytest

from uwsgigw.cycle import static_open

pytestmark = pytest.mark.skipif(static_open._c_openat2 is None or not static_open.OPENAT2.ok,
                                reason="needs the C extension and a kernel with openat2")

PARTS = [b"a.txt", b"sub", b"..", b".", b"", b"link_out", b"link_in", b"loop", b"abs_in",
         b"missing", b"sub/b.txt", b"/etc/passwd", b"fifo", b"\xff", b"a.txt/x"]


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    root = tmp_path_factory.mktemp("root")
    (root / "a.txt").write_bytes(b"a")
    (root / "sub").mkdir()
    (root / "sub" / "b.txt").write_bytes(b"b")
    (root.parent / "outside.txt").write_bytes(b"out")
    os.symlink("../outside.txt", root / "link_out")
    os.symlink("a.txt", root / "link_in")
    os.symlink("loop", root / "loop")
    os.symlink(str(root / "a.txt"), root / "abs_in")
    os.mkfifo(root / "fifo")
    fd = os.open(root, os.O_PATH | os.O_DIRECTORY)
    yield fd
    os.close(fd)


def _outcome(fd: int):
    if fd < 0:
        return fd
    try:
        return os.fstat(fd).st_ino
    finally:
        os.close(fd)


def test_c_and_ctypes_agree(tree, monkeypatch):
    rng = random.Random(15)
    paths = [b"/".join(rng.choice(PARTS) for _ in range(rng.randint(1, 4))) for _ in range(400)]
    paths += PARTS
    flags = os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY
    opener = static_open.OPENAT2
    with_c = [_outcome(opener.raw(tree, p or b".", flags)) for p in paths]
    monkeypatch.setattr(static_open, "_c_openat2", None)
    with_ctypes = [_outcome(opener.raw(tree, p or b".", flags)) for p in paths]
    assert with_c == with_ctypes
    assert any(r >= 0 for r in with_c) and -18 in with_c  # some opened, some EXDEV (escapes)
