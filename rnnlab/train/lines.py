"""Progress off a terminal: one plain line per epoch on stdout (SLURM logs, ``nohup``, pipes).

Where stderr is not a terminal there are no progress bars (``trainer.progress: null``), so a
job's log would show nothing for hours. Instead each epoch prints one line: epoch/total, the
epoch's train and validation metrics, tokens/s where the task measures it, elapsed time and
ETA. Within a long epoch a line also comes every ``trainer.log_interval_s`` seconds, so a
working job never looks hung. ``trainer.progress: true`` (bars) or ``false`` (quiet) turns
the lines off.
"""

from __future__ import annotations

import sys
import time

#: metrics a line shows, in this order, when the epoch has them
SHOWN = ("train/loss", "train/ppl", "val/loss", "val/ppl", "val/bleu", "val/accuracy")


def lines_enabled(setting: bool | None) -> bool:
    """Lines replace the bars: on when ``trainer.progress`` is null and stderr no terminal."""
    return setting is None and not sys.stderr.isatty()


def clock(seconds: float) -> str:
    """``1:02:03`` (or ``2:03``) from seconds."""
    minutes, secs = divmod(int(round(seconds)), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


class EpochLines:
    """Prints the per-epoch (and within-epoch) progress lines of one ``fit``."""

    def __init__(
        self,
        *,
        total: int,
        first: int,
        interval_s: float,
        enabled: bool,
        budget_s: float | None = None,
    ) -> None:
        self.total = total
        #: training time this process may still spend (trainer.max_time_s): the ETA's cap
        self.budget_s = budget_s
        self.first = first  # the first epoch this process trains (later after a resume)
        self.interval_s = interval_s
        self.enabled = enabled
        self.began = time.perf_counter()
        self.last_line = self.began

    def elapsed_and_eta(self, epochs_done: float) -> str:
        elapsed = time.perf_counter() - self.began
        remaining = self.total - (self.first - 1) - epochs_done
        text = f"elapsed {clock(elapsed)}"
        if epochs_done > 0:
            eta = elapsed / epochs_done * max(remaining, 0.0)
            if self.budget_s is not None:  # the budget ends the run first (evaluation aside)
                eta = min(eta, max(self.budget_s - elapsed, 0.0))
            text += f"  eta {clock(eta)}"
        return text

    def emit(self, text: str) -> None:
        print(text, flush=True)
        self.last_line = time.perf_counter()

    def epoch(self, epoch: int, metrics: dict[str, float]) -> None:
        """The line of a finished epoch."""
        if not self.enabled:
            return
        parts = [f"epoch {epoch}/{self.total}"]
        parts += [f"{key} {metrics[key]:.4g}" for key in SHOWN if key in metrics]
        if metrics.get("tokens_per_s"):
            parts.append(f"tokens/s {metrics['tokens_per_s']:.0f}")
        parts.append(self.elapsed_and_eta(epoch - self.first + 1))
        self.emit("  ".join(parts))

    def due(self) -> bool:
        """Whether a within-epoch line is due (cheap: called after every step)."""
        return self.enabled and time.perf_counter() - self.last_line >= self.interval_s

    def within(self, epoch: int, *, batches: int, mean_loss: float) -> None:
        """A line in the middle of epoch ``epoch``: batches so far and their mean loss."""
        self.emit(
            f"epoch {epoch}/{self.total}  batch {batches}  train/loss {mean_loss:.4g}  "
            f"{self.elapsed_and_eta(epoch - self.first)}"
        )
