"""The Starlette application: routes, who may read and write, and errors as JSON.

Who may do what (``daemon.http``, read at each request so a reload that changes the token applies):

- the page and its static files: anyone who reaches the port (they hold no site data);
- reads (``GET /api/...``, ``/metrics``, ``/chart.svg``): open to a client on this machine
  (a loopback address, asking for a loopback host name: a web page elsewhere that rebinds its
  name to 127.0.0.1 is refused), else ``Authorization: Bearer <token>``;
- writes (``POST``/``DELETE /api/overrides``): always the bearer token, compared in constant time;
  without a configured token writes are refused (403) and the API is read-only.

A refused or invalid request changes nothing and gets ``{"error": ..., "problems": [{"field",
"value", "allowed"}]}`` (401, 403, 404, 413, 422).
"""

from __future__ import annotations

import asyncio
import hmac
import ipaddress
import math
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from ems.daemon.overrides import KINDS, SPEC, OverrideError
from ems.web import metrics, page, views

if TYPE_CHECKING:
    from ems.daemon.core import Daemon

#: Largest request body taken [bytes] (an override is ~200).
MAX_BODY = 4096
Handler = Callable[[Request], Awaitable[Response]]


def _json(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse(data, status_code=status, headers=headers)


def problem(status: int, error: str, field: str | None = None, value: Any = None, allowed: str | None = None,
            headers: dict[str, str] | None = None) -> JSONResponse:
    """An error answer; ``field``/``value``/``allowed`` name what was wrong and what would do."""
    body: dict[str, Any] = {"error": error}
    if field is not None:
        body["problems"] = [{"field": field, "value": value, "allowed": allowed}]
    return _json(body, status, headers)


def _is_loopback(host: str | None) -> bool:
    if not host:
        return False
    host = host.strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _host_name(header: str) -> str:
    """The host of a ``Host`` header (``127.0.0.1:8080``, ``[::1]:8080``, ``localhost``)."""
    if header.startswith("["):
        return header[1:header.find("]")]
    return header.rsplit(":", 1)[0] if header.count(":") == 1 else header


def _bearer(request: Request, token: str | None) -> bool:
    """Whether the request carries the configured token (constant-time comparison)."""
    scheme, _, given = request.headers.get("authorization", "").partition(" ")
    return token is not None and scheme.lower() == "bearer" and hmac.compare_digest(given.strip().encode(), token.encode())


def local_request(request: Request) -> bool:
    """A client on this machine asking for this machine by a loopback name (no DNS rebinding)."""
    return _is_loopback(request.client.host if request.client else None) and \
        _is_loopback(_host_name(request.headers.get("host", "")))


UNAUTHORIZED = {"WWW-Authenticate": 'Bearer realm="ems"'}


def create_app(d: Daemon) -> Starlette:
    """The page, the JSON API, the metrics and the static files of the running daemon ``d``."""
    reg = metrics.registry(d)
    actuals = page.Actuals()

    def read(handler: Handler) -> Handler:
        async def guarded(request: Request) -> Response:
            if local_request(request) or _bearer(request, d.cfg.daemon.http.token):
                return await handler(request)
            return problem(401, "reading from another machine needs Authorization: Bearer <daemon.http.token>",
                           headers=UNAUTHORIZED)
        return guarded

    def write(handler: Handler) -> Handler:
        async def guarded(request: Request) -> Response:
            token = d.cfg.daemon.http.token
            if token is None:
                return problem(403, "writes are disabled: the site config sets no daemon.http.token")
            if not _bearer(request, token):
                return problem(401, "a write needs Authorization: Bearer <daemon.http.token>", headers=UNAUTHORIZED)
            return await handler(request)
        return guarded

    def who(request: Request, by: str | None) -> str:
        client = request.client.host if request.client else "unknown"
        return f"{by} via {client}" if by else f"api via {client}"

    async def index(request: Request) -> Response:
        lang = page.pick_lang(request.query_params.get("lang"), request.cookies.get("lang"),
                              request.headers.get("accept-language"))
        return HTMLResponse(page.render(d, lang), headers={"Cache-Control": "no-store"})

    async def status(request: Request) -> Response:
        return _json(views.status(d))

    async def plan(request: Request) -> Response:
        return _json({"plan": views.plan(d)})

    async def forecasts(request: Request) -> Response:
        return _json({"forecast": views.forecasts(d)})

    async def events(request: Request) -> Response:
        try:
            limit = _int_param(request, "limit", 1, views.EVENTS_MAX, views.EVENTS_PAGE)
            before = _int_param(request, "before", 1, None, None)
        except OverrideError as exc:
            return problem(422, "bad query", exc.field, exc.value, exc.allowed)
        return _json(await asyncio.to_thread(views.events, d, limit, before, request.query_params.get("kind")))

    async def bill(request: Request) -> Response:
        return _json(await asyncio.to_thread(views.bill, d))

    async def list_overrides(request: Request) -> Response:
        history = request.query_params.get("all") in ("1", "true")
        return _json(await asyncio.to_thread(views.overrides, d, history) if history else views.overrides(d, False))

    async def add_override(request: Request) -> Response:
        body = await request.body()
        if len(body) > MAX_BODY:
            return problem(413, "request too large", "body", len(body), f"at most {MAX_BODY} bytes")
        try:
            spec = SPEC.validate_json(body)
        except ValidationError as exc:
            return _invalid(exc)
        async with d.io_lock:   # between two ticks: a tick sees the overrides before or after, never half
            try:
                made = d.overrides.add(spec, who(request, spec.by), d.clock.now())
            except OverrideError as exc:
                return problem(422, "override refused: nothing changed", exc.field, exc.value, exc.allowed)
        return _json({"override": made.to_json(d.cfg.zone), "replan": True}, 201)

    async def cancel_override(request: Request) -> Response:
        oid = request.path_params["oid"]
        async with d.io_lock:
            try:
                ended = d.overrides.cancel(oid, who(request, request.query_params.get("by")), d.clock.now())
            except KeyError:
                return problem(404, "no such override in force: nothing changed", "id", oid,
                               "the id of an override in force (GET /api/overrides)")
        return _json({"cancelled": ended.to_json(d.cfg.zone), "replan": True})

    async def prometheus(request: Request) -> Response:
        return Response(metrics.exposition(reg), media_type="text/plain; version=0.0.4; charset=utf-8")

    async def chart(request: Request) -> Response:
        lang = page.pick_lang(request.query_params.get("lang"), request.cookies.get("lang"), None)
        svg = await asyncio.to_thread(page.chart_svg, d, lang, actuals)
        return Response(svg, media_type="image/svg+xml", headers={"Cache-Control": "no-store"})

    async def healthz(request: Request) -> Response:
        return _json({"ok": True, "started": d.started})

    routes = [
        Route("/", index), Route("/healthz", healthz),
        Route("/api/status", read(status)), Route("/api/plan", read(plan)), Route("/api/forecasts", read(forecasts)),
        Route("/api/events", read(events)), Route("/api/bill", read(bill)),
        Route("/api/overrides", read(list_overrides), methods=["GET"]),
        Route("/api/overrides", write(add_override), methods=["POST"]),
        Route("/api/overrides/{oid}", write(cancel_override), methods=["DELETE"]),
        Route("/metrics", read(prometheus)), Route("/chart.svg", read(chart)),
        Mount("/static", StaticFiles(directory=page.STATIC), name="static"),
    ]
    return Starlette(routes=routes)


def _int_param(request: Request, name: str, lo: int, hi: int | None, default: int | None) -> int | None:
    """A whole-number query parameter within lo..hi (OverrideError naming it otherwise)."""
    text = request.query_params.get(name)
    if text is None:
        return default
    n = int(text) if text.isdigit() else None
    if n is None or n < lo or (hi is not None and n > hi):
        raise OverrideError(name, text, f"a whole number {lo}..{hi}" if hi is not None else f"a whole number >= {lo}")
    return n


def _invalid(exc: ValidationError) -> JSONResponse:
    """422 naming each bad field of an override (pydantic's location without the kind's tag) and what is allowed."""
    out = []
    for e in exc.errors(include_url=False):
        loc = [str(x) for x in e["loc"]]
        if loc and loc[0] in KINDS:   # the discriminated union's branch
            loc = loc[1:]
        if e["type"] in ("union_tag_invalid", "union_tag_not_found"):
            field, allowed = "kind", f"one of {list(KINDS)}"
        elif e["type"] == "json_invalid":
            field, allowed = "body", "a JSON object"
        else:
            field, allowed = ".".join(loc) or "body", e["msg"]
        value = e.get("input")
        if isinstance(value, float) and not math.isfinite(value):
            value = str(value)
        out.append({"field": field, "value": value if isinstance(value, (str, int, float, bool, type(None))) else None,
                    "allowed": allowed})
    return _json({"error": "invalid override: nothing changed", "problems": out}, 422)
