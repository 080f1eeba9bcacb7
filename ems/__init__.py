"""V2H/V2B energy-management optimizer: configuration, tariffs, forecasts, planning, dispatch."""

__version__ = "0.1.0"
