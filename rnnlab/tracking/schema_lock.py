"""A local sqlite store's schema: created or upgraded by one process at a time, repaired when
a migration was interrupted, refused when a newer MLflow wrote it.

MLflow 3 creates its tables and runs its alembic migrations the first time a process opens a
sqlite store that lacks some of its tables, with no lock between processes
(``SqlAlchemyStore.__init__``: ``_all_tables_exist`` else ``_initialize_tables``; then
``_verify_schema`` refuses any revision but the head). Processes that meet a new store at
once (a sweep from the shell, ``rnnlab train &`` then ``rnnlab runs``) migrate it together and
leave it half-migrated for good: leftover ``_alembic_tmp_*`` tables, a version row that does
not match the tables (issue 28). So before MLflow opens a sqlite store, :func:`guard`:

- reads its alembic version with sqlite3 (read-only, no MLflow, no lock). At MLflow's head
  revision, with no leftover tables, the store is up to date and MLflow will not touch its
  schema: the common case costs that one query and nothing else;
- otherwise takes an OS lock (``flock`` on ``<db>.lock`` beside the store), looks again
  (another process may have finished meanwhile), and then lets MLflow create a new store,
  or upgrades or repairs an existing one (:mod:`rnnlab.tracking.migrate`, after a copy to
  ``<db>.bak-<time>``), before MLflow opens it. Other rnnlab processes wait on the lock,
  saying so after a second, and open the finished store.

Alembic writes a step's revision into the version row after the step's changes, so the row
never runs ahead of the tables: a store whose row names the head revision finished its
migration, and its tables need reading only when the row says the store is behind.
"""

from __future__ import annotations

import contextlib
import errno
import os
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path

from rnnlab.errors import TrackingError
from rnnlab.tracking.lease import lock_owner, release_os_lock, take_os_lock
from rnnlab.tracking.schema import read_schema, say, up_to_date
from rnnlab.tracking.store_errors import SQLITE_BUSY_TIMEOUT_S
from rnnlab.tracking.uri import sqlite_path

#: how long a process waits for another to create or upgrade a store (a large store's
#: migration takes minutes); RNNLAB_STORE_LOCK_TIMEOUT_S overrides it
LOCK_TIMEOUT_S = 600.0
LOCK_TIMEOUT_VAR = "RNNLAB_STORE_LOCK_TIMEOUT_S"
#: a process that has waited this long for the lock says so, once
WAIT_NOTICE_S = 1.0
#: file systems where a lock taken on one machine may not be seen on another
MOUNTS = Path("/proc/mounts")
NETWORK_FILESYSTEMS = {"nfs", "nfs4", "cifs", "smb3", "smbfs", "9p", "afs", "ceph", "glusterfs"}


def needs_migration(uri: str) -> bool:
    """Whether the sqlite store at ``uri`` must be created, upgraded or repaired before MLflow
    opens it (False for other stores); raises for a store from a newer MLflow."""
    db = sqlite_path(uri)
    return db is not None and not up_to_date_now(db, uri=uri)


@contextlib.contextmanager
def guard(uri: str) -> Iterator[None]:
    """Run the body, which opens the store with MLflow: under the store's schema lock while
    MLflow creates a new store; after upgrading or repairing an existing one under the lock;
    with no lock at all for an up-to-date store (or a server)."""
    db = sqlite_path(uri)
    if db is None or up_to_date_now(db, uri=uri):
        yield
        return
    with contextlib.ExitStack() as held:
        held.enter_context(schema_lock(db))
        schema = read_schema(db, timeout=SQLITE_BUSY_TIMEOUT_S)  # as the last holder left it
        if not schema.new:
            if not up_to_date(schema, uri=uri):
                from rnnlab.tracking.migrate import migrate  # (not on the common path)

                migrate(db, uri=uri, schema=schema)
            held.close()  # at the head now: the others may open it as this process does
        yield  # a new store is created by MLflow itself, as it would be without rnnlab


def up_to_date_now(db: Path, *, uri: str) -> bool:
    """:func:`up_to_date`, False while another process holds the file for a migration."""
    try:
        schema = read_schema(db, timeout=1.0)
    except sqlite3.OperationalError as exc:
        if "locked" not in str(exc):
            raise
        return False  # being written: wait for the lock, then look again
    return up_to_date(schema, uri=uri)


# -- the lock ----------------------------------------------------------------------------
def lock_timeout_s() -> float:
    return float(os.environ.get(LOCK_TIMEOUT_VAR) or LOCK_TIMEOUT_S)


@contextlib.contextmanager
def schema_lock(db: Path) -> Iterator[None]:
    """Hold the exclusive OS lock ``<db>.lock``, waiting for the process that holds it."""
    path = db.with_name(f"{db.name}.lock")
    warn_unshared_lock(db, path)
    timeout = lock_timeout_s()
    start = time.monotonic()
    said = False
    while (fd := take_lock(path, db)) is None:
        waited = time.monotonic() - start
        if waited > WAIT_NOTICE_S and not said:  # said before any timeout error
            say(
                f"rnnlab: waiting for {lock_owner(path)} to finish creating or upgrading "
                f"the tracking store {db} (lock {path.name})"
            )
            said = True
        if waited > timeout:
            raise lock_timeout(db, path, timeout)
        time.sleep(0.05)
    try:
        yield
    finally:
        release_os_lock(fd)


def take_lock(path: Path, db: Path) -> int | None:
    """:func:`~rnnlab.tracking.lease.take_os_lock`, with the reasons it can fail said."""
    try:
        return take_os_lock(path)
    except OSError as exc:
        if exc.errno in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS):  # NFS without lockd
            raise TrackingError(
                f"Cannot lock {path} to create or upgrade the tracking store {db}: "
                f"{exc.strerror} (its file system does not support file locks)",
                "Put the store on a local disk, or run a tracking server (rnnlab server, "
                "docs/team.md) and point MLFLOW_TRACKING_URI at it",
            ) from exc
        raise TrackingError(
            f"The tracking store {db} must be created or have its schema upgraded, and its "
            f"lock file {path} cannot be created there: {exc.strerror}",
            "Make the directory writable, or point tracking.uri / --uri / "
            "MLFLOW_TRACKING_URI at a store in a writable directory",
        ) from exc


def mount_of(path: Path, mounts: Path = MOUNTS) -> tuple[str, set[str]] | None:
    """The file system type and mount options of the mount holding ``path`` (Linux; None
    where ``mounts`` cannot be read)."""
    target = str(path.resolve())
    best: tuple[int, str, set[str]] | None = None
    with contextlib.suppress(OSError):
        for line in mounts.read_text().splitlines():
            fields = line.split()
            if len(fields) < 4:
                continue
            point = fields[1].replace("\\040", " ")
            inside = target == point or target.startswith(point.rstrip("/") + "/")
            if inside and (best is None or len(point) > best[0]):
                best = (len(point), fields[2], set(fields[3].split(",")))
    return None if best is None else (best[1], best[2])


def unshared_lock_reason(db: Path, mounts: Path = MOUNTS) -> str | None:
    """Why the schema lock may not keep out a process on another machine; None on a local
    disk. Linux's NFS client passes ``flock`` to the server as a byte-range lock unless the
    mount says ``nolock`` or ``local_lock=flock|all``; other network file systems vary."""
    mount = mount_of(db.parent, mounts)
    if mount is None:
        return None
    fstype, options = mount
    if fstype.startswith("nfs"):
        local = "nolock" in options or {"local_lock=flock", "local_lock=all"} & options
        if not local:
            return None  # shared through the NFS lock manager
        return f"it is on {fstype} mounted with local locks, which other machines do not see"
    if fstype in NETWORK_FILESYSTEMS or fstype.startswith("fuse."):
        return f"it is on a {fstype} file system, which may not pass file locks between machines"
    return None


def warn_unshared_lock(db: Path, path: Path) -> None:
    reason = unshared_lock_reason(db)
    if reason is not None:
        say(
            f"rnnlab: warning: the schema lock {path} only keeps out processes on this machine: "
            f"{reason}. Create the store from one machine before starting jobs on others, or "
            "use a tracking server for jobs on several machines (docs/reliability.md)"
        )


# -- errors ------------------------------------------------------------------------------
def lock_timeout(db: Path, path: Path, timeout: float) -> TrackingError:
    return TrackingError(
        f"The tracking store {db} is still being created or upgraded by {lock_owner(path)}, "
        f"which has held its schema lock {path} for more than {timeout:.0f} s",
        f"Let that process finish (or stop it if it hangs) and run again; {LOCK_TIMEOUT_VAR} "
        "sets how long to wait",
    )
