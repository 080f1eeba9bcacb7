"""``/metrics``: the daemon in the Prometheus text format (prometheus_client).

A collector reads the daemon at each scrape (nothing is kept twice). Units are in the names
(``_kw``, ``_kwh``, ``_percent``, ``_seconds``); ages and the plan's age are on the daemon's clock
(simulated with ``--speed``), latencies in real seconds.

=================================== ======= ============================================================
metric                              type    what
=================================== ======= ============================================================
ems_window_average_kw               gauge   the demand window's average import so far
ems_window_predicted_kw             gauge   its predicted average at the window's end
ems_window_target_kw                gauge   the average the guard holds (the plan's peak, or an operator's)
ems_window_import_kwh               gauge   import metered in the window so far
ems_month_peak_kw                   gauge   this billing month's peak (metered or from bills)
ems_contract_kw                     gauge   the contract kW (the ratchet)
ems_site_import_kw                  gauge   the meter's import now (export negative)
ems_grid_up                         gauge   1 while the grid is up
ems_unit_power_kw{unit}             gauge   measured power (+ charge, - discharge)
ems_unit_setpoint_kw{unit}          gauge   setpoint written last (+ charge, - discharge)
ems_unit_soc_percent{unit,vehicle}  gauge   SOC of the car on the unit
ems_unit_up{unit}                   gauge   1 while the unit answers
ems_plan_age_seconds                gauge   age of the plan in force
ems_plan_following                  gauge   1 while dispatch follows the plan (0: the safe rule)
ems_plan_solve_seconds              gauge   the last plan's build and solve time
ems_plans_total                     counter plans made
ems_tick_latency_seconds{quantile}  gauge   dispatch tick latency, 0.5 and 0.99 of the last ticks, and the last
ems_ticks_total                     counter dispatch ticks
ems_skipped_jobs_total              counter scheduler runs skipped (a job still running, or missed)
ems_adapter_errors_total{device}    counter device faults (one per episode: ``device-fault`` events)
ems_events_total{kind}              counter events logged, by kind
ems_overrides_active{kind}          gauge   operator overrides in force
=================================== ======= ============================================================
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

import numpy as np
from prometheus_client.core import CollectorRegistry, CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import generate_latest
from prometheus_client.registry import Collector

from ems.daemon.overrides import KINDS
from ems.web import views

if TYPE_CHECKING:
    from ems.daemon.core import Daemon

#: The tick latency quantiles exported (over the ticks the daemon keeps, ems.daemon.host.LATENCY_KEEP).
QUANTILES = (0.5, 0.99)


def _gauge(name: str, doc: str, value: float | None) -> GaugeMetricFamily:
    g = GaugeMetricFamily(name, doc)
    if value is not None:
        g.add_metric([], value)
    return g


class DaemonCollector(Collector):
    """The metrics of the module docstring for one daemon."""

    def __init__(self, daemon: Daemon):
        self.daemon = daemon

    def collect(self) -> Iterator[Metric]:
        d = self.daemon
        now = d.clock.now()
        w, m, brief = views.window(d, now), views.month(d, now), views.plan_brief(d, now)
        yield _gauge("ems_window_average_kw", "Demand window: average import so far [kW]", w["average_kw"])
        yield _gauge("ems_window_predicted_kw", "Demand window: predicted average at its end [kW]", w["predicted_kw"])
        yield _gauge("ems_window_target_kw", "Demand window: the average the guard holds [kW]", w["target_kw"])
        yield _gauge("ems_window_import_kwh", "Demand window: import so far [kWh]", w["import_kwh"])
        yield _gauge("ems_month_peak_kw", "This billing month's peak [kW]", m["peak_kw"])
        yield _gauge("ems_contract_kw", "Contract kW (demand ratchet) [kW]", m["contract_kw"])
        r = d.last_reading
        yield _gauge("ems_site_import_kw", "Site import now, export negative [kW]", None if r is None else r.import_kw - r.export_kw)
        yield _gauge("ems_grid_up", "1 while the grid is up", float(d.grid_up))
        power = GaugeMetricFamily("ems_unit_power_kw", "Unit power, + charge - discharge [kW]", labels=["unit"])
        setpoint = GaugeMetricFamily("ems_unit_setpoint_kw", "Unit setpoint, + charge - discharge [kW]", labels=["unit"])
        soc = GaugeMetricFamily("ems_unit_soc_percent", "SOC of the car on the unit [%]", labels=["unit", "vehicle"])
        up = GaugeMetricFamily("ems_unit_up", "1 while the unit answers", labels=["unit"])
        for u in d.units:
            s, cid = u.state, u.charger.id
            up.add_metric([cid], float(s is not None))
            if s is not None:
                power.add_metric([cid], s.charge_kw - s.discharge_kw)
                if s.plugged and s.soc_pct is not None:
                    v = d.tracker.vehicle_on(u, s)
                    soc.add_metric([cid, v.id if v is not None else (s.vehicle_id or "")], s.soc_pct)
            if u.setpoint is not None:
                setpoint.add_metric([cid], u.setpoint.charge_kw - u.setpoint.discharge_kw)
        yield from (power, setpoint, soc, up)
        yield _gauge("ems_plan_age_seconds", "Age of the plan in force [s, daemon clock]", None if brief is None else brief["age_s"])
        yield _gauge("ems_plan_following", "1 while dispatch follows the plan", None if brief is None else float(brief["following"]))
        st = d.stats
        yield _gauge("ems_plan_solve_seconds", "The last plan's build and solve time [s]", st.plan_seconds[-1] if st.plan_seconds else None)
        yield CounterMetricFamily("ems_plans", "Plans made", value=st.plans)
        lat = GaugeMetricFamily("ems_tick_latency_seconds", "Dispatch tick latency [real s]", labels=["quantile"])
        if st.tick_seconds:
            ticks = np.fromiter(st.tick_seconds, dtype=float)
            for q in QUANTILES:
                lat.add_metric([f"{q:g}"], float(np.quantile(ticks, q)))
            lat.add_metric(["last"], float(ticks[-1]))
        yield lat
        yield CounterMetricFamily("ems_ticks", "Dispatch ticks", value=st.ticks)
        yield CounterMetricFamily("ems_skipped_jobs", "Scheduler runs skipped", value=st.skipped_jobs)
        errors = CounterMetricFamily("ems_adapter_errors", "Device faults (episodes)", labels=["device"])
        for device in [u.charger.id for u in d.units] + (["meter"] if d.meter is not None else []):
            errors.add_metric([device], st.device_faults.get(device, 0))
        yield errors
        events = CounterMetricFamily("ems_events", "Events logged, by kind", labels=["kind"])
        for kind, n in sorted(st.events.items()):
            events.add_metric([kind], n)
        yield events
        active = GaugeMetricFamily("ems_overrides_active", "Operator overrides in force", labels=["kind"])
        force = d.overrides.in_force(now)
        for kind in KINDS:
            active.add_metric([kind], sum(1 for o in force if o.spec.kind == kind))
        yield active


def registry(daemon: Daemon) -> CollectorRegistry:
    """A registry of its own with the daemon's collector (no process-wide metrics, none shared between daemons)."""
    reg = CollectorRegistry(auto_describe=False)
    reg.register(DaemonCollector(daemon))
    return reg


def exposition(reg: CollectorRegistry) -> bytes:
    """The registry in the Prometheus text format (version 0.0.4)."""
    return generate_latest(reg)
