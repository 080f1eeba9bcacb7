"""The daemon's web page, JSON API and metrics, over real HTTP against uvicorn on the daemon's own
loop (a free port), with the simulated site on a manual clock: every endpoint, who may write,
bad override values, overrides reaching the plan and the tick, surviving a restart and expiring."""

from __future__ import annotations

import asyncio
import re
import socket
import urllib.error
import urllib.request

import pandas as pd
import pytest
from prometheus_client.parser import text_string_to_metric_families

from ems.cli import main
from ems.clock import SimClock
from ems.daemon import Service
from models.requirements import reserve_requirement_kwh
from tests.ems.daemon_helpers import manual_service, run, site_copy
from tests.ems.http_helpers import TOKEN, call, http_site, request, serving

pytestmark = pytest.mark.timeout(180)

EVENING = "2024-07-08T19:00+09:00"     # Monday: the home's Leaf is plugged in since 18:30, leaves 07:30 with 80 %
OFFICE_MORNING = "2024-07-09T09:50+09:00"   # Tuesday: three cars plugged in since 08:30
LOCAL_TIME = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\+09:00$")


def times_in(doc, key: str = "") -> list[tuple[str, str]]:
    """(key, value) of every string in a JSON document that starts like a date."""
    if isinstance(doc, dict):
        return [x for k, v in doc.items() for x in times_in(v, k)]
    if isinstance(doc, list):
        return [x for v in doc for x in times_in(v, key)]
    return [(key, doc)] if isinstance(doc, str) and re.match(r"^\d{4}-\d\d-\d\dT", doc) else []


def kinds(svc) -> list[str]:
    return [e["kind"] for e in svc.store.events(limit=500)]


async def ticks(svc, clock, n: int, every_s: float = 20) -> None:
    for _ in range(n):
        clock.timeleap(every_s)
        await svc.daemon.dispatch_once()


def test_every_endpoint_answers_with_local_times_and_parseable_metrics(tmp_path):
    svc, clock = manual_service(http_site(tmp_path, "office-v2b"), OFFICE_MORNING, initial_soc_pct=60)

    async def scenario():
        async with serving(svc) as (base, d):
            await ticks(svc, clock, 60)   # 10 minutes into the 10:00 window
            status, html = await call(base + "?lang=ja")
            assert status == 200 and "デマンド監視" in html and 'src="/static/app.js"' in html
            status, html = await call(base + "?lang=en")
            assert "Demand monitor" in html and "bz4x" in html
            for asset in ("app.js", "app.css", "i18n.json"):
                assert (await call(base + "static/" + asset))[0] == 200

            status, s = await call(base + "api/status")
            assert status == 200 and s["site"] == svc.cfg.site.name and s["now"] == "2024-07-09T10:10:00+09:00"
            bad = [(k, v) for k, v in times_in(s) if not LOCAL_TIME.match(v)]
            assert bad == []   # the site's zone, ISO 8601 with offset, no sub-second
            w = s["window"]
            assert (w["start"], w["end"], w["elapsed_s"]) == ("2024-07-09T10:00:00+09:00", "2024-07-09T10:30:00+09:00", 600)
            assert w["import_kwh"] > 0 and w["predicted_kw"] > 0 and w["target_kw"] > 0 and w["alarm"] in ("ok", "warn", "over")
            assert w["predicted_kw"] == pytest.approx(
                (w["import_kwh"] + w["import_now_kw"] * (1800 - 600) / 3600) / 0.5, abs=0.01)
            m = s["month"]
            assert m["month"] == "2024-07" and m["contract_kw"] >= m["peak_kw"] > 0 and m["contract_set_by"] is not None
            assert [u["id"] for u in s["units"]] == ["v2b1", "v2b2", "v2b3"]
            for u in s["units"]:
                assert u["plugged"] and u["soc_pct"] > 0 and u["plan_step"] is not None and u["setpoint"]["reason"]
                assert u["heartbeat_age_s"] <= 20 and u["departure"] == "2024-07-09T18:00:00+09:00" and u["target_pct"] > 0
            assert {v["vehicle"]: v["unit"] for v in s["vehicles"]} == {"leaf": "v2b1", "bz4x": "v2b2", "leaf40": "v2b3"}
            assert s["plan"]["following"] and s["plan"]["age_s"] == 1200 and s["daemon"]["last_tick_age_s"] == 0

            status, p = await call(base + "api/plan")
            plan = p["plan"]
            assert len(plan["time"]) == 96 and plan["time"][0] == "2024-07-09T09:30:00+09:00"
            assert {"load_kw", "pv_kw", "import_kw", "v2b1_charge_kw", "v2b1_discharge_kw", "leaf_soc_pct"} <= set(plan["series"])
            status, f = await call(base + "api/forecasts")
            assert f["forecast"]["time"][0] == "2024-07-09T10:00:00+09:00" and len(f["forecast"]["series"]["load_kw"]) >= 96

            status, ev = await call(base + "api/events?limit=1")
            assert status == 200 and len(ev["events"]) == 1 and ev["next"]
            status, older = await call(base + ev["next"].lstrip("/"))
            assert max(e["id"] for e in older["events"]) < min(e["id"] for e in ev["events"])
            for q in ("limit=0", "limit=501", "limit=x", "before=-1"):
                status, err = await call(base + "api/events?" + q)
                assert status == 422 and err["problems"][0]["field"] == q.split("=")[0]

            status, b = await call(base + "api/bill")
            bill = b["bill"]
            assert status == 200 and bill["month"] == "2024-07" and bill["total"] > 0 and bill["import_kwh"] > 0
            assert bill["contract_kw"] == pytest.approx(m["contract_kw"], abs=0.01) and b["currency"] == "JPY"
            assert (await call(base + "api/overrides"))[1] == {"active": []}

            status, text = await call(base + "metrics")
            fams = {f.name: f for f in text_string_to_metric_families(text)}
            for name in ("ems_window_average_kw", "ems_window_predicted_kw", "ems_month_peak_kw", "ems_contract_kw",
                         "ems_unit_power_kw", "ems_unit_soc_percent", "ems_plan_age_seconds", "ems_plan_solve_seconds",
                         "ems_tick_latency_seconds", "ems_adapter_errors", "ems_ticks", "ems_overrides_active"):
                assert name in fams, name
            assert len(fams["ems_unit_soc_percent"].samples) == 3
            assert fams["ems_contract_kw"].samples[0].value == pytest.approx(m["contract_kw"], abs=0.01)
            assert fams["ems_ticks"].samples[0].value == 60
            assert {s.labels["quantile"] for s in fams["ems_tick_latency_seconds"].samples} == {"0.5", "0.99", "last"}

            status, svg = await call(base + "chart.svg")
            assert status == 200 and svg.startswith("<svg") and "<path" in svg
    run(scenario())


def test_writes_need_the_token_and_a_refused_write_changes_nothing(tmp_path):
    svc, clock = manual_service(http_site(tmp_path), EVENING)
    departure = {"kind": "departure", "vehicle": "leaf", "depart": "2024-07-09T05:00+09:00", "target_soc_pct": 90}

    async def scenario():
        async with serving(svc) as (base, d):
            for token in (None, "wrong-token-0123456789", TOKEN + "x"):
                status, err = await call(base + "api/overrides", departure, token=token)
                assert status == 401 and "Bearer" in err["error"]
                assert (await call(base + "api/overrides/abc", method="DELETE", token=token))[0] == 401
            status, headers, _ = await asyncio.to_thread(request, base + "api/overrides", departure)
            assert headers.get("www-authenticate") == 'Bearer realm="ems"'
            assert svc.store.overrides() == [] and d.overrides.active == [] and "override" not in kinds(svc)
            assert d.replan_reason is None
            # a read from this machine needs no token, unless it asks for another host name (DNS rebinding)
            assert (await call(base + "api/status"))[0] == 200
            rebound = urllib.request.Request(base + "api/status", headers={"Host": "attacker.example"})
            with pytest.raises(urllib.error.HTTPError) as e:
                await asyncio.to_thread(urllib.request.urlopen, rebound, timeout=10)
            e.value.close()
            assert e.value.code == 401
            rebound.add_header("Authorization", f"Bearer {TOKEN}")
            with await asyncio.to_thread(urllib.request.urlopen, rebound, timeout=10) as r:
                assert r.status == 200
    run(scenario())


def test_without_a_token_the_api_is_read_only(tmp_path):
    svc, clock = manual_service(http_site(tmp_path, http="{port: 0}"), EVENING)

    async def scenario():
        async with serving(svc) as (base, d):
            status, err = await call(base + "api/overrides", {"kind": "peak-target", "kw": 3, "until": "2024-07-08T23:00+09:00"},
                                     token=TOKEN)
            assert status == 403 and "daemon.http.token" in err["error"]
            assert (await call(base + "api/status"))[0] == 200 and svc.store.overrides() == []
    run(scenario())


BAD = [
    ({"target_soc_pct": 95}, "target_soc_pct", "20..90"),              # above the Leaf's max_soc_pct
    ({"target_soc_pct": 10}, "target_soc_pct", "20..90"),
    ({"target_soc_pct": 120}, "target_soc_pct", "less than or equal to 100"),
    ({"target_soc_pct": "80"}, "target_soc_pct", "valid number"),
    ({"vehicle": "tesla"}, "vehicle", "['leaf']"),
    ({"depart": "2024-07-08T18:00+09:00"}, "depart", "after now"),
    ({"depart": "2024-07-20T18:00+09:00"}, "depart", "7 days"),
    ({"depart": "2024-07-09T05:00"}, "depart", "timezone"),
    ({"kind": "nap"}, "kind", "departure"),
    ({"foo": 1}, "foo", "Extra inputs"),
]


def test_bad_override_values_get_422_naming_the_field_and_nothing_changes(tmp_path):
    svc, clock = manual_service(http_site(tmp_path), EVENING)
    good = {"kind": "departure", "vehicle": "leaf", "depart": "2024-07-09T05:00+09:00", "target_soc_pct": 85}

    async def scenario():
        async with serving(svc) as (base, d):
            cases = [({**good, **change}, field, allowed) for change, field, allowed in BAD] + [
                ({"kind": "peak-target", "kw": 500, "until": "2024-07-08T23:00+09:00"}, "kw", "import limit"),
                ({"kind": "peak-target", "kw": -1, "until": "2024-07-08T23:00+09:00"}, "kw", "greater than 0"),
                ({"kind": "reserve", "hours": 0, "until": "2024-07-08T23:00+09:00"}, "hours", "greater than 0"),
                ({"kind": "pause-v2b", "vehicle": None}, "until", "Field required"),
                ({"vehicle": "leaf"}, "kind", "departure"),
            ]
            for body, field, allowed in cases:
                status, err = await call(base + "api/overrides", body, token=TOKEN)
                assert status == 422, body
                fields = {p["field"]: p["allowed"] for p in err["problems"]}
                assert field in fields and allowed in fields[field], (body, err)
            for raw in (b"{", b"[]", b'{"kind": "reserve", "hours": NaN, "until": "2024-07-08T23:00+09:00"}', b"x" * 5000):
                status, err = await call(base + "api/overrides", raw=raw, token=TOKEN)
                assert status in (413, 422) and err["problems"], raw[:20]
            assert svc.store.overrides() == [] and d.overrides.active == [] and "override" not in kinds(svc)
            assert d.replan_reason is None
            assert (await call(base + "api/overrides", good, token=TOKEN))[0] == 201   # the same body, right: taken
    run(scenario())


def test_departure_override_changes_the_plan_survives_a_restart_and_expires(tmp_path):
    cfg = http_site(tmp_path)
    leaf = cfg.vehicles[0]
    svc, clock = manual_service(cfg, EVENING, initial_soc_pct=50)
    body = {"kind": "departure", "vehicle": "leaf", "depart": "2024-07-09T05:00+09:00", "target_soc_pct": 90, "by": "tanaka"}
    at_five = pd.Timestamp("2024-07-09T05:00+09:00")

    async def first():
        async with serving(svc) as (base, d):
            await ticks(svc, clock, 1)
            before = d.plan.result.schedule["leaf_soc_kwh"].asof(at_five)
            assert before < leaf.pct_kwh(90) - 1   # the configured stay: 80 % by 07:30
            status, out = await call(base + "api/overrides", body, token=TOKEN)
            assert status == 201 and out["replan"] and out["override"]["by"] == "tanaka via 127.0.0.1"
            oid = out["override"]["id"]
            assert out["override"]["expires_at"] == "2024-07-09T05:00:00+09:00"
            assert d.replan_reason == "override" and kinds(svc)[0] == "override"
            plan = await d.plan_once(d.replan_reason)
            assert svc.store.last_plan()["inputs"]["overrides"] == [oid]
            assert plan.result.schedule["leaf_soc_kwh"].asof(at_five) >= leaf.pct_kwh(90) - 0.05
            target, hours = d.overrides.departure(leaf, clock.now())   # what the tick's departure floor uses
            assert target == pytest.approx(leaf.pct_kwh(90)) and hours == pytest.approx(
                (at_five - clock.now()) / pd.Timedelta(hours=1))
            s = (await call(base + "api/status"))[1]
            assert s["vehicles"][0]["departure"] == "2024-07-09T05:00:00+09:00" and s["vehicles"][0]["target_pct"] == 90
            assert [o["id"] for o in s["overrides"]] == [oid]
            return oid

    oid = run(first())
    svc2, clock2 = manual_service(cfg, "2024-07-08T21:00+09:00", initial_soc_pct=60)

    async def after_restart():
        async with svc2:
            d = svc2.daemon
            assert [o.id for o in d.overrides.active] == [oid]
            assert svc2.store.last_plan()["inputs"]["overrides"] == [oid]   # the start's plan knew it
            assert d.overrides.departure(leaf, clock2.now())[0] == pytest.approx(leaf.pct_kwh(90))
            for _ in range(8):   # to 05:00 and one tick after
                clock2.timeleap(3600)
                await d.dispatch_once()
            clock2.timeleap(30)
            await d.dispatch_once()
            assert d.overrides.active == [] and d.replan_reason == "override-ended"
            row = svc2.store.overrides()[0]
            assert (row["id"], row["ended_by"], row["created_by"]) == (oid, "expired", "tanaka via 127.0.0.1")
            ended = svc2.store.events(kind="override-ended")[0]
            assert ended["data"]["override"] == oid and "expired" in ended["message"]
            assert d.overrides.departure(leaf, clock2.now())[1] == pytest.approx(2.5 - 30 / 3600)   # 07:30 again
    run(after_restart())


def test_boost_pause_reserve_and_peak_target_reach_the_tick_and_the_plan_and_can_be_cancelled(tmp_path):
    cfg = http_site(tmp_path)
    svc, clock = manual_service(cfg, EVENING, initial_soc_pct=60)
    until = "2024-07-09T01:00+09:00"

    async def scenario():
        async with serving(svc) as (base, d):
            now = clock.now

            async def post(body: dict) -> str:
                status, out = await call(base + "api/overrides", body, token=TOKEN)
                assert status == 201, out
                return out["override"]["id"]

            boost = await post({"kind": "boost", "vehicle": "leaf", "target_soc_pct": 85})
            sp = (await d.dispatch_once())[0]
            assert sp.reason == "boost" and sp.charge_kw == pytest.approx(6.0) and sp.discharge_kw == 0
            plan = await d.plan_once(d.replan_reason)
            assert plan.result.schedule["v2h1_discharge_kw"].max() == 0   # V2H off for the boosted car
            assert d.overrides.active[0].expires_at == pd.Timestamp("2024-07-09T07:30+09:00")   # its departure

            await post({"kind": "pause-v2b", "vehicle": None, "until": until})
            await post({"kind": "reserve", "hours": 24, "until": until})
            assert d.dispatcher._reserve_kwh(now(), True) >= cfg.load.critical_kw * 24 - 1e-6
            plan = await d.plan_once(d.replan_reason)
            pv = plan.result.schedule["pv_kw"].to_numpy()   # the plan holds 24 h of critical load net of PV until 01:00
            assert plan.reserve_kwh[0] == pytest.approx(reserve_requirement_kwh(cfg.load.critical_kw, pv, 0.5, 24)[0])
            assert plan.reserve_kwh[12] == pytest.approx(reserve_requirement_kwh(cfg.load.critical_kw, pv, 0.5, 12)[12])
            first = await post({"kind": "peak-target", "kw": 3.0, "until": until})
            assert d._guard_target_kw(now()) == 3.0
            second = await post({"kind": "peak-target", "kw": 4.5, "until": until})
            assert d._guard_target_kw(now()) == 4.5
            assert svc.store.events(kind="override-ended")[0]["message"].endswith(f"replaced by {second}")
            assert {r["id"]: r["ended_by"] for r in svc.store.overrides()}[first] == f"replaced by {second}"

            s = (await call(base + "api/status"))[1]
            assert sorted(o["kind"] for o in s["overrides"]) == ["boost", "pause-v2b", "peak-target", "reserve"]
            assert s["window"]["target_kw"] == 4.5 and s["vehicles"][0]["discharge_allowed"] is False
            text = (await call(base + "metrics"))[1]
            active = {s.labels["kind"]: s.value for f in text_string_to_metric_families(text)
                      if f.name == "ems_overrides_active" for s in f.samples}
            assert active == {"departure": 0, "boost": 1, "pause-v2b": 1, "reserve": 1, "peak-target": 1}

            status, out = await call(base + f"api/overrides/{boost}?by=sato", method="DELETE", token=TOKEN)
            assert status == 200 and out["cancelled"]["id"] == boost and d.replan_reason == "override-ended"
            assert {r["id"]: r["ended_by"] for r in svc.store.overrides()}[boost] == "cancelled by sato via 127.0.0.1"
            status, err = await call(base + f"api/overrides/{boost}", method="DELETE", token=TOKEN)
            assert status == 404 and err["problems"][0]["field"] == "id"
            history = (await call(base + "api/overrides?all=1"))[1]["history"]
            assert len(history) == 5 and len((await call(base + "api/overrides"))[1]["active"]) == 3
    run(scenario())


def test_non_loopback_listen_without_token_is_a_config_error_with_file_and_line(tmp_path, capsys):
    path = site_copy(tmp_path, **{"^daemon:\n": "daemon:\n  http:\n    listen: 0.0.0.0\n"})
    assert main(["check", str(path)]) == 2
    err = capsys.readouterr().err
    line = next(i for i, row in enumerate(path.read_text().splitlines(), 1) if row.startswith("  http:"))
    assert f"{path}:{line}: daemon.http.token" in err and "not a loopback address" in err
    path.write_text(path.read_text().replace("listen: 0.0.0.0\n", f"listen: 0.0.0.0\n    token: {TOKEN}\n"))
    assert main(["check", str(path)]) == 0


def test_a_port_in_use_is_an_event_and_the_daemon_runs_on(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        svc, clock = manual_service(http_site(tmp_path, http=f"{{port: {port}}}"), EVENING)

        async def scenario():
            async with svc:
                assert not await svc.start_http()
                assert "http-failed" in kinds(svc) and svc.http.url is None
                assert await svc.daemon.dispatch_once()
        run(scenario())


def test_ems_run_serves_the_page_while_it_runs_and_stops_serving_when_it_stops(tmp_path):
    cfg = http_site(tmp_path)
    svc = Service(cfg, clock=SimClock(pd.Timestamp(EVENING), 60.0))

    async def scenario():
        async with svc:
            task = asyncio.create_task(svc.serve(pd.Timestamp(EVENING) + pd.Timedelta(hours=1)))
            for _ in range(500):
                if svc.http is not None and svc.http.url:
                    break
                await asyncio.sleep(0.01)
            base = svc.http.url
            first = (await call(base + "api/status"))[1]
            await asyncio.sleep(1.0)
            second = (await call(base + "api/status"))[1]
            assert second["daemon"]["ticks"] > first["daemon"]["ticks"] and second["now"] > first["now"]
            svc.stop()
            await task
            with pytest.raises(urllib.error.URLError):
                await asyncio.to_thread(urllib.request.urlopen, base + "healthz", timeout=5)
    run(scenario())
