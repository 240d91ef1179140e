"""Children's output into the server log, line by line, read without blocking.

Each child the master starts (an attached daemon) writes stdout and stderr
to one pipe; the master's select waits on the read ends (services.py
``fds``) and :meth:`OutPipes.read` logs each complete line as
``[LABEL] text`` (with log-json: a "daemon" event whose "output" is the
text). An unfinished line waits for its end, or for the pipe to close. The
read ends survive the master's re-exec: :meth:`hand_over` makes them
inheritable and describes them, :meth:`adopt` takes them back.
"""

from __future__ import annotations

import os

from ..observe.reqlog import event

READ_MAX = 1 << 18  # bytes read from one pipe per loop turn, so one child cannot starve
LINE_MAX = 8192  # a longer line is logged in pieces


class OutPipes:
    def __init__(self) -> None:
        self.pipes: dict[int, list] = {}  # read fd -> [label, pending bytes, daemon number]

    def open(self, label: str, number: int) -> tuple[int, int]:
        """A new pipe: (read end, kept here, non-blocking; write end, for the
        child, to be closed by the caller once the child has it)."""
        read_fd, write_fd = os.pipe2(os.O_CLOEXEC)
        os.set_blocking(read_fd, False)
        self.pipes[read_fd] = [label, b"", number]
        return read_fd, write_fd

    def discard(self, read_fd: int) -> None:
        del self.pipes[read_fd]
        os.close(read_fd)

    def fds(self) -> list[int]:
        return list(self.pipes)

    def read(self, fds: list[int]) -> None:
        """Log what the pipes among ``fds`` hold (others are ignored)."""
        for fd in fds:
            pipe = self.pipes.get(fd)
            if pipe is None:
                continue
            got, eof = 0, False
            while got < READ_MAX:
                try:
                    data = os.read(fd, 65536)
                except BlockingIOError:
                    break
                except OSError:
                    data = b""
                if not data:
                    eof = True
                    break
                got += len(data)
                pipe[1] = _log_lines(pipe, pipe[1] + data)
            if eof:
                if pipe[1]:
                    _log_lines(pipe, pipe[1] + b"\n")
                self.discard(fd)

    def hand_over(self) -> list:
        """For the next image (JSON); the read ends stay open across exec."""
        for fd in self.pipes:
            os.set_inheritable(fd, True)
        return [[fd, label, pending.decode("latin-1"), number]
                for fd, (label, pending, number) in self.pipes.items()]

    def adopt(self, state: list) -> None:
        for fd, label, pending, number in state:
            try:
                os.set_inheritable(fd, False)
                os.set_blocking(fd, False)
            except OSError:
                continue  # not inherited: that output is lost, the child is not
            self.pipes[fd] = [label, pending.encode("latin-1"), number]


def _log_lines(pipe: list, data: bytes) -> bytes:
    """Log each complete line of ``data``; return the incomplete rest."""
    *lines, rest = data.split(b"\n")
    if len(rest) > LINE_MAX:
        lines.append(rest)
        rest = b""
    for line in lines:
        for start in range(0, max(len(line), 1), LINE_MAX):
            text = line[start:start + LINE_MAX].rstrip(b"\r").decode("utf-8", "replace")
            event("daemon", "[%s] %s" % (pipe[0], text), phase="output", daemon=pipe[2],
                  output=text)
    return rest
