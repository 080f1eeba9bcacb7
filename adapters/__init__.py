"""Device I/O: Modbus adapters for V2H/V2B units and site meters, register maps, the simulator.

Independent of the application (``ems``) and the optimisation library (``models``): adapters take
plain dataclasses (:class:`ChargerParams`, :class:`MeterParams`, :class:`TcpLink`,
:class:`RtuLink`) and return plain dataclasses. Powers in the product are non-negative pairs
(charge/discharge, import/export) in kW; device sign conventions are converted in
:mod:`adapters.convention` only.
"""

from adapters.charger import CallerLimits, ChargerAdapter, ChargerParams, ChargerState, SetpointResult, clamp
from adapters.errors import AdapterError, MapProblem, RegisterMapError
from adapters.link import RetryPolicy, RtuLink, TcpLink
from adapters.meter import MeterAdapter, MeterParams, MeterReading
from adapters.registers import RegisterMap, load_map, load_profile, shipped_profiles

__all__ = ["AdapterError", "CallerLimits", "ChargerAdapter", "ChargerParams", "ChargerState", "MapProblem",
           "MeterAdapter", "MeterParams", "MeterReading", "RegisterMap", "RegisterMapError", "RetryPolicy", "RtuLink",
           "SetpointResult", "TcpLink", "clamp", "load_map", "load_profile", "shipped_profiles"]
