"""The tracking process itself (``python -m rnnlab.session.tracker IN OUT``): a run's
:class:`~rnnlab.tracking.logger.RunLogger`, driven by the training process over two pipes.

See :mod:`rnnlab.session.sidecar` for why and what is kept. Here: import MLflow at once, then
answer one request at a time, in order. ``open`` creates the run; every other request is a
``RunLogger`` call (``flush``, ``end`` and ``fail`` first add the metrics buffered over there).
The process leaves after the run has ended, and at once when the training process is gone
(its pipe closes): the OS lock on the run goes with it, as it would have with that process.
Stop signals are the training process's to handle: it ends the run through here.
"""

from __future__ import annotations

import gc
import os
import pickle
import signal
import sys
import threading
from multiprocessing.connection import Connection
from typing import Any

from rnnlab.tracking.logger import RunLogger

#: the RunLogger calls the training process may ask for
CALLS = {
    "set_tags",
    "log_params",
    "log_artifact",
    "log_data_sources",
    "start_system_metrics",
}


def add_points(logger: RunLogger, points: list[tuple[dict[str, float], int, int]]) -> None:
    for metrics, step, timestamp_ms in points:
        logger.log_metrics(metrics, step=step, timestamp_ms=timestamp_ms)


def preload() -> None:
    """What logging the model needs, made ready while the training process trains: on a
    thread, so requests are answered meanwhile. Started by ``open`` for a run that will log
    a model: a run with ``tracking.log_model=false``, like one killed before its end, needs
    none of it (torch, ~1 s of CPU and ~190 MB here); and started once MLflow is imported,
    it no longer competes with that import for the interpreter while the run is created."""
    try:
        import mlflow.pyfunc  # noqa: F401  (the text-in flavour, rnnlab.tracking.serving)
        import mlflow.pytorch  # noqa: F401  (torch, to unpickle the model and save it)
        from mlflow.models import Model  # noqa: F401
        from mlflow.utils.requirements_utils import warn_dependency_requirement_mismatches

        import rnnlab.tracking.serving  # noqa: F401  (the task schemas arrive pickled)
        from rnnlab.tracking.models import requirements

        # log_model checks the model's requirements against every installed distribution;
        # the map of them it builds once is built now
        warn_dependency_requirement_mismatches(requirements())
    finally:  # (an import that fails here fails again, and is reported, in log_model)
        end_import_pause()


def end_import_pause() -> None:
    """Collect again, once the imports are done (``main`` paused the collector for them)."""
    gc.freeze()  # what was loaded lives as long as this process: never scanned again
    gc.enable()


def warm_up() -> None:
    """MLflow's client and its SQL store, imported before the run is asked for (the training
    process imports torch and composes meanwhile)."""
    import mlflow.tracking  # noqa: F401
    from mlflow.store.tracking import sqlalchemy_store  # noqa: F401  (sqlite, the default)


class Tracker:
    """The run's ``RunLogger`` once ``open`` has created it; one request at a time."""

    def __init__(self) -> None:
        self.logger: RunLogger | None = None

    def handle(self, op: str, args: tuple, kwargs: dict[str, Any]) -> Any:
        if op == "open":
            load_model_logging = kwargs.pop("preload_model", False)
            self.logger = RunLogger(**kwargs)
            if load_model_logging:
                threading.Thread(target=preload, name="rnnlab-preload", daemon=True).start()
            else:  # preload would end the import-time pause of the collector
                end_import_pause()
            run = self.logger
            return {
                "uri": run.uri,
                "run_id": run.run_id,
                "run_name": run.run_name,
                "artifact_uri": run.artifact_uri,
                "experiment_id": run.experiment_id,
            }
        logger = self.logger
        if logger is None:  # the run was never created (its error was the answer to open)
            if op in ("end", "fail"):
                return None
            raise RuntimeError(f"{op} requested before a run was opened")
        if op == "log_points":
            return add_points(logger, args[0])
        if op == "flush":
            add_points(logger, args[0])
            return logger.flush()
        if op == "end":
            points, status = args
            add_points(logger, points)
            return logger.end(status)
        if op == "fail":
            points, reason, status = args
            add_points(logger, points)
            return logger.fail(reason, status)
        if op == "log_model":
            return logger.log_model(**kwargs)()
        if op in CALLS:
            return getattr(logger, op)(*args, **kwargs)
        raise ValueError(f"unknown request {op!r}")

    def keep_what_was_sent(self) -> None:
        """Store the metrics the training process sent before it died; the run stays as
        after any crash (RUNNING, its holder gone: resumable, and ``DEAD`` to ``rnnlab
        runs``)."""
        if self.logger is None or self.logger.ended:
            return
        try:
            self.logger.flush()
        except Exception as exc:  # exiting anyway: say what was not kept, and why
            print(
                f"rnnlab: warning: the last metrics of run {self.logger.run_id} were not "
                f"stored ({type(exc).__name__}: {str(exc).splitlines()[0]})",
                file=sys.stderr,
            )

    def done(self) -> bool:
        return self.logger is not None and self.logger.ended


def answer(value: Any, ok: bool) -> bytes:
    try:
        return pickle.dumps((ok, value))
    except Exception:  # an error that does not pickle: its text does
        from rnnlab.errors import TrackingError

        return pickle.dumps((False, TrackingError(f"{type(value).__name__}: {value}")))


def serve(requests: Connection, answers: Connection) -> None:
    tracker = Tracker()
    while not tracker.done():
        try:
            op, args, kwargs = pickle.loads(requests.recv_bytes())
        except EOFError:  # the training process is gone without ending the run
            tracker.keep_what_was_sent()
            return
        try:
            reply = answer(tracker.handle(op, args, kwargs), ok=True)
        except Exception as exc:  # raised in the training process, where the call was made
            reply = answer(exc, ok=False)
        answers.send_bytes(reply)


def main() -> None:
    gc.disable()  # while MLflow and torch load (as in rnnlab.commands.train); open ends it
    for stop in (signal.SIGINT, signal.SIGTERM):  # the training process decides: see above
        signal.signal(stop, signal.SIG_IGN)
    warm_up()
    # the answering thread gets the interpreter back within 0.5 ms of a request, not 5 ms
    sys.setswitchinterval(0.0005)
    requests = Connection(int(sys.argv[1]), writable=False)
    answers = Connection(int(sys.argv[2]), readable=False)
    serve(requests, answers)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)  # no interpreter teardown: the run is ended (or not ours any more)


if __name__ == "__main__":
    main()
