"""PV power of a site's arrays with pvlib: weather (or clear sky) in, kW AC on the plan index out.

The chain, per array (the steps of pvlib's ModelChain with the PVWatts models):

1. solar position (``nrel_numpy``) at each interval's **midpoint** (plan rows are interval-start
   labelled: the midpoint value stands for the interval's mean);
2. if only GHI is known: split into DNI/DHI with Erbs et al. (1982) (``pvlib.irradiance.erbs``),
   or DIRINT (Perez et al. 1992) on request;
3. plane-of-array irradiance by the Hay-Davies transposition model (pvlib ModelChain's default),
   ground albedo 0.25 (pvlib's default);
4. reflection losses on the beam by the physical (Fresnel/Snell) IAM model;
5. cell temperature with the SAPM model, ``open_rack_glass_polymer`` parameters (PVWatts' standard
   rack mounting; the config has no mounting key);
6. PVWatts DC: ``P_dc = kWp * E_eff/1000 * (1 + gamma*(T_cell - 25))``, then ``dc_loss_pct``
   (PVWatts' combined soiling/wiring/mismatch losses, 14 % by default);
7. PVWatts inverter with ``inverter_efficiency_pct``, clipped at ``ac_capacity_kw`` (when not
   given, the inverter's DC rating equals the array's kWp: a DC/AC ratio of 1).

Without weather, air temperature is 20 degC and wind 0 m/s (pvlib ModelChain's defaults).
Clear sky is pvlib's Ineichen model with its shipped monthly Linke turbidity climatology.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Sequence

import numpy as np
import pandas as pd
import pvlib

from ems.config import PvArray, SiteSection

DEFAULT_TEMP_AIR_C = 20.0  # pvlib ModelChain's default when the weather has no temperature
DEFAULT_WIND_SPEED_MS = 0.0  # pvlib ModelChain's default when the weather has no wind speed
ALBEDO = 0.25  # pvlib's default ground reflectance (grass/concrete)
TEMPERATURE_PARAMS = pvlib.temperature.TEMPERATURE_MODEL_PARAMETERS["sapm"]["open_rack_glass_polymer"]
NS_PER_MIN = 60_000_000_000

Decomposition = Literal["erbs", "dirint"]


@dataclass(frozen=True)
class SolarGeometry:
    """Sun and clear sky at the midpoints of ``index`` (interval starts, UTC). Angles [deg],
    irradiance [W/m^2]; ``airmass_rel`` is the relative, ``airmass_abs`` the pressure-corrected airmass."""

    index: pd.DatetimeIndex
    zenith: np.ndarray
    apparent_zenith: np.ndarray
    azimuth: np.ndarray
    dni_extra: np.ndarray
    airmass_rel: np.ndarray
    doy: np.ndarray
    cs_ghi: np.ndarray
    cs_dni: np.ndarray
    cs_dhi: np.ndarray

    def take(self, sl: slice, index: pd.DatetimeIndex) -> SolarGeometry:
        """The rows in ``sl`` (a slice of a prepared longer geometry), relabelled with ``index``."""
        return SolarGeometry(index, *(getattr(self, f)[sl] for f in _ARRAY_FIELDS))


_ARRAY_FIELDS = ("zenith", "apparent_zenith", "azimuth", "dni_extra", "airmass_rel", "doy", "cs_ghi", "cs_dni", "cs_dhi")


def _ns(index: pd.DatetimeIndex) -> np.ndarray:
    """Epoch nanoseconds of an index (whatever its stored unit)."""
    return index.as_unit("ns").asi8


class PvModel:
    """The configured arrays of one site as a pvlib model; geometry can be prepared once for a
    long range (a study's year) so each forecast only runs the cheap irradiance-to-power steps."""

    def __init__(self, site: SiteSection, arrays: Sequence[PvArray], decomposition: Decomposition = "erbs"):
        self.site = site
        self.arrays = list(arrays)
        self.decomposition = decomposition
        self.location = pvlib.location.Location(site.latitude_deg, site.longitude_deg, altitude=site.altitude_m)
        self.pressure_pa = float(pvlib.atmosphere.alt2pres(site.altitude_m))
        leap = pd.date_range("2024-01-01 12:00", periods=366, freq="D", tz="UTC")
        # pvlib's monthly Linke turbidity climatology, read once, interpolated to each day of year
        self._linke = pvlib.clearsky.lookup_linke_turbidity(leap, site.latitude_deg, site.longitude_deg).to_numpy()
        self._prepared: SolarGeometry | None = None
        self._prepared_step_ns = 0

    @property
    def capacity_kw(self) -> float:
        """Sum of the arrays' AC limits [kW] (kWp times inverter efficiency where none is given)."""
        return sum(a.ac_capacity_kw or a.capacity_kwp * a.inverter_efficiency for a in self.arrays)

    # --- geometry -------------------------------------------------------------------------
    def compute_geometry(self, index: pd.DatetimeIndex, step: pd.Timedelta) -> SolarGeometry:
        """Solar position, extraterrestrial DNI, airmass and Ineichen clear sky at interval midpoints."""
        mid = (index + step / 2).tz_convert("UTC")
        sp = pvlib.solarposition.get_solarposition(mid, self.site.latitude_deg, self.site.longitude_deg,
                                                   altitude=self.site.altitude_m, method="nrel_numpy")
        app = sp["apparent_zenith"].to_numpy()
        doy = mid.day_of_year.to_numpy()
        dni_extra = pvlib.irradiance.get_extra_radiation(doy).astype(float)
        with np.errstate(all="ignore"):  # pvlib divides by zero for the sun below the horizon: NaN -> 0 below
            am_rel = pvlib.atmosphere.get_relative_airmass(app)
            am_abs = pvlib.atmosphere.get_absolute_airmass(am_rel, self.pressure_pa)
            cs = pvlib.clearsky.ineichen(app, am_abs, self._linke[np.minimum(doy, 366) - 1],
                                         altitude=self.site.altitude_m, dni_extra=dni_extra)
        clean = {k: np.nan_to_num(np.asarray(v, dtype=float)) for k, v in cs.items()}
        return SolarGeometry(index, sp["zenith"].to_numpy(), app, sp["azimuth"].to_numpy(), dni_extra,
                             np.nan_to_num(np.asarray(am_rel, dtype=float), nan=40.0), doy,
                             clean["ghi"], clean["dni"], clean["dhi"])

    def prepare(self, start: pd.Timestamp, end: pd.Timestamp, step: pd.Timedelta) -> None:
        """Precompute the geometry of every interval in ``[start, end)`` (e.g. a study's year)."""
        index = pd.date_range(start, end, freq=step, inclusive="left").tz_convert("UTC")
        self._prepared = self.compute_geometry(index, step)
        self._prepared_step_ns = step.value

    def covers(self, start: pd.Timestamp, end: pd.Timestamp, step: pd.Timedelta) -> bool:
        """Whether the prepared geometry holds every ``step`` interval in ``[start, end)``."""
        prep = self._prepared
        if prep is None or step.value != self._prepared_step_ns or not len(prep.index):
            return False
        t0, t1 = _ns(prep.index[:1])[0], _ns(prep.index[-1:])[0]
        first, last = pd.Timestamp(start).as_unit("ns").value, pd.Timestamp(end).as_unit("ns").value - step.value
        return t0 <= first and last <= t1 and (first - t0) % step.value == 0

    def geometry(self, index: pd.DatetimeIndex, step: pd.Timedelta) -> SolarGeometry:
        """Geometry of ``index``: sliced from the prepared range when it lies inside, else computed."""
        prep = self._prepared
        if prep is not None and step.value == self._prepared_step_ns and len(index):
            t0 = _ns(prep.index[:1])[0]
            first, last = _ns(index[:1])[0], _ns(index[-1:])[0]
            off = (first - t0) // step.value
            if (first - t0) % step.value == 0 and off >= 0 and (last - t0) // step.value < len(prep.index):
                return prep.take(slice(int(off), int(off) + len(index)), index)
        return self.compute_geometry(index, step)

    # --- irradiance -> power ----------------------------------------------------------------
    def split(self, ghi: np.ndarray, geom: SolarGeometry) -> tuple[np.ndarray, np.ndarray]:
        """DNI and DHI [W/m^2] from GHI with the configured decomposition model (Erbs or DIRINT)."""
        if self.decomposition == "dirint":
            mid = geom.index + (geom.index[1] - geom.index[0]) / 2 if len(geom.index) > 1 else geom.index
            dni = pvlib.irradiance.dirint(pd.Series(ghi, index=mid), pd.Series(geom.zenith, index=mid), mid,
                                          pressure=self.pressure_pa).fillna(0.0).to_numpy()
            cosz = np.maximum(np.cos(np.radians(geom.zenith)), 0.0)
            dhi = np.clip(ghi - dni * cosz, 0.0, None)
            return dni, dhi
        out = pvlib.irradiance.erbs(ghi, geom.zenith, geom.doy)
        return np.nan_to_num(np.asarray(out["dni"], dtype=float)), np.nan_to_num(np.asarray(out["dhi"], dtype=float))

    def array_power_kw(self, array: PvArray, geom: SolarGeometry, ghi: np.ndarray, dni: np.ndarray, dhi: np.ndarray,
                       temp_air: np.ndarray, wind_speed: np.ndarray) -> np.ndarray:
        """AC power of one array [kW] (steps 3-7 of the module docstring)."""
        poa = pvlib.irradiance.get_total_irradiance(
            array.tilt_deg, array.azimuth_deg, geom.zenith, geom.azimuth, dni, ghi, dhi,
            dni_extra=geom.dni_extra, airmass=geom.airmass_rel, albedo=ALBEDO, model="haydavies")
        aoi = pvlib.irradiance.aoi(array.tilt_deg, array.azimuth_deg, geom.zenith, geom.azimuth)
        iam = pvlib.iam.physical(aoi)
        poa_direct = np.nan_to_num(np.asarray(poa["poa_direct"], dtype=float))
        poa_diffuse = np.nan_to_num(np.asarray(poa["poa_diffuse"], dtype=float))
        effective = np.clip(poa_direct * iam + poa_diffuse, 0.0, None)
        t_cell = pvlib.temperature.sapm_cell(poa_direct + poa_diffuse, temp_air, wind_speed, **TEMPERATURE_PARAMS)
        pdc0_w = array.capacity_kwp * 1000.0
        dc_w = pvlib.pvsystem.pvwatts_dc(effective, t_cell, pdc0_w, array.temperature_coefficient_per_c)
        dc_w = np.clip(np.nan_to_num(dc_w), 0.0, None) * (1 - array.dc_loss)
        eta = array.inverter_efficiency
        inv_dc_w = array.ac_capacity_kw * 1000.0 / eta if array.ac_capacity_kw else pdc0_w
        with np.errstate(divide="ignore", invalid="ignore"):
            ac_w = pvlib.inverter.pvwatts(dc_w, inv_dc_w, eta_inv_nom=eta)
        return np.clip(np.nan_to_num(np.asarray(ac_w, dtype=float)), 0.0, None) / 1000.0

    def power_kw(self, geom: SolarGeometry, ghi: np.ndarray, dni: np.ndarray | None = None, dhi: np.ndarray | None = None,
                 temp_air: np.ndarray | None = None, wind_speed: np.ndarray | None = None) -> np.ndarray:
        """Total AC power of all arrays [kW] from irradiance [W/m^2], temperature [degC], wind [m/s].

        ``dni``/``dhi`` missing: split from ``ghi``. Irradiance is forced to 0 with the sun below the horizon.
        """
        n = len(geom.index)
        up = geom.zenith < 90.0
        ghi = np.where(up, np.nan_to_num(ghi), 0.0)
        if dni is None or dhi is None:
            dni, dhi = self.split(ghi, geom)
        dni, dhi = np.where(up, np.nan_to_num(dni), 0.0), np.where(up, np.nan_to_num(dhi), 0.0)
        temp_air = np.full(n, DEFAULT_TEMP_AIR_C) if temp_air is None else np.nan_to_num(temp_air, nan=DEFAULT_TEMP_AIR_C)
        wind = np.full(n, DEFAULT_WIND_SPEED_MS) if wind_speed is None else np.nan_to_num(wind_speed, nan=DEFAULT_WIND_SPEED_MS)
        total = np.zeros(n)
        for array in self.arrays:
            total += self.array_power_kw(array, geom, ghi, dni, dhi, temp_air, wind)
        return total

    def clear_sky_power_kw(self, geom: SolarGeometry) -> np.ndarray:
        """AC power under Ineichen clear sky [kW] (default temperature and wind)."""
        return self.power_kw(geom, geom.cs_ghi, geom.cs_dni, geom.cs_dhi)

    def clearness_power_kw(self, geom: SolarGeometry, clearness: float | np.ndarray) -> np.ndarray:
        """AC power [kW] with GHI = ``clearness`` x clear-sky GHI, split by the decomposition model
        (a cloudier sky is also a more diffuse one, which matters for tilted arrays)."""
        return self.power_kw(geom, geom.cs_ghi * clearness)
