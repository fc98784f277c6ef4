"""The store's invariants, checked run by run (``rnnlab runs --check``), and dead runs ended
(``rnnlab runs --mark-dead``).

A run is DEAD when it says RUNNING but the process holding its lease is gone (the OS lock is
free on this machine, or the heartbeat is stale: :mod:`rnnlab.tracking.lease`). The checks:
no metric holds two points at one step; a resumable run (KILLED, or DEAD) has
``checkpoints/last.pt``; a status agrees with its lease (RUNNING has a live holder, an ended
run has none).
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from rnnlab.tracking.lease import LEASE_TAG, Holder, Lease, holder_alive
from rnnlab.tracking.store import has_artifact

DEAD_REASON = (
    "its writer died without ending it ({holder}); marked FAILED by rnnlab runs --mark-dead"
)


def all_runs(client: Any, experiment_ids: list[str]) -> list[Any]:
    return client.search_runs(experiment_ids, max_results=50000) if experiment_ids else []


def is_dead(run: Any, uri: str) -> bool:
    """RUNNING, with a lease whose holder is gone."""
    return run.info.status == "RUNNING" and holder_alive(run, uri) is False


def duplicate_steps(client: Any, run: Any) -> list[str]:
    """``key: steps ...`` for every metric of ``run`` that holds two points at one step."""
    found = []
    for key in sorted(run.data.metrics):
        counts = Counter(m.step for m in client.get_metric_history(run.info.run_id, key))
        repeated = sorted(step for step, n in counts.items() if n > 1)
        if repeated:
            shown = ", ".join(map(str, repeated[:5])) + (" ..." if len(repeated) > 5 else "")
            found.append(f"{key} has {len(repeated)} duplicate step(s): {shown}")
    return found


def lease_problems(run: Any, uri: str) -> list[str]:
    """Where the run's status and its lease disagree."""
    alive = holder_alive(run, uri)
    status = run.info.status
    if status == "RUNNING" and alive is False:
        holder = Holder.parse(run.data.tags.get(LEASE_TAG))
        return [f"DEAD: RUNNING, but its writer {holder.describe()} is gone (--mark-dead)"]
    if status == "RUNNING" and alive is None and run.data.tags.get("sweep_role") != "parent":
        return ["RUNNING with no lease: no rnnlab process says it writes this run"]
    if status != "RUNNING" and alive:
        return [f"{status}, yet a live process still holds its lease"]
    return []


def run_problems(client: Any, run: Any, uri: str) -> list[str]:
    """Everything wrong with one run (empty when it keeps every invariant)."""
    problems = duplicate_steps(client, run) + lease_problems(run, uri)
    resumable = run.info.status == "KILLED" or is_dead(run, uri)
    if resumable and not has_artifact(client, run.info.run_id, "checkpoints/last.pt"):
        problems.append(
            f"{run.info.status} (resumable) but has no checkpoints/last.pt: resume cannot work"
        )
    return problems


def check_runs(client: Any, uri: str, experiment_ids: list[str]) -> list[str]:
    """One line per problem: ``RUN_ID (name): problem``."""
    lines = []
    for run in all_runs(client, experiment_ids):
        for problem in run_problems(client, run, uri):
            lines.append(f"{run.info.run_id} ({run.info.run_name}): {problem}")
    return lines


def mark_dead(client: Any, uri: str, experiment_ids: list[str], heartbeat_s: float) -> list[Any]:
    """End every DEAD run FAILED with a ``failure_reason``; the runs so ended.

    Each is ended under its own lease (taken as a resume would), so a run that a resume has
    just picked up is left alone."""
    from rnnlab.errors import TrackingError

    ended = []
    for run in all_runs(client, experiment_ids):
        if not is_dead(run, uri):
            continue
        holder = Holder.parse(run.data.tags.get(LEASE_TAG))
        try:
            lease = Lease.acquire(client, uri=uri, run=run, heartbeat_s=heartbeat_s, force=False)
        except TrackingError:
            continue  # taken by a live process meanwhile: not dead after all
        try:
            client.set_tag(
                run.info.run_id, "failure_reason", DEAD_REASON.format(holder=holder.describe())
            )
            client.set_terminated(run.info.run_id, status="FAILED")
        finally:
            lease.release()
        ended.append(run)
    return ended
