"""The daemon's web page, JSON API and Prometheus metrics (issue 12), served by ``ems run`` itself.

- :mod:`ems.web.server`: :class:`HttpServer`, uvicorn on the daemon's own event loop;
- :mod:`ems.web.app`: the Starlette application: routes and who may read and write;
- :mod:`ems.web.views`: the JSON documents (status, plan, forecasts, events, bill, overrides);
- :mod:`ems.web.metrics`: ``/metrics`` in the Prometheus text format;
- :mod:`ems.web.page`: the page (server-rendered HTML, labels in English and Japanese) and its
  server-drawn SVG chart; ``static/``: its script, style sheet and labels (shipped in the wheel:
  nothing is fetched from the internet at run time).

The overrides themselves live in :mod:`ems.daemon.overrides`.
"""

from ems.web.server import HttpServer

__all__ = ["HttpServer"]
