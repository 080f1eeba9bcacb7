"""The gateway daemon (``ems run``): receding-horizon planning, dispatch with the demand guard,
outage mode, the store, config reload, on APScheduler.

- :mod:`ems.daemon.core`: :class:`Daemon`, one cycle at a time (tests drive it on a manual clock);
- :mod:`ems.daemon.metering`: fixed :00/:30 demand windows from the meter;
- :mod:`ems.daemon.service`: devices, the in-process simulator and the scheduler around it.
"""

from ems.daemon.core import ActivePlan, Daemon, Stats, UnitLink
from ems.daemon.metering import WindowAccount, WindowRecord, window_start
from ems.daemon.service import MIN_REAL_TICK_S, Service, SimTimeTrigger, effective_dispatch_s, run_site

__all__ = ["ActivePlan", "Daemon", "MIN_REAL_TICK_S", "Service", "SimTimeTrigger", "Stats", "UnitLink", "WindowAccount",
           "WindowRecord", "effective_dispatch_s", "run_site", "window_start"]
