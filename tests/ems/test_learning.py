"""Forecasts that learn from the site's meter (ems.daemon.learning), the weather fetch and its cache
(ems.daemon.weather, served by a local HTTP server from a recorded-format response, never the
network), and the bounded store (retention and compaction)."""

from __future__ import annotations

import http.server
import json
import socket
import sqlite3
import threading
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from adapters import MeterReading
from ems.cli import main
from ems.config import load_site
from ems.daemon.learning import (DAY_AHEAD_LEAD, SiteEnergy, forecast_quality, learned_history)
from ems.daemon.readings import MeterQuality
from ems.forecast.weather import FetchFault, WeatherFetchError, get_open_meteo
from ems.store import TELEMETRY, Store, cached_weather, compact, record_day_ahead, record_site_energy, site_energy
from tests.ems.daemon_helpers import constant_replay, manual_service, run, site_copy

pytestmark = pytest.mark.timeout(180)

DATA = Path(__file__).resolve().parent / "data"
RECORDED = DATA / "open-meteo-jma-nagoya.json"     # a constructed response in Open-Meteo's format (data/README.md)
START = "2024-07-08T19:00+09:00"                   # Monday evening: the home's Leaf is plugged in
T0 = pd.Timestamp("2024-07-01T00:00+09:00")


# ----- a local weather server ------------------------------------------------------------------------

class _Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:   # noqa: N802 (http.server's name)
        status, body = self.server.answer  # type: ignore[attr-defined]
        self.server.paths.append(self.path)  # type: ignore[attr-defined]
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def weather_server():
    """``(url, server)``: an HTTP server on loopback answering every GET with ``server.answer``
    (status, body), by default the recorded response; ``server.paths`` lists the requests."""
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    srv.answer = (200, RECORDED.read_bytes())
    srv.paths = []
    thread = threading.Thread(target=srv.serve_forever, name="weather-server", daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{srv.server_address[1]}/v1/forecast", srv
    srv.shutdown()
    srv.server_close()
    thread.join()


def _dead_url() -> str:
    """A loopback URL nobody listens on (connection refused at once)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/v1/forecast"


def _seeded_home(tmp_path: Path, until: str = START, **replace: str) -> Path:
    """The home site whose history file stops at ``until`` (the meter must teach it the rest)."""
    cfg = load_site(site_copy(tmp_path))
    raw = pd.read_csv(cfg.load.history_csv)
    seed = tmp_path / "seed.csv"
    raw[pd.to_datetime(raw["timestamp"], format="ISO8601") < pd.Timestamp(until)].to_csv(seed, index=False)
    return site_copy(tmp_path, **{r"history_csv: \S+": f"history_csv: {seed}", **replace})


# ----- the meter's windows -----------------------------------------------------------------------------

def _unit(charge_kw: float, discharge_kw: float = 0.0) -> SimpleNamespace:
    return SimpleNamespace(state=SimpleNamespace(charge_kw=charge_kw, discharge_kw=discharge_kw))


def test_a_window_meters_import_export_and_the_units_so_load_minus_pv_is_exact():
    energy = SiteEnergy("Asia/Tokyo")
    reading = MeterReading("meter", 5.0, 0.0, None, None, None, True)
    out = []
    for k in range(7):   # ticks every 5 minutes from 00:00 to 00:30: one whole window
        out += energy.update(T0 + pd.Timedelta(minutes=5 * k), reading, [_unit(2.0), _unit(0.0, 0.5)], MeterQuality.GOOD, True)
    [(start, values, flags)] = out
    assert start == T0 and flags == []
    assert values == pytest.approx({"import_kwh": 2.5, "export_kwh": 0.0, "charge_kwh": 1.0, "discharge_kwh": 0.25})
    # the building took 5 - 0 - 2 + 0.5 = 3.5 kW from the grid and the cars (plus whatever PV it had)
    assert values["import_kwh"] - values["export_kwh"] - values["charge_kwh"] + values["discharge_kwh"] == pytest.approx(1.75)


def test_a_window_is_flagged_when_the_meter_is_lost_a_unit_is_silent_or_it_was_not_seen_whole():
    energy = SiteEnergy("Asia/Tokyo")
    ok = MeterReading("meter", 5.0, 0.0, None, None, None, True)
    ticks = [(10, ok, [_unit(1.0)], MeterQuality.GOOD, True),        # starts mid-window: 00:00-00:10 unseen
             (30, ok, [_unit(1.0)], MeterQuality.GOOD, True),
             (40, None, [_unit(1.0)], MeterQuality.LOST, True),      # meter lost in the second window
             (60, ok, [_unit(1.0)], MeterQuality.GOOD, True),
             (70, ok, [SimpleNamespace(state=None)], MeterQuality.GOOD, True),   # a unit silent in the third
             (90, ok, [_unit(1.0)], MeterQuality.GOOD, True),
             (100, ok, [_unit(1.0)], MeterQuality.GOOD, False),      # grid down in the fourth
             (120, ok, [_unit(1.0)], MeterQuality.GOOD, True)]
    out = []
    for minute, reading, units, quality, grid in ticks:
        out += energy.update(T0 + pd.Timedelta(minutes=minute), reading, units, quality, grid)
    assert [flags for _, _, flags in out] == [["partial"], ["samples-missing"], ["samples-missing"], ["grid-down"]]


def _energy_rows(index: pd.DatetimeIndex, load_kw: np.ndarray, flags: list[str] | None = None) -> pd.DataFrame:
    kwh = load_kw * 0.5
    return pd.DataFrame({"import_kwh": kwh, "export_kwh": 0.0, "charge_kwh": 0.0, "discharge_kwh": 0.0, "pv_kwh": 0.0,
                         "load_kwh": kwh, "pv_source": "none", "flags": flags or [""] * len(index)}, index=index)


def test_the_history_is_the_seed_where_it_has_load_and_the_meter_elsewhere():
    seed_index = pd.date_range("2024-06-01", "2024-07-01", freq="30min", tz="UTC", inclusive="left")
    seed = pd.DataFrame({"load_kw": 2.0, "pv_kw": 0.0}, index=seed_index)
    seed.iloc[10:12, 0] = np.nan                                  # a gap in the seed
    seed.attrs["step"] = pd.Timedelta(minutes=30)
    covered = _energy_rows(seed_index[8:14], np.full(6, 7.0))     # the meter saw the gap and around it
    assert learned_history(seed, covered.iloc[[0, 1, 4, 5]]) is seed   # nothing the seed lacks: untouched
    after = pd.date_range("2024-07-01", periods=4, freq="30min", tz="UTC")
    energy = pd.concat([covered, _energy_rows(after, np.array([3.0, 4.0, 5.0, 6.0]), ["", "partial", "", ""])])
    h = learned_history(seed, energy)
    assert h.loc[seed_index[9], "load_kw"] == 2.0                 # the seed wins where it has a reading
    assert list(h.loc[seed_index[10:12], "load_kw"]) == [7.0, 7.0]  # the meter fills its gap
    tail = h.loc[after, "load_kw"]
    assert tail.iloc[0] == 3.0 and np.isnan(tail.iloc[1]) and list(tail.iloc[2:]) == [5.0, 6.0]   # flagged: missing
    fifteen = seed.resample("15min").ffill()
    fifteen.attrs = {}
    grid = learned_history(fifteen, energy).index.as_unit("ns").asi8
    assert (np.diff(grid) == 30 * 60 * 10**9).all()              # a 15-min seed put on the windows' grid


def test_the_files_bad_data_rules_apply_to_the_metered_windows(tmp_path):
    from ems.forecast import SiteForecaster
    cfg = load_site(site_copy(tmp_path, "office-v2b"))
    seed_index = pd.date_range("2024-05-01", "2024-06-01", freq="30min", tz="UTC", inclusive="left")
    seed = pd.DataFrame({"load_kw": 20.0 + 5 * np.sin(np.arange(len(seed_index)) / 7), "pv_kw": 0.0}, index=seed_index)
    after = pd.date_range("2024-06-01", periods=12 * 48, freq="30min", tz="UTC")
    load = 20.0 + 5 * np.sin(np.arange(len(after)) / 5)
    load[100] = 900.0          # over 4x the trailing p99 and the site's physical limit: a spike
    load[200:212] = 17.5       # 6 h of identical half hours: a stuck meter from the 4th hour on
    load[300] = 0.0            # a building never draws exactly 0
    sf = SiteForecaster(cfg, learned_history(seed, _energy_rows(after, load)))
    rep = sf.history.report["load_kw"]
    assert (rep["spike"], rep["stuck"], rep["zero_as_missing"]) == (1, 5, 1)
    pos = sf.history.index.get_indexer(after[[100, 210, 300]])
    assert np.isnan(sf.history.load_kw[pos]).all()


def test_closed_windows_reach_the_forecasters_history_with_the_metered_load(tmp_path):
    home = load_site(_seeded_home(tmp_path))
    svc, clock = manual_service(home, START, initial_soc_pct=40, replay=constant_replay(tmp_path, START, 2, 3.0))

    async def scenario():
        async with svc:
            d = svc.daemon
            before = d.plans.forecasts._forecaster.history
            assert before.index[-1] < pd.Timestamp(START)            # the history file stops at the start
            for _ in range(121):                                     # 19:00-21:00, a tick a minute
                await d.dispatch_once()
                clock.timeleap(60)
            await d.plan_once()
            energy = site_energy(svc.store)
            assert len(energy) == 4 and (energy["flags"] == "").all() and (energy["pv_source"] == "clear-sky").all()
            assert energy["load_kwh"].to_numpy() == pytest.approx(np.full(4, 1.5), abs=0.03)   # 3 kW, night: no PV
            h = d.plans.forecasts._forecaster.history
            rows = h.index.get_indexer(energy.index)
            assert (rows >= 0).all() and h.load_kw[rows] == pytest.approx(np.full(4, 3.0), abs=0.06)
            fc = d.plans.forecasts.forecast
            assert fc.meta["history_end"] == str(energy.index[-1])
            assert fc.meta["level_offset_kw"] != 0.0                 # the last hour's level came from the meter
    run(scenario())


def test_live_quality_is_the_day_ahead_mae_against_persistence(tmp_path):
    with Store(str(tmp_path / "q.sqlite")) as store:
        idx = pd.date_range(T0, periods=8 * 48, freq="30min").tz_convert("UTC")
        day = np.arange(len(idx)) // 48
        actual = 10.0 + day                                     # a kW more every day: persistence is 1 kW off
        for t, kw in zip(idx, actual):
            record_site_energy(store, t, {"import_kwh": kw * 0.5, "export_kwh": 0.0, "charge_kwh": 0.0,
                                          "discharge_kwh": 0.0, "pv_kwh": 0.0, "load_kwh": kw * 0.5, "pv_source": "none"}, [], t)
        for t, kw in zip(idx[48:], actual[48:]):               # day-ahead forecasts 0.25 kW high
            record_day_ahead(store, t - DAY_AHEAD_LEAD, t, kw + 0.25, 0.0)
        q = forecast_quality(store, idx[-1] + pd.Timedelta(minutes=30))
    assert q["load"] == pytest.approx({"mae_kw": 0.25, "persistence_mae_kw": 1.0, "skill": 0.75, "samples": 7 * 48})
    assert q["net"]["mae_kw"] == pytest.approx(0.25) and q["pv_source"] == {"none": 8 * 48}


def test_status_shows_the_live_quality_the_weather_and_the_store_size(tmp_path, capsys):
    path = _seeded_home(tmp_path)
    cfg = load_site(path)
    with Store(cfg.daemon.database) as store:
        store.set_state("forecast_quality", {"days": 7, "lead_h": 23.5, "computed_at": "x", "pv_source": {"clear-sky": 3},
                                             "load": {"mae_kw": 0.42, "persistence_mae_kw": 0.6, "skill": 0.3, "samples": 300},
                                             "net": {"mae_kw": 0.5, "persistence_mae_kw": 0.7, "skill": 2 / 7, "samples": 300}})
    assert main(["status", "--config", str(path)]) == 0
    text = capsys.readouterr().out
    assert "load: MAE 0.42 kW, persistence 0.60 kW, skill +30% (300 windows)" in text and "store: " in text
    assert main(["status", "--config", str(path), "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["forecast_quality"]["load"]["mae_kw"] == 0.42 and doc["store_mb"] > 0


# ----- weather ----------------------------------------------------------------------------------------

def test_get_open_meteo_asks_for_the_jma_model_and_parses_the_answer(weather_server):
    url, srv = weather_server
    data, meta = get_open_meteo(35.17, 136.91, url=url, timeout_s=5)
    assert len(data) == 96 and {"ghi", "dni", "dhi", "temp_air", "wind_speed"} <= set(data.columns)
    assert data.index[0] == pd.Timestamp("2024-07-06T23:00Z")   # the first hour's radiation is the hour before 00:00
    assert "models=jma_seamless" in srv.paths[0] and "timezone=GMT" in srv.paths[0] and meta["models"] == "jma_seamless"


@pytest.mark.parametrize(("answer", "fault"), [
    ((500, b'{"error": true, "reason": "Cannot initialize WeatherVariable"}'), FetchFault.HTTP_ERROR),
    ((200, b"<html>captive portal</html>"), FetchFault.BAD_RESPONSE),
    ((200, b'{"hourly": {"time": ["2024-07-07T00:00"]}}'), FetchFault.BAD_RESPONSE),
])
def test_a_bad_answer_is_a_typed_fetch_error(weather_server, answer, fault):
    url, srv = weather_server
    srv.answer = answer
    with pytest.raises(WeatherFetchError) as err:
        get_open_meteo(35.17, 136.91, url=url, timeout_s=5)
    assert err.value.fault is fault


def test_no_answer_within_the_timeout_is_a_timeout():
    with socket.socket() as s:   # accepts the connection (the backlog) and never answers
        s.bind(("127.0.0.1", 0))
        s.listen(1)
        url = f"http://127.0.0.1:{s.getsockname()[1]}/v1/forecast"
        with pytest.raises(WeatherFetchError) as err:
            get_open_meteo(35.17, 136.91, url=url, timeout_s=0.3)
    assert err.value.fault is FetchFault.TIMEOUT
    with pytest.raises(WeatherFetchError) as err:
        get_open_meteo(35.17, 136.91, url=_dead_url(), timeout_s=0.3)
    assert err.value.fault is FetchFault.UNREACHABLE


def test_the_weather_job_fills_the_cache_the_forecast_uses_it_and_offline_falls_back_once(tmp_path, weather_server):
    url, _ = weather_server
    home = load_site(_seeded_home(tmp_path, "2024-07-09T12:00+09:00", **{"^daemon:\n": f"daemon:\n  weather: {{url: '{url}'}}\n"}))
    svc, clock = manual_service(home, "2024-07-09T10:00+09:00", initial_soc_pct=60)

    def with_url(d, u: str) -> None:
        d.cfg = d.cfg.model_copy(update={"daemon": d.cfg.daemon.model_copy(
            update={"weather": d.cfg.daemon.weather.model_copy(update={"url": u, "timeout_s": 2.0})})})

    async def scenario():
        async with svc:
            d = svc.daemon
            assert d.plans.forecasts.forecast.meta["pv_source"] != "weather"
            assert await d.refresh_weather()
            cached = cached_weather(svc.store)
            assert len(cached) == 96 and cached["ghi"].max() == pytest.approx(807.0)
            clock.timeleap(1800)
            await d.refresh_forecast()
            fc = d.plans.forecasts.forecast
            assert fc.meta["pv_source"] == "weather"   # 49 h from 01:30Z on the 9th; the cache ends at 23:00Z on the 10th
            assert fc.meta["pv_intervals_without_weather"] == 7
            with_url(d, _dead_url())
            assert not await d.refresh_weather() and not await d.refresh_weather()
            fallback = svc.store.events(kind="weather-fallback")
            assert len(fallback) == 1 and fallback[0]["data"]["fault"] == "unreachable" and fallback[0]["severity"] == "warning"
            assert len(cached_weather(svc.store)) == 96                       # the cache is kept
            assert svc.store.get_state("weather")["ok"] is False
            with_url(d, url)
            assert await d.refresh_weather()
            recovered = svc.store.events(kind="weather-recovered")
            assert len(recovered) == 1 and recovered[0]["data"]["previous_fault"] == "unreachable"
            assert len(svc.store.events(kind="weather-fallback")) == 1
    run(scenario())


def test_ems_forecast_fetch_uses_the_weather_or_falls_back_with_a_note(tmp_path, weather_server, capsys):
    url, _ = weather_server
    args = ["forecast", "--hours", "24", "--start", "2024-07-08T00:00+09:00", "--fetch", "--json"]
    ok = site_copy(tmp_path, **{"^daemon:\n": f"daemon:\n  weather: {{url: '{url}'}}\n"})
    assert main([*args, "--config", str(ok)]) == 0
    out = capsys.readouterr()
    assert json.loads(out.out)["meta"]["pv_source"] == "weather" and "weather fetched from" in out.err
    dead = tmp_path / "dead"
    dead.mkdir()
    bad = site_copy(dead, **{"^daemon:\n": f"daemon:\n  weather: {{url: '{_dead_url()}', timeout_s: 1}}\n"})
    assert main([*args, "--config", str(bad)]) == 0
    out = capsys.readouterr()
    assert json.loads(out.out)["meta"]["pv_source"] != "weather" and "(unreachable:" in out.err


def test_the_weather_section_defaults_and_limits(tmp_path):
    cfg = load_site(site_copy(tmp_path))
    w = cfg.daemon.weather
    assert (w.fetch, w.every_hours, w.timeout_s, w.models) == (True, 3.0, 10.0, "jma_seamless")
    assert cfg.daemon.retention_days == 14
    from ems.errors import ConfigError
    with pytest.raises(ConfigError, match="daemon.weather.url"):
        load_site(site_copy(tmp_path, **{"^daemon:\n": "daemon:\n  weather: {url: 'ftp://x'}\n"}))


# ----- the bounded store ---------------------------------------------------------------------------------

def _fill(store: Store, days: int, devices: int = 3, every_s: int = 60) -> None:
    """``days`` of ticks (one telemetry row per device every ``every_s``) and of 30-minute windows."""
    ticks = pd.date_range(T0, periods=days * 86400 // every_s, freq=f"{every_s}s")
    rows = [{"ts": t.tz_convert("UTC").isoformat(), "device": f"v2b{k}", "plugged": True, "soc_kwh": 30.0, "charge_kw": 1.0,
             "discharge_kw": 0.0, "setpoint_charge_kw": 1.0, "setpoint_discharge_kw": 0.0, "site_import_kw": 20.0,
             "grid_up": True, "reason": "plan"} for t in ticks for k in range(devices)]
    with store.engine.begin() as con:
        con.execute(TELEMETRY.insert(), rows)
    for t in pd.date_range(T0, periods=days * 48, freq="30min"):
        record_site_energy(store, t, {"import_kwh": 10.0, "export_kwh": 0.0, "charge_kwh": 1.0, "discharge_kwh": 0.0}, [], t)
        store.record_window(t.strftime("%Y-%m"), t, 10.0, None, 10.0, [], t)


def test_retention_drops_old_ticks_keeps_the_windows_and_the_file_shrinks(tmp_path):
    path = tmp_path / "s.sqlite"
    now = T0 + pd.Timedelta(days=40)
    with Store(str(path)) as store:
        _fill(store, 40)
        record_day_ahead(store, T0, T0 + DAY_AHEAD_LEAD, 1.0, 0.0)
        compact(store, T0, 35)   # nothing due yet: the WAL checkpointed into the file
        before = path.stat().st_size
        removed = store.apply_retention(now, 10)
        done = compact(store, now, 10)
        after = path.stat().st_size
        assert removed["telemetry"] == 30 * 1440 * 3 and store.count("telemetry") == 10 * 1440 * 3   # ticks of 10 days
        assert len(site_energy(store)) == 40 * 48 and store.count("demand_windows") == 40 * 48   # kept for ever
        assert done["day_ahead"] == 1 and not done["converted"] and done["error"] is None
        assert after < 0.5 * before, (before, after)    # the freed pages went back to the file system
        assert done["bytes_after"] == after
    con = sqlite3.connect(path)
    try:
        assert con.execute("PRAGMA auto_vacuum").fetchone()[0] == 2   # INCREMENTAL from creation
    finally:
        con.close()


def test_an_older_database_is_converted_to_incremental_vacuum_once(tmp_path):
    path = tmp_path / "old.sqlite"
    con = sqlite3.connect(path)   # a store from before: auto_vacuum NONE, tables already there
    con.execute("CREATE TABLE telemetry (id INTEGER PRIMARY KEY, ts VARCHAR(32) NOT NULL, device VARCHAR(64) NOT NULL, "
                "plugged BOOLEAN, soc_kwh FLOAT, charge_kw FLOAT, discharge_kw FLOAT, setpoint_charge_kw FLOAT, "
                "setpoint_discharge_kw FLOAT, site_import_kw FLOAT, grid_up BOOLEAN, reason VARCHAR(32))")
    con.commit()
    con.close()
    with Store(str(path)) as store:
        _fill(store, 3)
        first = compact(store, T0 + pd.Timedelta(days=3), 35)
        second = compact(store, T0 + pd.Timedelta(days=3), 35)
        with store.engine.connect() as c:
            mode = c.exec_driver_sql("PRAGMA auto_vacuum").scalar()
    assert first["converted"] and not second["converted"] and mode == 2


def test_the_daemon_purges_at_start(tmp_path):
    home = load_site(site_copy(tmp_path))
    with Store(home.daemon.database) as store:
        _fill(store, 2, devices=1, every_s=600)   # ticks of 2024-07-01/02, far older than 14 days before the start
        assert store.count("telemetry") == 288
    svc, clock = manual_service(home, "2024-09-01T12:00+09:00", initial_soc_pct=60)

    async def scenario():
        async with svc:
            assert svc.store.count("telemetry") == 0
            assert len(site_energy(svc.store)) == 96 and svc.store.count("demand_windows") == 96   # kept for ever
    run(scenario())
