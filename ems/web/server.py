"""uvicorn on the daemon's own event loop (:class:`HttpServer`).

The socket is bound here (so a port in use is an ``http-failed`` event and the daemon goes on
controlling the site without its page), then served by ``uvicorn.Server.serve`` as a task of the
loop the scheduler's jobs run on: a request handler sees the daemon between two awaits of a job,
never in the middle of one, and takes the daemon's I/O lock for a write. uvicorn's own signal
handling is switched off: SIGINT, SIGTERM and SIGHUP stay the service's.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import Iterator
from typing import TYPE_CHECKING

import uvicorn

from ems.web.app import create_app

if TYPE_CHECKING:
    from ems.daemon.core import Daemon

log = logging.getLogger(__name__)

#: Longest wait for uvicorn to start serving, or for its open connections to close at stop [real s].
START_TIMEOUT_S = 10.0
STOP_TIMEOUT_S = 5.0


class _Server(uvicorn.Server):
    """uvicorn without its signal handlers (the daemon's service owns the signals)."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


class HttpServer:
    """The page, API and metrics of one daemon on ``daemon.http.listen``:``port`` (0: a free port)."""

    def __init__(self, daemon: Daemon):
        self.daemon = daemon
        self.port: int | None = None
        self._server: _Server | None = None
        self._task: asyncio.Task | None = None

    @property
    def url(self) -> str | None:
        """Where the page is (``http://127.0.0.1:8080/``), None while not serving."""
        if self.port is None:
            return None
        host = self.daemon.cfg.daemon.http.listen
        host = f"[{host}]" if ":" in host else "127.0.0.1" if host in ("0.0.0.0", "localhost") else host
        return f"http://{host}:{self.port}/"

    async def start(self) -> bool:
        """Bind and serve; False (an ``http-failed`` event, the daemon runs on) when the address cannot be used."""
        section = self.daemon.cfg.daemon.http
        family = socket.AF_INET6 if ":" in section.listen else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((section.listen, section.port))
        except OSError as exc:
            sock.close()
            self.daemon.event("http-failed", f"web page and API not served: cannot listen on {section.listen}:{section.port}: "
                                             f"{exc.strerror or exc}; the daemon runs on without them (daemon.http)", "error")
            return False
        self.port = sock.getsockname()[1]
        config = uvicorn.Config(create_app(self.daemon), log_level="warning", access_log=False, lifespan="off",
                                server_header=False, proxy_headers=False, timeout_graceful_shutdown=STOP_TIMEOUT_S)
        self._server = _Server(config)
        self._task = asyncio.create_task(self._server.serve(sockets=[sock]), name="ems-http")
        for _ in range(int(START_TIMEOUT_S / 0.01)):
            if self._server.started or self._task.done():
                break
            await asyncio.sleep(0.01)
        if not self._server.started:
            await self.stop()
            sock.close()
            self.daemon.event("http-failed", f"web page and API did not start on {section.listen}:{self.port}", "error")
            return False
        writes = "writes need the bearer token" if section.token else "read only: no daemon.http.token"
        self.daemon.event("http", f"web page and API at {self.url} ({writes})", url=self.url)
        return True

    async def stop(self) -> None:
        """Stop serving (open requests get STOP_TIMEOUT_S to finish). Safe to call more than once."""
        if self._server is None or self._task is None:
            return
        self._server.should_exit = True
        try:
            await asyncio.wait_for(asyncio.shield(self._task), STOP_TIMEOUT_S + 1)
        except asyncio.TimeoutError:
            self._server.force_exit = True
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        self._server = self._task = None
        self.port = None
