"""Worker processes that leave Ctrl-C to the command that started them.

Ctrl-C sends SIGINT to the terminal's whole process group: the ``ems`` command (which stops cleanly,
one line, exit 130: :mod:`ems.cli`) and its worker processes (the daemon's solver process). A
worker started with the ``spawn`` method takes a second or two to import the project before its
initializer can ignore SIGINT, and an interrupt meanwhile printed a ``KeyboardInterrupt``
traceback from the worker. The processes of :func:`quiet_spawn_context` start with SIGINT blocked
(the signal mask is inherited through fork and exec), so no interrupt reaches them; they stop when
the command tells them, or when it ends.
"""

from __future__ import annotations

import multiprocessing.context
import signal


class QuietSpawnProcess(multiprocessing.context.SpawnProcess):
    """A ``spawn`` process that starts with SIGINT blocked (the starting thread's mask is restored at once)."""

    def start(self) -> None:
        before = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
        try:
            super().start()
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, before)


class QuietSpawnContext(multiprocessing.context.SpawnContext):
    """The ``spawn`` start method with :class:`QuietSpawnProcess` (for ``ProcessPoolExecutor(mp_context=...)``)."""

    Process = QuietSpawnProcess


def quiet_spawn_context() -> QuietSpawnContext:
    """A multiprocessing context whose processes never see Ctrl-C."""
    return QuietSpawnContext()
