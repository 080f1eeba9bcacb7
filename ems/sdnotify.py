"""systemd service notifications (``sd_notify(3)``) without a dependency.

``deploy/ems.service`` is ``Type=notify`` with ``WatchdogSec=``: the daemon says ``READY=1`` once its
jobs are scheduled, ``WATCHDOG=1`` from its event loop about once a second (a loop that hangs stops
the pings, and systemd restarts the service), and ``STOPPING=1`` when it shuts down. A message is one
datagram to the unix socket named by ``$NOTIFY_SOCKET`` (an abstract socket when the name starts
with ``@``); without that variable (not under systemd, or ``Type=simple``) nothing is sent.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping


def notify(state: str, env: Mapping[str, str] | None = None) -> bool:
    """Send ``state`` (``"READY=1"``, ``"WATCHDOG=1"``, ``"STOPPING=1"`` ...) to systemd; True if sent.
    Never raises: a notification that cannot be sent must not stop the daemon."""
    path = (os.environ if env is None else env).get("NOTIFY_SOCKET", "")
    if not path:
        return False
    address = "\0" + path[1:] if path.startswith("@") else path
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.connect(address)
            sock.sendall(state.encode())
    except OSError:
        return False
    return True
