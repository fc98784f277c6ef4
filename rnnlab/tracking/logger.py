"""Writes one MLflow run: params, tags, buffered metrics, checkpoints, artifacts, status.

It is the :class:`~rnnlab.train.recorder.Recorder` that training writes to. Metrics are
buffered in memory and written with ``log_batch`` (1000 per call) every ``flush_every_s``
seconds, before every checkpoint, at the end, and before a failure is recorded: a long run
spends its time training rather than writing to the store, and a checkpoint never runs ahead
of the metrics it implies.
"""

from __future__ import annotations

import sys
import tempfile
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from rnnlab.tracking.auth import denied
from rnnlab.tracking.lease import LEASE_TAG, Holder, Lease, LeaseLost
from rnnlab.tracking.store import connect, experiment_id, is_locked, locked_error
from rnnlab.tracking.store_errors import store_error
from rnnlab.train.faults import fault_point

MAX_METRICS_PER_BATCH = 1000
MAX_PARAMS_PER_BATCH = 100
MAX_PARAM_LENGTH = 6000
MAX_TAG_LENGTH = 5000


class RunLogger:
    """Writes one MLflow run: params, tags, buffered metrics, artifacts, final status."""

    def __init__(
        self,
        *,
        uri: str,
        experiment: str,
        run_name: str,
        tags: Mapping[str, str] | None = None,
        parent_run_id: str | None = None,
        flush_every_s: float = 5.0,
        heartbeat_s: float = 30.0,
        owner_pid: int | None = None,
    ) -> None:
        """``owner_pid``: the training process this one writes for, named as the lease's
        holder (default this process)."""
        self.uri = uri
        self.client = connect(uri, writes=True)
        self.experiment_id = experiment_id(self.client, experiment, uri=uri)
        # the lease comes with the run: one writer from birth
        holder = Holder.new(heartbeat_s, pid=owner_pid)
        all_tags = {**(tags or {}), LEASE_TAG: holder.to_tag()}
        if parent_run_id:
            all_tags["mlflow.parentRunId"] = parent_run_id
        run = self._write(
            self.client.create_run, self.experiment_id, run_name=run_name, tags=all_tags
        )
        self._init_state(run, flush_every_s)
        self.lease = Lease.for_new_run(self.client, uri=uri, run_id=self.run_id, holder=holder)

    def _init_state(self, run: Any, flush_every_s: float) -> None:
        self.run_id: str = run.info.run_id
        self.run_name: str = run.info.run_name
        self.artifact_uri: str = run.info.artifact_uri
        self.flush_every_s = flush_every_s
        self._buffer: list[Any] = []
        self._last_flush = time.monotonic()
        self._floor: dict[str, int] = {}
        self.seconds_in_mlflow = 0.0
        self.ended = False
        self.checkpoints: set[str] = set()  # the checkpoint names written by this process
        self._stop_system_metrics: Callable[[], None] | None = None

    @classmethod
    def reopen(cls, *, uri: str, lease: Lease, flush_every_s: float = 5.0) -> RunLogger:
        """Continue an existing run whose ``lease`` this process holds: status back to
        RUNNING, and metric points at steps it already holds are dropped, so a resumed run has
        no duplicate steps (the lease makes sure no other writer adds any meanwhile)."""
        self = cls.__new__(cls)
        self.uri = uri
        self.client = lease.client
        run_id = lease.run_id
        run = self.client.get_run(run_id)
        self.experiment_id = run.info.experiment_id
        self._init_state(run, flush_every_s)
        self.lease = lease
        self._archive_failure(run.data.tags)
        for key in run.data.metrics:
            steps = [m.step for m in self.client.get_metric_history(run_id, key)]
            self._floor[key] = max(steps, default=-1)
        self.client.update_run(run_id, status="RUNNING")
        return self

    def _archive_failure(self, tags: Mapping[str, str]) -> None:
        """A resumed run is no longer failed: its ``failure_reason`` moves to the end of
        ``failure_history`` (so a run that ends FINISHED does not carry a stale reason)."""
        reason = tags.get("failure_reason")
        if not reason:
            return
        history = "\n".join(filter(None, [tags.get("failure_history"), reason]))
        self.client.set_tag(self.run_id, "failure_history", history[-MAX_TAG_LENGTH:])
        self.client.delete_tag(self.run_id, "failure_reason")

    # -- writing -----------------------------------------------------------------------
    def _write(self, call: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """One store write; a sqlite lock that outlasts MLflow's busy timeout is a clear error."""
        try:
            return call(*args, **kwargs)
        except Exception as exc:
            if is_locked(exc):
                raise locked_error(self.uri, exc) from exc
            if (forbidden := denied(self.uri, exc)) is not None:
                raise forbidden from exc
            known = store_error(self.uri, exc)  # a full disk, a store made read-only
            if known is not None:
                raise known from exc
            raise

    def timed(self, call: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """``call(*args, **kwargs)``, another write to the store (inputs, models), timed."""
        start = time.monotonic()
        try:
            return self._write(call, *args, **kwargs)
        finally:
            self.seconds_in_mlflow += time.monotonic() - start

    def log_params(self, params: Mapping[str, Any]) -> None:
        from mlflow.entities import Param

        items = [Param(k, str(v)[:MAX_PARAM_LENGTH]) for k, v in params.items()]
        start = time.monotonic()
        for i in range(0, len(items), MAX_PARAMS_PER_BATCH):
            self._write(
                self.client.log_batch, self.run_id, params=items[i : i + MAX_PARAMS_PER_BATCH]
            )
        self.seconds_in_mlflow += time.monotonic() - start

    def set_tags(self, tags: Mapping[str, str]) -> None:
        from mlflow.entities import RunTag

        start = time.monotonic()
        self._write(
            self.client.log_batch, self.run_id, tags=[RunTag(k, str(v)) for k, v in tags.items()]
        )
        self.seconds_in_mlflow += time.monotonic() - start

    def log_metrics(
        self, metrics: Mapping[str, float], *, step: int, timestamp_ms: int | None = None
    ) -> None:
        """Buffer metrics (taken at ``timestamp_ms``, default now); they reach the store at
        the next flush."""
        from mlflow.entities import Metric

        now = timestamp_ms or int(time.time() * 1000)
        floor = self._floor
        self._buffer.extend(
            Metric(k, float(v), now, step)
            for k, v in metrics.items()
            if not (floor and step <= floor.get(k, -1))
        )
        if (
            len(self._buffer) >= MAX_METRICS_PER_BATCH
            or time.monotonic() - self._last_flush >= self.flush_every_s
        ):
            self.flush()

    def flush(self) -> None:
        """Write buffered metrics with ``log_batch`` (1000 per call), synchronously: a flush
        must be done before the checkpoint that follows it (and MLflow's async queue costs
        more at shutdown than it saves, docs/benchmarks.md)."""
        self.lease.check()  # a run taken over (force=true) gets no more writes from here
        start = time.monotonic()
        while self._buffer:
            chunk = self._buffer[:MAX_METRICS_PER_BATCH]
            self._write(self.client.log_batch, self.run_id, metrics=chunk)
            del self._buffer[:MAX_METRICS_PER_BATCH]
        self._last_flush = time.monotonic()
        self.seconds_in_mlflow += self._last_flush - start

    def write_checkpoint(self, name: str, write: Callable[[Path], Path]) -> None:
        """Flush the metrics, then save ``checkpoints/<name>.pt`` (:func:`store_checkpoint`)."""
        store_checkpoint(self, name, write)

    def log_artifact(self, path: Path, artifact_path: str | None = None) -> None:
        start = time.monotonic()
        self._write(self.client.log_artifact, self.run_id, str(path), artifact_path)
        self.seconds_in_mlflow += time.monotonic() - start

    # -- what a run records beyond metrics -----------------------------------------------
    def log_data_sources(self, sources: list[Any]) -> None:
        """Every split the task reads, as the run's dataset inputs."""
        from rnnlab.tracking.inputs import log_data_sources

        self.timed(log_data_sources, self.client, self.run_id, sources)

    def start_system_metrics(self, *, interval_s: float, resumed: bool) -> None:
        """MLflow's system metrics for this run until it ends (:meth:`end`, :meth:`fail`)."""
        from rnnlab.tracking.system import start_system_metrics

        self._stop_system_metrics = start_system_metrics(
            uri=self.uri, run_id=self.run_id, interval_s=interval_s, resumed=resumed
        )

    def stop_system_metrics(self) -> None:
        stop, self._stop_system_metrics = self._stop_system_metrics, None
        if stop is not None:
            stop()

    def log_model(
        self,
        *,
        model: Any,
        task_state: dict[str, Any],
        step: int,
        register_as: str | None,
        serving: Any = None,
        config_yaml: str = "",
    ) -> Callable[[], Any]:
        """Log the best weights as the run's MLflow model, tagged ``model_uri``; returns the
        function that gives its ``LoggedModel`` (here at once; the tracking process's stand-in
        answers it later, rnnlab.session.sidecar). ``serving``: the task's ServingSchema,
        for the text-in pyfunc flavour (rnnlab.tracking.serving)."""
        from rnnlab.tracking.models import log_best_model

        logged = self.timed(
            log_best_model,
            uri=self.uri,
            run_id=self.run_id,
            experiment_id=self.experiment_id,
            model=model,
            task_state=task_state,
            step=step,
            register_as=register_as,
            serving=serving,
            config_yaml=config_yaml,
        )
        self.set_tags({"model_uri": logged.uri})
        return lambda: logged

    # -- ending ------------------------------------------------------------------------
    def end(self, status: str = "FINISHED") -> None:
        """Flush what is buffered and set the run's final status (once)."""
        self.stop_system_metrics()
        if self.ended or self.abandon_if_lost():
            return
        start = time.monotonic()
        try:
            self.flush()
        finally:
            try:
                self._write(self.client.set_terminated, self.run_id, status=status)
                self.ended = True
            finally:
                self.lease.release()
            self.seconds_in_mlflow += time.monotonic() - start

    def abandon_if_lost(self) -> bool:
        """When another process took the run over, end here without writing: it is theirs."""
        if self.lease.lost is None:
            return False
        self.ended = True
        self.lease.release()
        return True

    def fail(self, reason: str, status: str = "FAILED") -> None:
        """Keep every metric logged so far, tag the reason, and mark the run failed.

        Called while another error propagates: if the store itself fails now (a full disk,
        a dead server), say so on stderr and let the original error through.
        """
        self.stop_system_metrics()
        if self.ended or self.abandon_if_lost():
            return
        try:
            self.flush()
        except LeaseLost:
            self.abandon_if_lost()
            return
        except Exception:  # the store takes no more metrics (full, gone): the error saying so
            self._buffer.clear()  # is the one propagating; a status update may still fit
        self.lease.free_reserve()  # room on a full disk for the failure to be recorded
        try:
            self._write(self.client.set_tag, self.run_id, "failure_reason", reason[:5000])
            self.end(status)
        except Exception as exc:
            self.ended = True
            self.lease.release()
            warn_failure_not_recorded(self.run_id, exc)


def warn_failure_not_recorded(run_id: str, exc: Exception) -> None:
    """Say on stderr that a run's failure could not be written (the error that caused the
    failure is the one that propagates)."""
    print(
        f"rnnlab: warning: could not record the failure of run {run_id} in MLflow "
        f"({type(exc).__name__}: {str(exc).splitlines()[0]}); it may still show as RUNNING",
        file=sys.stderr,
    )


def local_artifact_dir(artifact_uri: str) -> Path | None:
    """A run's artifact folder when the artifact store is a local directory.

    Decided by the URI's scheme: a served store's ``mlflow-artifacts:/1/...`` has no ``://``
    yet is remote (a checkpoint written there would land in the client's cwd).
    """
    from urllib.parse import unquote, urlparse

    parsed = urlparse(artifact_uri)
    if parsed.scheme == "file":
        return Path(unquote(parsed.path))
    if parsed.scheme == "":
        return Path(artifact_uri)
    return None


def store_checkpoint(run: Any, name: str, write: Callable[[Path], Path]) -> None:
    """Flush ``run``'s metrics, then save ``checkpoints/<name>.pt``: atomically in place when
    the artifact store is a local folder, else written locally and uploaded. ``run`` is a
    :class:`RunLogger` or its stand-in in the training process (rnnlab.session.sidecar)."""
    fault_point("checkpoint.flush")
    run.flush()  # the store holds every metric up to the checkpoint: resume loses none
    local = local_artifact_dir(run.artifact_uri)
    if local is not None:
        write(local / "checkpoints" / f"{name}.pt")
    else:
        with tempfile.TemporaryDirectory(prefix="rnnlab-ckpt-") as tmp:
            run.log_artifact(write(Path(tmp) / f"{name}.pt"), "checkpoints")
    run.checkpoints.add(name)
