"""The simulated V2H site: physics (:mod:`adapters.sim.model`) behind a real Modbus TCP server
(:mod:`adapters.sim.server`)."""

from adapters.sim.model import (ManualClock, Replay, SimSiteParams, SimStay, SimUnitParams, SimVehicle, SiteModel,
                                StaySource, WallClock, always_plugged)
from adapters.sim.server import Faults, SimulatorThread, Simulator, SiteSnapshot, UnitSnapshot

__all__ = ["Faults", "ManualClock", "Replay", "SimSiteParams", "SimStay", "SimUnitParams", "SimVehicle", "Simulator",
           "SimulatorThread", "SiteModel", "SiteSnapshot", "StaySource", "UnitSnapshot", "WallClock", "always_plugged"]
