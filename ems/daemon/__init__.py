"""The gateway daemon (``ems run``): receding-horizon planning, dispatch with the demand guard,
outage mode, the store, config reload, on APScheduler.

- :mod:`ems.daemon.core`: :class:`Daemon`, one cycle at a time (tests drive it on a manual clock), over
  its sections :mod:`~ems.daemon.links` (devices), :mod:`~ems.daemon.tracker` (windows, vehicles,
  grid), :mod:`~ems.daemon.plans` with :mod:`~ems.daemon.forecasts`, and :mod:`~ems.daemon.dispatcher`
  (the tick); see ems/daemon/README.md;
- :mod:`ems.daemon.metering`: fixed :00/:30 demand windows from the meter;
- :mod:`ems.daemon.service`: devices, the in-process simulator and the scheduler around it.
"""

from ems.daemon.core import Daemon
from ems.daemon.host import Stats
from ems.daemon.links import UnitLink
from ems.daemon.metering import WindowAccount, WindowRecord, window_start
from ems.daemon.plans import ActivePlan
from ems.daemon.service import MIN_REAL_TICK_S, Service, SimTimeTrigger, effective_dispatch_s, run_site

__all__ = ["ActivePlan", "Daemon", "MIN_REAL_TICK_S", "Service", "SimTimeTrigger", "Stats", "UnitLink", "WindowAccount",
           "WindowRecord", "effective_dispatch_s", "run_site", "window_start"]
