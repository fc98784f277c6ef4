"""Clean interrupts: the first SIGINT/SIGTERM asks the loop to checkpoint and stop.

The loop polls :attr:`StopRequest.signum` after each optimizer step, so a stop always lands
on a consistent state. A second Ctrl-C interrupts at once.
"""

from __future__ import annotations

import signal
import threading
from types import FrameType

from rnnlab.errors import RnnlabError

NAMES = {signal.SIGINT: "SIGINT (Ctrl-C)", signal.SIGTERM: "SIGTERM"}


class Interrupted(RnnlabError):
    """Training stopped on a signal after saving a checkpoint."""

    def __init__(self, *, signum: int, run_id: str, epoch: int, step: int) -> None:
        self.exit_code = 128 + signum
        self.signum = signum
        self.epoch, self.step = epoch, step
        super().__init__(
            f"Interrupted by {NAMES.get(signum, signum)} at epoch {epoch} (step {step}); a "
            f"checkpoint was saved and run {run_id} is marked KILLED",
            f"Resume it with: rnnlab train resume={run_id}",
        )


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
