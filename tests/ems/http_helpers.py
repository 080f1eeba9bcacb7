"""Helpers for the tests of the daemon's web page and API: a site copy whose daemon serves on a free
port with a token, and real HTTP requests (urllib, in a worker thread so the daemon's loop, which
serves them, keeps running), and :class:`RunningDaemon`: the service serving in a thread of its own
(the browser test, the ``ems status`` tests, bench/screenshots.py)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from collections.abc import AsyncIterator
from typing import Any

import pandas as pd

from ems.config import SiteConfig, load_site
from ems.daemon import Daemon, Service
from tests.ems.daemon_helpers import site_copy

TOKEN = "test-token-0123456789abcdef"
#: Debian's headless browser and its WebDriver (``chromium``, ``chromium-driver``; None when not installed)
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
DRIVER = shutil.which("chromedriver")
#: the page's two widths: a phone's viewport, a desktop window [CSS px]
PHONE, DESKTOP = (390, 844), (1280, 900)


def http_site(tmp_path: Path, name: str = "home-v2h", http: str = f"{{port: 0, token: {TOKEN}}}") -> SiteConfig:
    """The example site ``name`` in ``tmp_path`` with ``daemon.http`` set to ``http`` (YAML flow mapping)."""
    return load_site(site_copy(tmp_path, name, **{"^daemon:\n": f"daemon:\n  http: {http}\n"}))


def request(url: str, body: Any = None, method: str | None = None, token: str | None = None,
            raw: bytes | None = None) -> tuple[int, dict[str, str], bytes]:
    """(status, headers, body) of one HTTP request; ``body`` is sent as JSON (``raw`` as given)."""
    data = raw if raw is not None else None if body is None else json.dumps(body).encode()
    headers = {"Content-Type": "application/json"} if data is not None else {}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    req = urllib.request.Request(url, data=data, method=method, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, dict(r.headers), r.read()
    except urllib.error.HTTPError as e:
        with e:
            return e.code, dict(e.headers), e.read()


async def call(url: str, body: Any = None, method: str | None = None, token: str | None = None,
               raw: bytes | None = None) -> tuple[int, Any]:
    """:func:`request` from a worker thread; (status, the body as JSON, else as text)."""
    status, _, data = await asyncio.to_thread(request, url, body, method, token, raw)
    try:
        return status, json.loads(data)
    except ValueError:
        return status, data.decode()


@contextlib.asynccontextmanager
async def serving(svc: Service) -> AsyncIterator[tuple[str, Daemon]]:
    """The service started with its web server: (the page's URL, the daemon); both stopped after."""
    async with svc:
        assert await svc.start_http()
        assert svc.http is not None and svc.http.url is not None and svc.daemon is not None
        yield svc.http.url, svc.daemon


class RunningDaemon:
    """The service's ``serve`` until ``until`` (simulated) on its own event loop in a thread, as ``ems run``
    runs it, until :meth:`__exit__` stops it cleanly; entering returns the page's URL once it serves."""

    def __init__(self, svc: Service, until: pd.Timestamp):
        self.svc = svc
        self.until = until
        self.loop: asyncio.AbstractEventLoop | None = None
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, name="daemon-under-test")

    def _run(self) -> None:
        async def main() -> None:
            self.loop = asyncio.get_running_loop()
            async with self.svc:
                await self.svc.serve(self.until)
        try:
            asyncio.run(main())
        except BaseException as exc:  # noqa: BLE001 - reported by the test
            self.error = exc

    def __enter__(self) -> str:
        self.thread.start()
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and self.error is None:
            if self.svc.http is not None and self.svc.http.url:
                return self.svc.http.url
            time.sleep(0.05)
        raise AssertionError(f"the daemon did not serve: {self.error!r}")

    def __exit__(self, *exc: object) -> None:
        if self.loop is not None:
            self.loop.call_soon_threadsafe(self.svc.stop)
        self.thread.join(60)
        assert not self.thread.is_alive() and self.error is None, self.error


def headless_chromium(width: int, height: int, lang: str = "en-US") -> Any:
    """Headless Chromium (:data:`CHROMIUM`, :data:`DRIVER`) under Selenium with a ``width`` x ``height`` window."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service as DriverService

    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", f"--lang={lang}",
                f"--window-size={width},{height}"):
        opts.add_argument(arg)
    return webdriver.Chrome(options=opts, service=DriverService(executable_path=DRIVER))


def wait_for(predicate: Any, timeout_s: float = 30.0, what: str = "") -> Any:
    """``predicate()``'s value once it is true (polled every 0.1 s); AssertionError after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")
