"""Sign conventions: the ONE place where product quantities meet a device's signed watts.

Inside the product, power is a pair of non-negative quantities: (charge_kw, discharge_kw) for a
charger, (import_kw, export_kw) for the grid connection. Devices use one signed number whose
positive direction the register map declares (``sign``):

- ``discharge_positive`` (SunSpec DER models: positive W = the unit discharges/exports),
- ``charge_positive`` (many vendor maps: negative = discharge),
- ``import_positive`` / ``export_positive`` for meters.

The adapters and the simulator both convert through these two functions.
"""

from __future__ import annotations

#: for each convention, whether a positive device value means power flowing OUT of the device
#: (discharge, export) rather than IN (charge, import)
_POSITIVE_IS_OUT = {"discharge_positive": True, "export_positive": True,
                    "charge_positive": False, "import_positive": False}


def to_device_w(in_kw: float, out_kw: float, sign: str) -> float:
    """Signed device power [W] for a product pair [kW].

    ``in_kw`` is charge (or import), ``out_kw`` discharge (or export); both must be >= 0 and at
    most one of them non-zero. Example: SunSpec (discharge_positive), 0 kW charge and 2.5 kW
    discharge -> +2500 W; a charge-positive vendor map -> -2500 W.
    """
    if in_kw < 0 or out_kw < 0:
        raise ValueError(f"power pairs are non-negative; got in={in_kw} kW, out={out_kw} kW")
    if in_kw > 0 and out_kw > 0:
        raise ValueError(f"a device cannot take and give power at once; got in={in_kw} kW, out={out_kw} kW")
    out_w = (out_kw - in_kw) * 1000.0
    return out_w if _POSITIVE_IS_OUT[sign] else -out_w


def from_device_w(device_w: float, sign: str) -> tuple[float, float]:
    """Product pair (in_kw, out_kw), both >= 0, for a signed device power [W]."""
    out_w = device_w if _POSITIVE_IS_OUT[sign] else -device_w
    return (max(-out_w, 0.0) / 1000.0, max(out_w, 0.0) / 1000.0)


# ----- SOC: devices report (and take) it in percent of the battery's capacity --------------------
# The one place a device's percent SOC meets the product's energy [kWh]; the adapters, the
# simulator and the daemon (reading adapter states) convert through these two functions.

def soc_kwh(soc_pct: float, capacity_kwh: float) -> float:
    """Energy [kWh] of a device SOC [%] of ``capacity_kwh``."""
    return soc_pct / 100.0 * capacity_kwh


def soc_pct(kwh: float, capacity_kwh: float) -> float:
    """Device SOC [%] of ``kwh`` in a battery of ``capacity_kwh``."""
    return 100.0 * kwh / capacity_kwh
