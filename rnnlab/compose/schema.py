"""Option groups that belong to no lower layer: the stack (``cell.*``), tracking and the
top-level keys. Defaults live in ``conf/``; these dataclasses hold the types and rules."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from rnnlab.cells.base import SCAN_CHOICES
from rnnlab.models.blocks import FFN_RULE
from rnnlab.options import FRACTION, NON_NEGATIVE, POSITIVE, Options, one_of, option


@dataclass(frozen=True)
class StackOptions(Options):
    """``cell.*`` except ``cell.layer`` (the cell's own keyword arguments)."""

    section: ClassVar[str] = "cell"

    name: str = option()
    hidden_size: int = option(POSITIVE)
    num_layers: int = option(POSITIVE)
    #: per-layer widths; None: hidden_size for each of num_layers layers
    hidden_sizes: list[int] | None = option(POSITIVE)
    dropout: float = option(FRACTION)
    locked_dropout: bool = option()
    bidirectional: bool = option()
    zoneout: float = option(FRACTION)
    compile: bool = option()
    compile_chunk: int = option(POSITIVE)
    #: auto | parallel | sequential: the path of cells with a parallel scan
    scan: str = option(one_of(*SCAN_CHOICES))
    #: steps per window of the parallel scan (None: the whole sequence)
    scan_chunk: int | None = option(POSITIVE)
    #: block options (rnnlab.models.blocks): residual, pre-LayerNorm, feed-forward
    residual: bool = option()
    pre_norm: bool = option()
    ffn: str = option(FFN_RULE)
    ffn_mult: int = option(POSITIVE)

    def check(self) -> None:
        if self.hidden_sizes is not None and not self.hidden_sizes:
            raise ValueError("cell.hidden_sizes must list at least one width, or be null")

    @property
    def sizes(self) -> tuple[int, ...]:
        """The width of every layer."""
        return tuple(self.hidden_sizes or [self.hidden_size] * self.num_layers)


@dataclass(frozen=True)
class TrackingOptions(Options):
    """``tracking.*`` (``conf/tracking/mlflow.yaml``)."""

    section: ClassVar[str] = "tracking"

    #: None: $MLFLOW_TRACKING_URI, else sqlite:///mlflow.db in the working directory
    uri: str | None = option()
    #: None: the task's name
    experiment: str | None = option()
    #: seconds between batched metric writes (0: write every metric at once)
    flush_every_s: float = option(NON_NEGATIVE)
    #: log the best weights as an MLflow PyTorch model (a LoggedModel linked to the run)
    log_model: bool = option()
    #: also register that model under this name in the Model Registry (None: do not)
    register_model: str | None = option()
    #: record MLflow's system metrics (CPU, memory, disk, network, GPU)
    system_metrics: bool = option()
    #: seconds between system-metric samples
    system_metrics_interval_s: float = option(POSITIVE)

    def check(self) -> None:
        if self.register_model is not None and not self.log_model:
            raise ValueError(
                "tracking.register_model needs tracking.log_model=true (it registers that model)"
            )

    #: seconds between refreshes of the run's lease (rnnlab.tracking.lease)
    heartbeat_s: float = option(POSITIVE)


@dataclass(frozen=True)
class RunOptions(Options):
    """The top-level keys of ``conf/train.yaml``."""

    seed: int = option()
    #: auto | cpu | cuda (checked by rnnlab.train.device.resolve_device)
    device: str = option()
    #: continue this unfinished run from its latest checkpoint
    resume: str | None = option()
    #: start a new run from this past run's resolved config (plus the command line's overrides)
    rerun: str | None = option()
    #: with resume: take the run over even while another process holds its lease
    force: bool = option()

    def check(self) -> None:
        if self.force and not self.resume:
            raise ValueError("force=true only applies to resume=RUN_ID (taking a run over)")
