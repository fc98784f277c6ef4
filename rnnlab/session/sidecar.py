"""The tracking process: a run's MLflow writes made by a second process, beside training.

Importing MLflow and opening its store cost a short run about half its wall time, and none of
it needs torch. So ``rnnlab train`` starts a tracking process first thing (:func:`prewarm`):
``python -m rnnlab.session.tracker`` imports MLflow on the second core while this process
imports torch and composes the config. When the run is ready, :meth:`TrackingProcess.open_run`
has the tracking process create it, and from then on a :class:`RemoteLogger` here stands for
the :class:`~rnnlab.tracking.logger.RunLogger` there: each call is sent, done there by the real
``RunLogger`` in the order sent, and answered; the training process never imports MLflow.

What stays as it was in one process:

- opening the run, the flush before a checkpoint, the model and the run's end wait for their
  answer: a store error is raised where the call was made (or at the next of those calls for
  writes sent without waiting: params, tags, dataset inputs), and a checkpoint is written
  only once the metrics before it are stored;
- metrics are buffered here and sent every ``flush_every_s`` seconds, before every
  checkpoint and at the end;
- the run's lease names this process (``rnnlab runs`` and the busy-run error point at the
  process to stop), and the fault points of ``RNNLAB_FAULT`` fire here;
- when this process dies (``kill -9``), the tracking process sees its pipe close and exits
  at once: its OS lock on the run goes with it, and the run is resumable as after any crash;
- when the tracking process dies, the call that finds it gone raises a
  :class:`TrackingProcessGone` error, and the run's failure is recorded from here.

Used for a single new run of a ``rnnlab train`` process on POSIX. Resumed runs, data-parallel
launchers and multirun jobs write in process; so does everything with
``RNNLAB_TRACKING_PROCESS=0``.
"""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from rnnlab.errors import TrackingError

ENV_VAR = "RNNLAB_TRACKING_PROCESS"

_allowed = False
_prewarmed: TrackingProcess | None = None


class TrackingProcessGone(TrackingError):
    """The tracking process exited while a run was being written."""


def allow() -> None:
    """Let this process use a tracking process (the ``rnnlab`` executable does; a test that
    calls the command line in process writes in process)."""
    global _allowed
    _allowed = True


def wanted() -> bool:
    return _allowed and os.name == "posix" and os.environ.get(ENV_VAR, "1") != "0"


def prewarm() -> None:
    """Start the tracking process now, so MLflow is imported by the time the run opens."""
    global _prewarmed
    if _prewarmed is None and wanted():
        _prewarmed = TrackingProcess.start()


def take() -> TrackingProcess | None:
    """The tracking process started by :func:`prewarm`, for the one run that uses it."""
    global _prewarmed
    process, _prewarmed = _prewarmed, None
    return process


def discard() -> None:
    """Stop a tracking process that no run took (resume, data-parallel, an early error)."""
    process = take()
    if process is not None:
        process.close()


class TrackingProcess:
    """``python -m rnnlab.session.tracker``, spoken to over two pipes of pickled messages."""

    def __init__(self, proc: subprocess.Popen, requests: Any, answers: Any) -> None:
        self.proc, self.requests, self.answers = proc, requests, answers
        self.opened = False
        self.broken = False
        self.sent = self.answered = 0  # requests sent, and answers read, so far
        self.results: dict[int, Any] = {}  # answers read, kept for their wait()

    @classmethod
    def start(cls) -> TrackingProcess:
        from multiprocessing.connection import Connection

        child_reads, requests = os.pipe()  # (read end, write end)
        answers, child_writes = os.pipe()
        env = {
            **os.environ,
            # the model is unpickled there: the same import path as here (a user's own cell)
            "PYTHONPATH": os.pathsep.join(p for p in sys.path if p),
            "OMP_NUM_THREADS": "1",  # it computes nothing: leave the cores to training
        }
        proc = subprocess.Popen(
            [sys.executable, "-m", "rnnlab.session.tracker", str(child_reads), str(child_writes)],
            pass_fds=(child_reads, child_writes),
            env=env,
            stdin=subprocess.DEVNULL,
        )
        os.close(child_reads)
        os.close(child_writes)
        return cls(proc, Connection(requests, readable=False), Connection(answers, writable=False))

    # -- messages ------------------------------------------------------------------------
    def send(self, op: str, *args: Any, **kwargs: Any) -> int:
        """Have the tracking process do ``op``; returns its ticket for :meth:`wait`. Requests
        are done in order, so answers come in the order they were asked for. The answers
        already there are read first (an error among them is raised now): a long run sends
        without waiting for hours, and an unread pipe of answers would stop the tracker."""
        self.read_answers(lambda: self.answered < self.sent and self.answers.poll(), op)
        try:
            self.requests.send_bytes(pickle.dumps((op, args, kwargs)))
        except OSError as exc:
            raise self.gone(op) from exc
        self.sent += 1
        return self.sent

    def wait(self, ticket: int, op: str) -> Any:
        """The result of request ``ticket``, once it and every request before it are done;
        the first error among the answers not yet reported is raised here."""
        self.read_answers(lambda: self.answered < ticket, op)
        return self.results.pop(ticket, None)

    def read_answers(self, more: Callable[[], bool], op: str) -> None:
        """Read answers while ``more()``; then raise the first error among them, if any."""
        if self.broken:
            raise self.gone(op)
        error: BaseException | None = None
        try:
            while more():
                ok, value = pickle.loads(self.answers.recv_bytes())
                self.answered += 1
                if not ok and error is None:
                    error = value
                elif ok and value is not None:
                    self.results[self.answered] = value
        except (EOFError, OSError) as exc:
            raise self.gone(op) from exc
        except BaseException:
            # a stop signal's exception while an answer was on its way: the pipe may hold
            # half a message, so the process is stopped and the run ended from here
            self.broken = True
            self.proc.kill()
            raise
        if error is not None:
            raise error

    def call(self, op: str, *args: Any, **kwargs: Any) -> Any:
        """:meth:`send`, then :meth:`wait` for it."""
        return self.wait(self.send(op, *args, **kwargs), op)

    def gone(self, op: str) -> TrackingProcessGone:
        try:
            code = self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            code = self.proc.wait()
        how = f"was killed by signal {-code}" if code < 0 else f"exited with code {code}"
        return TrackingProcessGone(
            f"The tracking process (pid {self.proc.pid}) that writes this run to MLflow {how} "
            f"during {op}; what it wrote before is in the store, and its error, if it had one, "
            "is printed above",
            "Look for the cause above (memory, a killed process); run again with "
            f"{ENV_VAR}=0 to write MLflow from the training process itself",
        )

    def open_run(self, **kwargs: Any) -> RemoteLogger:
        """Create the run there (``RunLogger``'s arguments); its stand-in here."""
        try:
            info = self.call("open", owner_pid=os.getpid(), **kwargs)
        except BaseException:  # no run: nothing for it to end
            self.close()
            raise
        self.opened = True
        return RemoteLogger(self, info, flush_every_s=kwargs.get("flush_every_s", 5.0))

    def close(self) -> None:
        """Stop it: at once when it opened no run, else once it has ended the run."""
        for end in (self.requests, self.answers):
            end.close()
        if not self.opened:
            self.proc.kill()
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


class RemoteLogger:
    """What :class:`~rnnlab.tracking.logger.RunLogger` offers a run, done by the tracking
    process. Metrics are buffered here. A write whose result training does not need is sent
    without waiting (its error, if any, is raised at the next call that waits); ``open``,
    the flush before a checkpoint, the model, ``end`` and ``fail`` wait."""

    def __init__(self, process: TrackingProcess, info: dict[str, str], *, flush_every_s: float):
        self.process = process
        self.uri = info["uri"]
        self.run_id = info["run_id"]
        self.run_name = info["run_name"]
        self.artifact_uri = info["artifact_uri"]
        self.experiment_id = info["experiment_id"]
        self.flush_every_s = flush_every_s
        self.checkpoints: set[str] = set()
        self.seconds_in_mlflow = 0.0  # waiting for the tracking process
        self.ended = False
        self._buffer: list[tuple[dict[str, float], int, int]] = []
        self._last_flush = time.monotonic()

    def _send(self, op: str, *args: Any, **kwargs: Any) -> None:
        self.process.send(op, *args, **kwargs)

    def _call(self, op: str, *args: Any, **kwargs: Any) -> Any:
        start = time.monotonic()
        try:
            return self.process.call(op, *args, **kwargs)
        finally:
            self.seconds_in_mlflow += time.monotonic() - start

    # -- the Recorder protocol (rnnlab.train.recorder) -------------------------------------
    def log_metrics(self, metrics: Mapping[str, float], *, step: int) -> None:
        now = int(time.time() * 1000)
        self._buffer.append(({k: float(v) for k, v in metrics.items()}, step, now))
        if time.monotonic() - self._last_flush >= self.flush_every_s:
            points, self._buffer = self._buffer, []  # stored at the tracking process's pace
            self._send("log_points", points)
            self._last_flush = time.monotonic()

    def set_tags(self, tags: Mapping[str, str]) -> None:
        self._send("set_tags", dict(tags))

    def write_checkpoint(self, name: str, write: Callable[[Path], Path]) -> None:
        from rnnlab.tracking.logger import store_checkpoint

        store_checkpoint(self, name, write)

    # -- the rest of a run ---------------------------------------------------------------
    def flush(self) -> None:
        """Every metric so far stored (before a checkpoint): waits for the answer."""
        points, self._buffer = self._buffer, []
        self._call("flush", points)
        self._last_flush = time.monotonic()

    def log_params(self, params: Mapping[str, Any]) -> None:
        self._send("log_params", {k: str(v) for k, v in params.items()})

    def log_artifact(self, path: Path, artifact_path: str | None = None) -> None:
        self._call("log_artifact", path, artifact_path)  # the file may go once it returns

    def log_data_sources(self, sources: list[Any]) -> None:
        self._send("log_data_sources", sources)

    def start_system_metrics(self, *, interval_s: float, resumed: bool) -> None:
        self._send("start_system_metrics", interval_s=interval_s, resumed=resumed)

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
        """Start logging the model there; returns the function that waits for its
        ``LoggedModel`` (the artifacts are written here meanwhile)."""
        ticket = self.process.send(
            "log_model",
            model=model,  # on the CPU (pickled now): unpickled there without a GPU context
            task_state=task_state,
            step=step,
            register_as=register_as,
            serving=serving,
            config_yaml=config_yaml,
        )

        def logged() -> Any:
            start = time.monotonic()
            try:
                return self.process.wait(ticket, "log_model")
            finally:
                self.seconds_in_mlflow += time.monotonic() - start

        return logged

    def end(self, status: str = "FINISHED") -> None:
        """Flush and end the run there; on an error the run is not ended yet (:meth:`fail`)."""
        if self.ended:
            return
        points, self._buffer = self._buffer, []
        self._call("end", points, status)
        self.ended = True
        self.process.close()

    def fail(self, reason: str, status: str = "FAILED") -> None:
        """As ``RunLogger.fail``; when the tracking process is gone, from here."""
        if self.ended:
            return
        points, self._buffer = self._buffer, []
        try:
            self._call("fail", points, reason, status)
        except TrackingProcessGone:
            fail_from_here(self, reason, status)
        finally:
            self.ended = True
            self.process.close()


def fail_from_here(run: RemoteLogger, reason: str, status: str) -> None:
    """Record a run's failure without its tracking process (it died): take the lease its
    death left behind and end the run, as ``RunLogger.fail`` would have."""
    from rnnlab.tracking.lease import Lease
    from rnnlab.tracking.logger import MAX_TAG_LENGTH, warn_failure_not_recorded
    from rnnlab.tracking.store import connect

    try:
        client = connect(run.uri, writes=True)
        lease = Lease.acquire(
            client, uri=run.uri, run=client.get_run(run.run_id), heartbeat_s=30.0, force=True
        )
        try:
            client.set_tag(run.run_id, "failure_reason", reason[:MAX_TAG_LENGTH])
            client.set_terminated(run.run_id, status=status)
        finally:
            lease.release()
    except Exception as exc:  # the original error is what propagates; say what is left
        warn_failure_not_recorded(run.run_id, exc)
