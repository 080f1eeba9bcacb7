"""One controller per database and per device: exclusive ``flock`` files holding the holder's pid.

Two daemons driving one V2H unit would fight over its setpoint, and two writing one database would
mix their month peaks. :func:`hold` takes an exclusive, non-blocking ``flock`` on a lock file and
writes this process's pid into it; the kernel releases it when the process ends, however it ends
(``kill -9`` included), so a stale file never blocks a restart. :func:`claim_devices` takes one
lock per device address of a site (Modbus TCP host:port and unit, serial port and unit, ECHONET
Lite node and object) in a lock folder shared by every user of the machine. This only sees
controllers on the same machine: a second gateway on the network is not detected.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class LockHeld(Exception):
    """The lock at ``path`` is held by process ``holder`` (its pid as written, or "unknown")."""

    path: Path
    holder: str


def hold(path: Path, note: str = "") -> int:
    """An exclusive flock on ``path`` (created if missing) with ``pid note`` written in it; returns
    the open descriptor (close it to release). LockHeld when another process holds it."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        text = os.pread(fd, 64, 0).decode("ascii", "replace").split()
        os.close(fd)
        raise LockHeld(path, text[0] if text else "unknown") from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()} {note}\n".encode(), 0)
    return fd


def lock_folder() -> Path:
    """Where device locks live: ``$EMS_LOCK_DIR``, else ``/run/lock/ems`` when it can be written
    (Debian's shared lock folder), else ``ems-locks`` in the temporary folder; created if missing."""
    for where in (os.environ.get("EMS_LOCK_DIR"), "/run/lock/ems"):
        if where:
            try:
                Path(where).mkdir(mode=0o1777, parents=True, exist_ok=True)
                if os.access(where, os.W_OK):
                    return Path(where)
            except OSError:
                continue
    folder = Path(tempfile.gettempdir()) / "ems-locks"
    folder.mkdir(mode=0o1777, exist_ok=True)
    return folder


def device_lock_path(key: tuple) -> Path:
    """The lock file of one device address (a short hash of its normalised key)."""
    digest = hashlib.sha256(repr(key).encode()).hexdigest()[:16]
    return lock_folder() / f"device-{digest}.lock"


def claim(keys: list[tuple[tuple, str]]) -> list[int]:
    """Hold the lock of every (device key, shown address); all or none (LockHeld names the first
    held, with its ``shown`` address as the note of the holder's file)."""
    fds: list[int] = []
    try:
        for key, shown in keys:
            fds.append(hold(device_lock_path(key), shown))
    except LockHeld:
        release(fds)
        raise
    return fds


def release(fds: list[int]) -> None:
    """Close lock descriptors (releases their flocks)."""
    for fd in fds:
        os.close(fd)
