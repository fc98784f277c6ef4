"""Clean interrupts: the first SIGINT/SIGTERM asks the loop to checkpoint and stop.

The loop polls :attr:`StopRequest.signum` after each optimizer step, so a stop always lands
on a consistent state. A second Ctrl-C interrupts at once. Outside the loop (building the
task, the final evaluation, the artifacts) :func:`terminate_raises` turns SIGTERM into
:class:`Terminated`, so the session can still end the run KILLED instead of dying with it.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from types import FrameType

from rnnlab.errors import RnnlabError

NAMES = {signal.SIGINT: "SIGINT (Ctrl-C)", signal.SIGTERM: "SIGTERM"}


class Interrupted(RnnlabError):
    """Training stopped on a signal after saving a checkpoint (or outside training: ``stage``)."""

    def __init__(
        self,
        *,
        signum: int,
        run_id: str,
        epoch: int = 0,
        step: int = 0,
        stage: str | None = None,
        resumable: bool = True,
    ) -> None:
        self.exit_code = 128 + signum
        self.signum = signum
        self.epoch, self.step = epoch, step
        name = NAMES.get(signum, signum)
        if stage is None:
            problem = (
                f"Interrupted by {name} at epoch {epoch} (step {step}); a checkpoint was saved"
            )
        else:
            problem = f"Interrupted by {name} during {stage}"
        fix = f"Resume it with: rnnlab train resume={run_id}"
        if not resumable:
            fix = "It stopped before its first checkpoint, so start it again (the same command)"
        super().__init__(f"{problem}; run {run_id} is marked KILLED", fix)


class Terminated(BaseException):
    """SIGTERM arrived outside the training loop (a BaseException: no handler may swallow it)."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


@contextlib.contextmanager
def terminate_raises():
    """While the body runs, SIGTERM raises :class:`Terminated` (Python's default is to die at
    once, leaving the run RUNNING); the loop's :class:`StopRequest` takes over inside it."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handle(signum: int, frame: FrameType | None) -> None:
        raise Terminated(signum)

    previous = signal.signal(signal.SIGTERM, handle)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


class StopRequest:
    """Context manager that turns SIGINT/SIGTERM into a polled stop request."""

    def __init__(self) -> None:
        self.signum: int | None = None
        self._previous: dict[int, object] = {}

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.signum is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt  # second Ctrl-C: stop now
        if self.signum is None:  # the first signal names the stop (a launcher forwards more)
            self.signum = signum

    def __enter__(self) -> StopRequest:
        if threading.current_thread() is threading.main_thread():
            for signum in NAMES:
                self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous.clear()
