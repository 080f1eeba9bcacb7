"""What the daemon's sections share: :class:`Host` (what each section may ask of the
:class:`~ems.daemon.core.Daemon` that owns it) and :class:`Stats`.

The sections (:mod:`~ems.daemon.links`, :mod:`~ems.daemon.tracker`, :mod:`~ems.daemon.plans`,
:mod:`~ems.daemon.dispatcher`) read the running config through the host at every use, never a copy
of it: a config reload replaces ``host.cfg`` under them.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Any, Protocol

from ems.clock import Clock
from ems.config import SiteConfig
from ems.store import Store

#: Dispatch tick latencies kept for statistics (a day at a 5-s tick is 17,280 ticks).
LATENCY_KEEP = 20000


@dataclass
class Stats:
    """Counters and timings for the status, the demo and the benchmark."""

    ticks: int = 0
    plans: int = 0
    plan_seconds: list[float] = field(default_factory=list)
    tick_seconds: deque = field(default_factory=lambda: deque(maxlen=LATENCY_KEEP))
    tick_during_plan: deque = field(default_factory=lambda: deque(maxlen=LATENCY_KEEP))   # a plan was solving
    replans: dict[str, int] = field(default_factory=dict)
    skipped_jobs: int = 0
    charged_kwh: float = 0.0
    discharged_kwh: float = 0.0
    events: dict[str, int] = field(default_factory=dict)           # events logged, by kind
    device_faults: dict[str, int] = field(default_factory=dict)    # ``device-fault`` episodes, by device
    last_tick: Any = None                                          # the daemon's time of the last tick (pd.Timestamp)
    unit_seen: dict[str, Any] = field(default_factory=dict)        # unit id -> when it last answered (pd.Timestamp)

    def count_event(self, kind: str, device: str | None = None) -> None:
        """Count an event (and a device fault by its device) for the metrics (ems/web/metrics.py)."""
        self.events[kind] = self.events.get(kind, 0) + 1
        if kind == "device-fault" and device is not None:
            self.device_faults[device] = self.device_faults.get(device, 0) + 1


class Host(Protocol):
    """The daemon as its sections see it (:class:`~ems.daemon.core.Daemon` implements it)."""

    cfg: SiteConfig
    clock: Clock
    store: Store
    stats: Stats
    dispatch_interval_s: float

    def event(self, kind: str, message: str, severity: str = "info", **data: Any) -> None:
        """Log and store an event."""

    def request_replan(self, reason: str) -> None:
        """Ask for a re-plan at once."""
