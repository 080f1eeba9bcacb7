"""The daemon's weather forecast (:class:`WeatherFeed`): Open-Meteo fetched into the store's cache.

The service's ``weather`` job (every ``daemon.weather.every_hours`` real hours, the first at start;
only on the wall clock, because the forecast is for the real now, and only with
``daemon.weather.fetch``) calls :meth:`WeatherFeed.refresh`: one request to ``daemon.weather.url``
with ``models`` (``jma_seamless`` for Japan), ``forecast_days`` and ``past_days``, in a worker
thread, each connect and read given up after ``timeout_s``. The answer's hours are cached (table
``weather_forecasts``: each hour keeps the latest fetch's values) and the forecaster is rebuilt with
them at the next forecast (:mod:`ems.daemon.learning`).

A fetch that fails (:class:`~ems.forecast.weather.FetchFault`: ``timeout``, ``unreachable``,
``http-error``, ``bad-response``) leaves the cache as it is: the PV forecast uses the cached hours
that still cover its horizon and clear sky x the measured clearness beyond them. One
``weather-fallback`` event (warning) when fetching starts to fail, none for the failures after it,
one ``weather-recovered`` when a fetch works again. The state ``weather`` holds the last fetch:
when, its result, and until when the cache covers.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pandas as pd

from ems.daemon.host import Host
from ems.daemon.learning import Learning
from ems.store import record_weather

log = logging.getLogger(__name__)

#: The state key of the last fetch's outcome.
WEATHER_STATE = "weather"


class WeatherFeed:
    """Fetches and caches the weather forecast; tells the events when fetching fails and recovers."""

    def __init__(self, host: Host, learning: Learning):
        self.host = host
        self.learning = learning
        self.fault: Any = None            # the FetchFault of the failure in progress (None: the last fetch worked)
        self.failed_since: pd.Timestamp | None = None
        self.fetches = 0
        self.failures = 0

    async def refresh(self) -> bool:
        """Fetch and cache a forecast; True when it worked. Never raises for a failed fetch."""
        from ems.forecast.weather import WeatherFetchError, fetch_site_weather
        cfg = self.host.cfg
        if not cfg.daemon.weather.fetch:   # turned off by a config reload since the job was scheduled
            return False
        url = cfg.daemon.weather.url
        self.fetches += 1
        try:
            data, meta = await asyncio.to_thread(fetch_site_weather, cfg)
        except WeatherFetchError as exc:
            self._failed(exc)
            return False
        now = self.host.clock.now()
        hours = record_weather(self.host.store, data, now, meta.get("models"))
        until = (data.index[-1] + pd.Timedelta(hours=1)).isoformat() if len(data) else None
        self.host.store.set_state(WEATHER_STATE, {"fetched_at": now.isoformat(), "ok": True, "url": url, "hours": hours,
                                                  "models": meta.get("models"), "covers_until": until})
        self.learning.weather_arrived()
        if self.fault is not None:
            since = self.failed_since
            self.host.event("weather-recovered", f"weather forecast fetched again from {url} ({hours} h to {until}) after "
                            f"{self.failures} failed fetch(es) since {since.isoformat() if since else '?'}: the PV "
                            "forecast uses it from the next forecast", previous_fault=self.fault.value,
                            url=url, failures=self.failures)
        self.fault, self.failed_since, self.failures = None, None, 0
        return True

    def _failed(self, exc: Any) -> None:
        """A failed fetch: one ``weather-fallback`` event when failing starts, a log line for each."""
        now = self.host.clock.now()
        self.failures += 1
        state = self.host.store.get_state(WEATHER_STATE) or {}
        until = state.get("covers_until")
        self.host.store.set_state(WEATHER_STATE, {**state, "ok": False, "failed_at": now.isoformat(), "fault": exc.fault.value,
                                                  "error": exc.message, "url": exc.url})
        if self.fault is not None:
            log.warning("weather fetch failed again (%s): %s", exc.fault.value, exc.message)
            self.fault = exc.fault
            return
        self.fault, self.failed_since = exc.fault, now
        cover = f"the cached forecast (to {until}) where it still covers the horizon, " if until else ""
        self.host.event("weather-fallback", f"weather forecast not fetched from {exc.url} ({exc.fault.value}: "
                        f"{exc.message}): the PV forecast uses {cover}clear sky x the measured clearness "
                        f"{'beyond it' if until else 'instead'}; retried every {self.host.cfg.daemon.weather.every_hours:g} h",
                        "warning", fault=exc.fault.value, url=exc.url, cache_until=until)
