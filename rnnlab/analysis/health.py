"""``rnnlab runs --check`` and ``--mark-dead``: the store's invariants, and dead runs ended.

The checks themselves live in :mod:`rnnlab.tracking.check`; this module picks the
experiments, runs them and words the report.
"""

from __future__ import annotations

from collections.abc import Sequence

from rnnlab.analysis.runs import find_experiments

#: the lease a --mark-dead holds for an instant beats this often (it never gets to beat)
MARK_DEAD_HEARTBEAT_S = 30.0


def store_health(
    *, uri: str, experiments: Sequence[str], check: bool, mark_dead: bool
) -> tuple[list[str], bool]:
    """The report's lines, and whether the store is sound (every check passed)."""
    from rnnlab.tracking import check as checks
    from rnnlab.tracking.store import connect

    client = connect(uri)
    ids = [e.experiment_id for e in find_experiments(client, uri, experiments)]
    lines: list[str] = []
    if mark_dead:
        ended = checks.mark_dead(client, uri, ids, MARK_DEAD_HEARTBEAT_S)
        lines += [f"{r.info.run_id} ({r.info.run_name}): DEAD, now FAILED" for r in ended]
        lines.append(f"marked {len(ended)} dead run(s) FAILED")
    if not check:
        return lines, True
    problems = checks.check_runs(client, uri, ids)
    total = len(checks.all_runs(client, ids))
    lines += problems
    lines.append(f"checked {total} run(s) in {uri}: {len(problems)} problem(s)")
    return lines, not problems
