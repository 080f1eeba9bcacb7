"""Adapters from their parameters, whatever the protocol: what the daemon builds its devices with."""

from __future__ import annotations

import time
from collections.abc import Callable

from adapters.charger import ChargerAdapter, ChargerParams
from adapters.echonet.charger import EchonetChargerAdapter, EchonetChargerParams
from adapters.echonet.meter import EchonetMeterAdapter, EchonetMeterParams
from adapters.meter import MeterAdapter, MeterParams
from adapters.protocol import ChargerDevice, MeterDevice

AnyChargerParams = ChargerParams | EchonetChargerParams
AnyMeterParams = MeterParams | EchonetMeterParams


def charger_device(params: AnyChargerParams, *, clock: Callable[[], float] = time.monotonic) -> ChargerDevice:
    """The adapter for ``params``: Modbus (:class:`ChargerParams`) or ECHONET Lite (:class:`EchonetChargerParams`).
    ``clock`` paces writes [real s]."""
    if isinstance(params, EchonetChargerParams):
        return EchonetChargerAdapter(params, clock=clock)
    return ChargerAdapter(params, clock=clock)


def meter_device(params: AnyMeterParams) -> MeterDevice:
    """The adapter for ``params``: Modbus (:class:`MeterParams`) or ECHONET Lite (:class:`EchonetMeterParams`)."""
    if isinstance(params, EchonetMeterParams):
        return EchonetMeterAdapter(params)
    return MeterAdapter(params)


__all__ = ["AnyChargerParams", "AnyMeterParams", "charger_device", "meter_device"]
