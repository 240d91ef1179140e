"""One worker process as the master tracks it: where its scoreboard slot is,
its deadlines, how it ended, and how it crosses a reload (handover.py)."""

from __future__ import annotations

import os
import signal
from dataclasses import dataclass

from ..observe.scoreboard import ACCEPTING, STOPPING, Scoreboard
from .handover import HandedWorker
from .harakiri import Dump


@dataclass
class WorkerProc:
    pid: int
    id: int
    index: int  # slot in ``board``
    generation: int
    board: Scoreboard
    spawned: float  # monotonic
    booted: bool = False  # reached ACCEPTING
    retiring: str = ""  # why it was asked to stop
    kill_at: float = 0.0  # monotonic deadline for SIGKILL while retiring
    mercy: float = 0.0
    killed_for: str = ""
    dump: Dump | None = None  # harakiri: its tracebacks were asked for

    @property
    def slot(self):
        return self.board.workers[self.index]

    def cores(self):
        return self.board.cores_of(self.index)

    def name(self) -> str:
        return "worker %d (pid %d)" % (self.id, self.pid)

    def handed(self, board_key: str, now: float) -> HandedWorker:
        """For the next image; a retiring worker keeps what is left of its mercy.
        One only marked as leaving (chain.py: its replacement is starting, it was
        not told to stop) crosses as a serving worker of its generation."""
        return HandedWorker(self.pid, self.id, self.index, self.generation, board_key,
                            self.retiring if self.kill_at else "",
                            max(0.0, self.kill_at - now) if self.kill_at else 0.0)

    @classmethod
    def adopted(cls, handed: HandedWorker, board: Scoreboard, now: float) -> WorkerProc:
        """A worker the previous image handed over, on its (attached) board."""
        worker = cls(handed.pid, handed.id, handed.index, handed.generation, board, now,
                     booted=board.workers[handed.index].state in (ACCEPTING, STOPPING))
        if handed.retiring:  # already told to stop: keep its deadline
            worker.retiring, worker.mercy = handed.retiring, handed.mercy_left
            worker.kill_at = now + handed.mercy_left
        return worker


def describe_status(status: int) -> str:
    """A ``waitpid`` status in words."""
    if os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        try:
            return "killed by signal %d (%s)" % (sig, signal.Signals(sig).name)
        except ValueError:
            return "killed by signal %d" % sig
    return "exit code %d" % os.WEXITSTATUS(status)
