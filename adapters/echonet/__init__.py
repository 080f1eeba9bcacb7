"""ECHONET Lite device I/O: the frame codec, the UDP client, the V2H unit (0x027E) and smart-meter
(0x0288 / 0x028A) adapters. Same plain-dataclass style as the Modbus adapters: parameters in,
:class:`~adapters.charger.ChargerState` / :class:`~adapters.meter.MeterReading` out."""

from adapters.echonet.charger import EchonetChargerAdapter, EchonetChargerParams, Mode
from adapters.echonet.client import EchonetLink, EchonetObject, PropertyMaps
from adapters.echonet.frame import EOJ, ESV, Frame, FrameError, Property, decode_property_map, encode_property_map
from adapters.echonet.meter import HIGH_VOLTAGE, LOW_VOLTAGE, EchonetMeterAdapter, EchonetMeterParams, FixedTimeReading

__all__ = ["EOJ", "ESV", "EchonetChargerAdapter", "EchonetChargerParams", "EchonetLink", "EchonetMeterAdapter",
           "EchonetMeterParams", "EchonetObject", "FixedTimeReading", "Frame", "FrameError", "HIGH_VOLTAGE", "LOW_VOLTAGE",
           "Mode", "Property", "PropertyMaps", "decode_property_map", "encode_property_map"]
