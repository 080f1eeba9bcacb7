"""Small problems whose optimum is worked out by hand in each test's docstring."""

from __future__ import annotations

import numpy as np
import pytest

from models import direct
from models.requirements import requirements
from models.solution import costs
from problems import car, check, one_month_demand, plan, site, unit


def test_arbitrage_between_two_prices_pays_only_above_the_round_trip_loss():
    """Charge at 10, discharge into a 4 kW load at 30, eta_c 0.9, eta_d 0.8, 1-hour steps.

    Serving 4 kWh takes 4/0.8 = 5 kWh from the battery, 5/0.9 = 5.556 kWh from the grid at 10:
    55.556 < 4 x 30 = 120. At a second price of 13 the delivered kWh would cost 10/0.72 = 13.89:
    no arbitrage, the load is bought at 13: 52.
    """
    veh = car(2, soc0=0.0)
    p = site(1.0, [0, 4], price=[10, 30], vehicles=[veh], chargers=[unit(kw=10, eta_c=0.9, eta_d=0.8)])
    sol, req = plan(p)
    assert sol.status == "optimal" and sol.method == "lp"
    assert sol.objective == pytest.approx(10 * 5 / 0.9, abs=1e-6)
    assert sol.values.ch[0] == pytest.approx([5 / 0.9, 0], abs=1e-6)
    assert sol.values.dis[0] == pytest.approx([0, 4], abs=1e-6)
    assert check(p, sol, req) == []
    flat = site(1.0, [0, 4], price=[10, 13], vehicles=[veh], chargers=[unit(kw=10, eta_c=0.9, eta_d=0.8)])
    sol, _ = plan(flat)
    assert sol.objective == pytest.approx(52.0, abs=1e-6)
    assert sol.values.ch.sum() == pytest.approx(0.0, abs=1e-6)


def test_demand_peak_is_shaved_exactly_to_the_level_the_energy_allows():
    """Loads 10, 10, 20, 20 kW in four 30-minute windows, 5 kWh in the car, efficiency 1.

    A flat peak p needs sum (load - p) x 0.5 h <= 5 kWh net: 30 - 2p <= 5, so p = 12.5 kW
    (charge 2.5 kW in the first two windows, discharge 7.5 kW in the last two). Demand charge
    1,000 per kW-month, energy free: 12,500.
    """
    p = site(0.5, [10, 10, 20, 20], vehicles=[car(4, soc0=5.0)], chargers=[unit(kw=10)],
             demand=one_month_demand(4, 1000.0))
    sol, req = plan(p)
    assert sol.objective == pytest.approx(12500.0, abs=1e-4)
    assert sol.values.imp.max() == pytest.approx(12.5, abs=1e-6)
    assert check(p, sol, req) == []
    assert costs(p, sol.values).demand == pytest.approx(12500.0, abs=1e-4)


def _peak_case(load_kw: float, held: list[float], plugged: bool = True):
    """One 30-minute window, load ``load_kw``, a car that can give 4 kW at a wear of 500 per kWh."""
    demand = one_month_demand(1, 100.0, ratchet_months=11, held=held)
    return site(0.5, [load_kw], price=[1.0], vehicles=[car(1, soc0=10.0, wear=500.0, plugged=[plugged])],
                chargers=[unit(kw=4)], demand=demand)


def test_a_new_record_peak_costs_twelve_months_of_demand_charge():
    """Rate 100 per kW-month, 11-month ratchet, no history: one more kW costs 100 x 12 = 1,200.

    Without the car (unplugged) a 10.5 kW window costs 0.25 kWh more energy (at 1) than 10 kW and
    0.5 kW x 1,200 more demand: 600.25. With the car, 4 kW of discharge saves 4 x 1,200 = 4,800
    for 2 kWh of wear (1,000): peak 6 kW, objective 6 x 1,200 + 1,000 + 3 = 8,203.
    """
    base, _ = plan(_peak_case(10.0, [0.0] * 12, plugged=False))
    more, _ = plan(_peak_case(10.5, [0.0] * 12, plugged=False))
    assert more.objective - base.objective == pytest.approx(600.25, abs=1e-6)
    sol, _ = plan(_peak_case(10.0, [0.0] * 12))
    assert sol.values.dis[0, 0] == pytest.approx(4.0, abs=1e-6)
    assert sol.objective == pytest.approx(8203.0, abs=1e-6)
    c = costs(_peak_case(10.0, [0.0] * 12), sol.values)
    assert (c.demand, c.ratchet) == (pytest.approx(600.0), pytest.approx(6600.0))


def test_a_peak_under_an_old_record_costs_only_the_months_after_the_record_expires():
    """History holds 20 kW for this month and the next 9; only the last 2 ratchet months are free.

    A 10 kW peak then costs 2 x 100 = 200 per kW: discharging 4 kW would save 800 for 1,000 of
    wear, so the car stays idle: 20 x 100 (this month's bill) + 2 x 10 x 100 (later) + 5 energy = 4,005.
    """
    held = [20.0] * 10 + [0.0, 0.0]
    sol, _ = plan(_peak_case(10.0, held))
    assert sol.values.dis.sum() == pytest.approx(0.0, abs=1e-6)
    assert sol.objective == pytest.approx(4005.0, abs=1e-6)


def test_departure_target_forces_charging_in_the_expensive_hour():
    """Prices 10, 50, 10 per kWh; the car (6 kW, efficiency 1) is plugged in for the first two
    hours and must leave at 02:00 with 10 kWh from empty: 6 at 10 and 4 at 50 = 260."""
    veh = car(3, soc0=0.0, capacity=20, plugged=[1, 1, 0], targets={2: 10.0})
    p = site(1.0, [0, 0, 0], price=[10, 50, 10], vehicles=[veh])
    sol, req = plan(p)
    assert sol.objective == pytest.approx(260.0, abs=1e-6)
    assert sol.values.ch[0] == pytest.approx([6, 4, 0], abs=1e-6)
    assert check(p, sol, req) == []


def test_unreachable_target_is_diagnosed_in_words_and_the_plan_reports_the_shortfall():
    """15 kWh wanted by 02:00, the 6 kW unit can give 12: short 3 kWh, charged to the most it can."""
    veh = car(3, soc0=0.0, capacity=20, plugged=[1, 1, 0], targets={2: 15.0}, vid="leaf")
    p = site(1.0, [0, 0, 0], price=[10, 50, 10], vehicles=[veh])
    sol, req = plan(p)
    [finding] = req.findings
    assert finding.kind == "target" and finding.shortfall == pytest.approx(3.0)
    assert finding.text == ("car leaf cannot reach 75 % by 02:00: plugged in at 00:00 with 0 %, needs 15.0 kWh, "
                            "the 6 kW unit c1 delivers at most 12.0 kWh; planning for 60 % (short 3.0 kWh)")
    assert sol.status == "optimal"
    assert sol.values.soc[0, 2] == pytest.approx(12.0, abs=1e-6)


def test_two_cars_take_turns_on_one_charger():
    """Car a needs 6 kWh by 02:00, car b 6 kWh by 04:00, one 6 kW unit, 1-hour steps, price rising
    1, 2, 3, 4: a charges at 00:00 (cost 6), b at 01:00 (12): 18 in all, never both at once."""
    a = car(4, soc0=0.0, targets={2: 6.0}, plugged=[1, 1, 0, 0], vid="a")
    b = car(4, soc0=0.0, targets={4: 6.0}, vid="b")
    p = site(1.0, [0, 0, 0, 0], price=[1, 2, 3, 4], vehicles=[a, b])
    sol, req = plan(p)
    assert sol.objective == pytest.approx(18.0, abs=1e-6)
    assert check(p, sol, req) == []
    assert sol.values.ch[0] == pytest.approx([6, 0, 0, 0], abs=1e-6)
    assert sol.values.ch[1] == pytest.approx([0, 6, 0, 0], abs=1e-6)
    assert direct.solve(p, req).objective == pytest.approx(18.0, abs=1e-6)


def test_cars_needing_more_than_their_shared_charger_gives_are_named():
    """a and b each need 6 kWh within the same two hours on one 6 kW unit: 12 needed, 12 possible
    only if both are there throughout; with a gone after one hour, 6 kWh short is shared."""
    a = car(2, soc0=0.0, targets={1: 6.0}, plugged=[1, 0], vid="a")
    b = car(2, soc0=0.0, targets={1: 6.0}, plugged=[1, 0], vid="b")
    p = site(1.0, [0, 0], price=[1, 1], vehicles=[a, b])
    req = requirements(p)
    [finding] = [f for f in req.findings if f.kind == "shared"]
    assert finding.text.startswith("cars a and b share unit c1: between 00:00 and 01:00 they need 12.0 kWh together, "
                                   "the 6 kW unit delivers at most 6.0 kWh")
    sol, req = plan(p)
    assert sol.status == "optimal" and "target" in sol.soft
    assert sol.values.soc[:, 1].sum() == pytest.approx(6.0, abs=1e-6)


def test_outage_serves_the_critical_load_until_the_car_runs_down():
    """Grid down for 4 hours, 1 kW critical load, the car holds 2.5 kWh above its minimum and the
    unit delivers it at 100 %: 2.5 kWh served, 1.5 kWh unserved at 1,000 per kWh."""
    veh = car(4, soc0=3.5, min_kwh=1.0)
    p = site(1.0, [1, 1, 1, 1], price=[30] * 4, vehicles=[veh], chargers=[unit(kw=6, islanded=3)],
             outage=np.ones(4, dtype=bool), value_of_lost_load_per_kwh=1000.0)
    sol, req = plan(p)
    assert sol.values.imp.sum() == pytest.approx(0.0, abs=1e-9)
    assert sol.values.uns.sum() == pytest.approx(1.5, abs=1e-6)
    assert sol.objective == pytest.approx(1500.0, abs=1e-6)
    assert check(p, sol, req) == []


def test_islanded_rating_caps_discharge_in_an_outage():
    """A 2 kW critical load on a unit rated 6 kW grid-tied but 1.5 kW islanded: 0.5 kW unserved."""
    p = site(1.0, [2.0], vehicles=[car(1, soc0=10.0)], chargers=[unit(kw=6, islanded=1.5)],
             outage=np.ones(1, dtype=bool), value_of_lost_load_per_kwh=100.0)
    sol, _ = plan(p)
    assert sol.values.dis[0, 0] == pytest.approx(1.5) and sol.values.uns[0] == pytest.approx(0.5)


def test_vehicle_energy_never_leaves_the_site():
    """Export pays 50 and import costs 10, but export may only be PV surplus: 1 kW of PV over a
    0.5 kW load gives at most 0.5 kW of export, whatever the full car could add."""
    p = site(1.0, [0.5], pv=[1.0], price=[10], export_price=[50], export_limit=10, vehicles=[car(1, soc0=10.0)])
    sol, req = plan(p)
    assert sol.values.exp[0] == pytest.approx(0.5, abs=1e-6)
    assert sol.values.exp[0] + sol.values.curt[0] <= 1.0 + 1e-9  # any discharge only displaces PV, never leaves
    assert check(p, sol, req) == []


def test_reserve_is_held_back_from_an_expensive_hour():
    """Price 100, a 4 kW load for one hour; the car holds 5 kWh, 3 kWh must stay for an outage
    (hard): only 2 kWh may serve the load, 2 kWh are bought: 200 (without the reserve: 0)."""
    p = site(1.0, [4.0], price=[100], vehicles=[car(1, soc0=5.0)], reserve_kwh=np.array([3.0]))
    sol, req = plan(p)
    assert sol.values.soc[0, 1] == pytest.approx(3.0, abs=1e-6)
    assert sol.objective == pytest.approx(200.0, abs=1e-6)
    assert check(p, sol, req) == []


def test_lp_with_simultaneous_flows_falls_back_to_the_milp():
    """A negative import price pays to waste energy: the LP relaxation cycles the battery (charge
    and discharge at once), which the MILP forbids. The answer is the MILP optimum: import at
    the load (1 kW) plus charging the 5 kWh of room (5/0.9 = 5.556 kW): paid 6.556. The relaxation
    would instead charge 5.80 kW and discharge 0.20 kW at once to burn more."""
    p = site(1.0, [1.0], price=[-1.0], vehicles=[car(1, soc0=5.0)], chargers=[unit(kw=6, eta_c=0.9, eta_d=0.9)])
    sol, req = plan(p)
    assert sol.method in ("milp", "lp+repair")
    milp = direct.solve(p, req)
    assert sol.objective == pytest.approx(milp.objective, abs=1e-6)
    assert sol.objective == pytest.approx(-(1 + 5 / 0.9), abs=1e-6)
    assert check(p, sol, req) == []
    assert np.all((sol.values.ch < 1e-6) | (sol.values.dis < 1e-6))


def test_a_drivers_energy_is_taken_only_where_it_is_worth_more_than_its_price():
    """A driver-owned car holding 10 kWh above nothing, a 4 kW load for one hour at 30/kWh,
    efficiency 1, no terminal value for the driver's energy.

    Settled at 20/kWh the car serves the load (4 kWh x 30 = 120 saved, 4 x 20 = 80 paid): 80.
    Settled at 40/kWh the site buys the load from the grid instead: 120, and it does not sell the
    driver a charge the driver did not ask for although 40 > 30 (energy added earns the plan
    nothing). Taken and given back in one stay nets to nothing: 2 kWh out then 2 kWh in at
    settlement 40 costs no settlement. Settled at 40 under a demand charge
    of 1,000/kW-month on two 30-minute windows, 4 kWh from the car (4 kW in each) cuts the peak by
    4 kW (4,000) for 160: it is taken. The site's own car at the same prices is never settled.
    """
    def solved(price, demand=False):
        veh = car(2, soc0=10.0, capacity=20.0, settle=price)
        extra = {"demand": one_month_demand(2, 1000.0)} if demand else {}
        p = site(0.5, [4, 4], price=[30, 30], vehicles=[veh], chargers=[unit(kw=10)], **extra)
        sol, req = plan(p)
        assert sol.status == "optimal" and check(p, sol, req) == []
        c = costs(p, sol.values)
        assert c.objective == pytest.approx(sol.objective, abs=1e-6)
        return sol, c
    sol, c = solved(20.0)
    assert sol.values.dis.sum() * 0.5 == pytest.approx(4.0) and c.settlement == pytest.approx(80.0)
    sol, c = solved(40.0)
    assert sol.values.dis.sum() == pytest.approx(0.0, abs=1e-9) and sol.values.ch.sum() == pytest.approx(0.0, abs=1e-9)
    assert c.settlement == pytest.approx(0.0, abs=1e-9) and c.objective == pytest.approx(120.0)
    sol, c = solved(40.0, demand=True)
    assert sol.values.dis.sum() * 0.5 == pytest.approx(4.0) and c.settlement == pytest.approx(160.0)
    sol, c = solved(None)
    assert c.settlement == 0.0 and sol.values.dis.sum() * 0.5 == pytest.approx(4.0)


def test_a_stay_is_settled_on_its_net_energy_including_what_was_taken_before_the_plan():
    """A driver's car (price 40, efficiency 1) from which 3 kWh were taken earlier in this stay
    (``settled_kwh``), free import in the first hour and 30/kWh in the second with a 4 kW load.
    The stay's net is what is settled: charging 7 kWh for free and giving 4 back to the load leaves
    the stay at 3 - 4 + 7 = 0 kWh taken on balance: nothing owed, nothing imported at 30: 0. Without
    the free hour, at 30 all day, the 3 kWh owed (120) are cheaper bought back (90) and the load is
    bought (taking 4 kWh more would cost 160 against 120): 210."""
    veh = car(2, soc0=10.0, capacity=20.0, settle=40.0)
    veh = type(veh)(**{**veh.__dict__, "settled_kwh": 3.0})
    p = site(1.0, [0, 4], price=[0, 30], vehicles=[veh], chargers=[unit(kw=10)])
    sol, req = plan(p)
    c = costs(p, sol.values)
    assert sol.status == "optimal" and check(p, sol, req) == []
    assert sol.values.ch[0, 0] == pytest.approx(7.0) and sol.values.dis[0, 1] == pytest.approx(4.0)
    assert c.settlement == pytest.approx(0.0, abs=1e-9) and sol.objective == pytest.approx(0.0, abs=1e-6)
    dear = site(1.0, [0, 4], price=[30, 30], vehicles=[veh], chargers=[unit(kw=10)])
    sol, req = plan(dear)
    c = costs(dear, sol.values)
    assert sol.values.dis.sum() == pytest.approx(0.0, abs=1e-9) and sol.values.ch.sum() == pytest.approx(3.0)
    assert c.settlement == pytest.approx(0.0, abs=1e-9) and sol.objective == pytest.approx(210.0, abs=1e-6)
