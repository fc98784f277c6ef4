"""One writer per run: a lease on the run, held for as long as a process writes it.

A run's lease is its tag ``rnnlab.lease``: JSON naming the holder (host, pid), a random token,
the time of the last heartbeat and how often the holder beats. The holder refreshes it from a
background thread every ``heartbeat_s`` seconds; a lease not refreshed for
:data:`STALE_BEATS` beats is stale (its holder is gone) and can be taken over. On a sqlite
store the holder also keeps an OS lock (``flock``) on ``<db>.leases/<run_id>.lock``: the
kernel drops it the moment the holder dies, so on the same machine a dead holder is known at
once, and two processes can never both hold it.

``resume=ID force=true`` takes the lease regardless; the old holder finds a foreign token at
its next heartbeat and stops writing (:class:`LeaseLost`) instead of ending the run.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import threading
import time
import uuid
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from rnnlab.errors import TrackingError
from rnnlab.tracking.uri import sqlite_path
from rnnlab.train.faults import hold_point

log = logging.getLogger(__name__)

LEASE_TAG = "rnnlab.lease"
#: missed heartbeats after which a lease is stale: one slow store write must not look like death
STALE_BEATS = 4
HOST = socket.gethostname()
#: disk held in reserve beside a sqlite store while a run is written (see take_os_lock)
RESERVE_BYTES = 256 * 1024
#: how long a resume waits for the tracking process of a dead training process to leave
HANDOVER_S = 15.0


class LeaseLost(TrackingError):
    """Another process took this run's lease (``force=true``): stop writing it."""


@dataclass(frozen=True)
class Holder:
    """Who holds a run's lease, as stored in its ``rnnlab.lease`` tag."""

    host: str
    pid: int
    token: str
    heartbeat: float  # time.time() of the last refresh
    every_s: float  # the holder refreshes this often

    @classmethod
    def new(cls, every_s: float, *, pid: int | None = None) -> Holder:
        """A new holder: this process, or process ``pid`` on this machine for which this one
        writes (the training process a tracking process serves: rnnlab.session.sidecar)."""
        return cls(HOST, pid or os.getpid(), uuid.uuid4().hex, time.time(), every_s)

    @classmethod
    def parse(cls, text: str | None) -> Holder | None:
        if not text:
            return None
        try:
            return cls(**json.loads(text))
        except (TypeError, ValueError):
            return None  # not ours to interpret: treated as no lease

    def to_tag(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    def age(self) -> float:
        return time.time() - self.heartbeat

    def stale(self) -> bool:
        return self.age() > STALE_BEATS * self.every_s

    def describe(self) -> str:
        return f"process {self.pid} on {self.host} (last heartbeat {self.age():.0f} s ago)"


def lock_path(uri: str, run_id: str) -> Path | None:
    """The OS lock file of a run on a sqlite store (None for a server store)."""
    db = sqlite_path(uri)
    return None if db is None else db.parent / f"{db.name}.leases" / f"{run_id}.lock"


def take_os_lock(path: Path, *, reserve: bool = False, pid: int | None = None) -> int | None:
    """An open descriptor holding an exclusive ``flock`` on ``path``; None if it is held.

    With ``reserve``, the lock file also holds :data:`RESERVE_BYTES` of disk beside the
    store, which :meth:`Lease.free_reserve` gives back when the disk fills: sqlite then has
    room to record the run's failure instead of leaving it RUNNING. ``pid``: the process
    named as the holder (default this one)."""
    import fcntl

    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    os.ftruncate(fd, 0)
    os.write(fd, f"{pid or os.getpid()} {HOST}".encode())  # who holds it, for the one locked out
    if reserve:
        with contextlib.suppress(OSError):  # no room even now: there is no reserve to keep
            os.posix_fallocate(fd, 0, RESERVE_BYTES)
    return fd


def named_holder_dead(path: Path) -> bool:
    """Whether the process an OS lock file names (its holder, or the training process its
    tracking process serves) is gone from this machine, while the lock is still held: the
    tracking process of a killed run is storing its last metrics and leaving."""
    import psutil

    with contextlib.suppress(OSError, ValueError):
        pid, _, host = path.read_text().partition(" ")
        if host == HOST:
            try:
                return psutil.Process(int(pid)).status() == psutil.STATUS_ZOMBIE
            except psutil.NoSuchProcess:
                return True
    return False


def take_handed_over_lock(path: Path, wait_s: float = HANDOVER_S) -> int | None:
    """The OS lock of a run whose training process died, once its tracking process has left
    (it exits as soon as it sees its pipe close); None if the lock is held by a live one."""
    deadline = time.monotonic() + wait_s
    while named_holder_dead(path) and time.monotonic() < deadline:
        time.sleep(0.05)
        fd = take_os_lock(path, reserve=True)
        if fd is not None:
            return fd
    return None


def lock_owner(path: Path, wait_s: float = 2.0) -> str:
    """Who holds the OS lock ``path``, as its holder wrote it (it writes just after locking)."""
    deadline = time.monotonic() + wait_s
    while True:
        with contextlib.suppress(OSError):
            pid, _, host = path.read_text().partition(" ")
            if pid and host:
                return f"process {pid} on {host}"
        if time.monotonic() > deadline:
            return "another process on this machine"
        time.sleep(0.05)


def release_os_lock(fd: int | None) -> None:
    if fd is not None:
        os.close(fd)  # closing the descriptor drops the flock


def holder_alive(run: Any, uri: str) -> bool | None:
    """Whether the process holding ``run``'s lease is alive; None when it has no lease."""
    return lease_alive(run.data.tags.get(LEASE_TAG), uri=uri, run_id=run.info.run_id)


def lease_alive(tag: str | None, *, uri: str, run_id: str) -> bool | None:
    """Whether the holder named by the lease tag ``tag`` is alive; None for no lease."""
    holder = Holder.parse(tag)
    if holder is None:
        return None
    path = lock_path(uri, run_id)
    if path is not None and holder.host == HOST:
        if not path.exists():
            return False
        try:
            fd = take_os_lock(path)  # the kernel knows: free means the holder has died
        except OSError:  # cannot open it here (a read-only copy): the heartbeat decides
            return not holder.stale()
        release_os_lock(fd)
        return fd is None and not named_holder_dead(path)
    return not holder.stale()


def busy_error(run_id: str, run_name: str, holder: str) -> TrackingError:
    return TrackingError(
        f"resume={run_id}: run {run_name} is being written by {holder}; a run has one "
        "writer at a time",
        "Wait for it to end or stop that process (its run then ends KILLED and resumes); if "
        f"that process is gone for good, take the run over with: rnnlab train resume={run_id} "
        "force=true",
    )


class Lease:
    """This process's lease on one run: the heartbeat thread and the OS lock."""

    def __init__(self, client: Any, run_id: str, holder: Holder, fd: int | None) -> None:
        self.client, self.run_id, self.holder, self.fd = client, run_id, holder, fd
        self.lost: str | None = None  # who took it, once someone has
        self.run: Any = None  # the run as read once the lease was taken (acquire)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, name="rnnlab-lease", daemon=True)
        self._thread.start()

    @classmethod
    def for_new_run(cls, client: Any, *, uri: str, run_id: str, holder: Holder) -> Lease:
        """The lease of a run just created with ``holder`` in its tags (nobody else knows it)."""
        path = lock_path(uri, run_id)
        fd = take_os_lock(path, reserve=True, pid=holder.pid) if path else None
        return cls(client, run_id, holder, fd)

    @classmethod
    def acquire(cls, client: Any, *, uri: str, run: Any, heartbeat_s: float, force: bool) -> Lease:
        """Take ``run``'s lease, or a :class:`TrackingError` naming the live holder. The run is
        read again once the OS lock is held (:attr:`run`): the last holder may have just
        ended it."""
        run_id, name = run.info.run_id, run.info.run_name
        path = lock_path(uri, run_id)
        fd = take_os_lock(path, reserve=True) if path is not None else None
        if path is not None and fd is None:
            fd = take_handed_over_lock(path)
        run = client.get_run(run_id)
        current = Holder.parse(run.data.tags.get(LEASE_TAG))
        locked_out = path is not None and fd is None
        if locked_out:
            alive, who = True, lock_owner(path)
        elif current is not None and path is not None and current.host == HOST:
            alive = False  # we hold the OS lock, so the holder on this machine is dead
        else:
            alive = current is not None and not current.stale()
        if alive and not force:
            release_os_lock(fd)
            if not locked_out:
                who = current.describe()
            raise busy_error(run_id, name, who)
        holder = Holder.new(heartbeat_s)
        client.set_tag(run_id, LEASE_TAG, holder.to_tag())
        run = client.get_run(run_id)
        written = Holder.parse(run.data.tags.get(LEASE_TAG))
        if written is None or written.token != holder.token:  # lost a race for the tag
            release_os_lock(fd)
            raise busy_error(run_id, name, written.describe() if written else "another process")
        lease = cls(client, run_id, holder, fd)
        lease.run = run
        hold_point("lease.acquired")  # tests of rival writers hold the winner here
        return lease

    def _beat(self) -> None:
        """Refresh the heartbeat; notice when another process has taken the lease."""
        while not self._stop.wait(self.holder.every_s):
            try:
                tag = self.client.get_run(self.run_id).data.tags.get(LEASE_TAG)
                current = Holder.parse(tag)
                if current is None or current.token != self.holder.token:
                    self.lost = current.describe() if current else "a process that removed it"
                    return
                self.holder = replace(self.holder, heartbeat=time.time())
                self.client.set_tag(self.run_id, LEASE_TAG, self.holder.to_tag())
            except Exception as exc:  # a busy or flaky store: the next beat tries again, and
                log.debug("lease heartbeat failed: %s", exc)  # the writer sees real failures

    def check(self) -> None:
        """Raise :class:`LeaseLost` once another process has taken the lease."""
        if self.lost is not None:
            raise LeaseLost(
                f"Run {self.run_id} was taken over by {self.lost} (resume=... force=true); "
                "this process stopped writing it",
                "Nothing to do here: the other process continues the run",
            )

    def free_reserve(self) -> None:
        """Give back the disk reserve (the run's failure is about to be recorded)."""
        if self.fd is not None:
            os.ftruncate(self.fd, 0)

    def release(self) -> None:
        """Stop the heartbeat, remove the tag if it is still ours, drop the OS lock."""
        self._stop.set()
        if self._thread is not threading.current_thread():
            self._thread.join(timeout=5)
        if self.lost is None:
            with contextlib.suppress(Exception):  # a failing store: the lease goes stale
                tag = self.client.get_run(self.run_id).data.tags.get(LEASE_TAG)
                current = Holder.parse(tag)
                if current is not None and current.token == self.holder.token:
                    self.client.delete_tag(self.run_id, LEASE_TAG)
        self.free_reserve()
        release_os_lock(self.fd)
        self.fd = None
