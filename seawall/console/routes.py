"""The console's pages under /ui: server-rendered (Jinja2), every one behind
the same permission check (seawall/console/guard.py), every response with a
Content-Security-Policy that allows no inline script.

Pages read through seawall/console/service.py; actions (revoke a key, rate
an answer, chat) are calls from the page to the public HTTP API itself
(seawall/console/bridge.py adds the signed-in credential).
"""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode

import jinja2
import orjson
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from seawall.api.http import read_body
from seawall.console import charts, pages_more, prompt_page
from seawall.console.detail import attempt_bars, replay_of, waterfall
from seawall.console.guard import (
    OPERATOR_PAGES,
    SCOPES,
    SECURITY_HEADERS,
    allowed,
    identify,
    key_of,
)
from seawall.console.keyauth import may_sign_in
from seawall.console.queries import RANGES, TraceFilter
from seawall.console.session import (
    COOKIE,
    CSRF_FIELD,
    PRE_COOKIE,
    Identity,
    cookie_header,
    cookie_value,
    csrf_ok,
)
from seawall.errors import SeawallError
from seawall.pipeline.budget_admin import key_limit, spend_line
from seawall.pipeline.context import RequestContext
from seawall.pipeline.permissions import DEFAULT_APP_SCOPES, MASTER, scopes_of
from seawall.pipeline.permissions import SCOPES as PERMISSION_SCOPES
from seawall.pipeline.stages import VIRTUAL_KEY_PREFIX, AuthStage, hash_key
from seawall.quality.trace_view import trace_with_feedback
from seawall.store.base import ApiKey

if TYPE_CHECKING:
    from seawall.app import Services

HERE = Path(__file__).parent
MAX_FORM = 16 * 1024
NAV = [("overview", "Overview"), ("traces", "Traces"), ("playground", "Playground"),
       ("keys", "Keys"), ("prompts", "Prompts"), ("quality", "Quality"), *pages_more.NAV]


def _when(ts: float | None) -> str:
    if ts is None:
        return ""
    return dt.datetime.fromtimestamp(ts, dt.UTC).strftime("%Y-%m-%d %H:%M:%S")


def _num(v: Any, digits: int = 0) -> str:
    if v is None:
        return "–"
    return f"{v:,.{digits}f}"


def _usd(v: Any) -> str:
    return "–" if v is None else f"${v:,.4f}"


def _pct(v: Any) -> str:
    return "–" if v is None else f"{100 * v:.1f}%"


def _pretty(v: Any) -> str:
    if isinstance(v, str):
        return v
    return orjson.dumps(v, option=orjson.OPT_INDENT_2).decode()


templates = jinja2.Environment(
    loader=jinja2.FileSystemLoader(HERE / "templates"), autoescape=True,
    undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True)
templates.filters.update(when=_when, num=_num, usd=_usd, pct=_pct, pretty=_pretty)


def _svc(request: Request) -> Services:
    return request.app.state.services


def _secure(request: Request) -> bool:
    return request.url.scheme == "https"


def _finish(request: Request, response: Response, ident: Identity | None) -> Response:
    """Security headers; a session made just now (anonymous loopback) is kept."""
    response.headers.update(SECURITY_HEADERS)
    if ident is not None and ident.anonymous:
        svc = _svc(request)
        had = cookie_value(request.headers.get("cookie"), COOKIE)
        if svc.console.sessions.read(had) != ident:
            response.headers.append("set-cookie", cookie_header(
                COOKIE, svc.console.sessions.cookie(ident),
                int(svc.settings.console.session_ttl_s), _secure(request)))
    return response


def nav_for(ident: Identity, key: ApiKey | None) -> list[tuple[str, str]]:
    """The sections ``ident`` may open: the page's scope held (as the page
    checks it) and, for a key, no operator-only page. Hiding a link is a
    courtesy: each page still checks on its own."""
    operator_only = OPERATOR_PAGES | pages_more.OPERATOR_ONLY
    return [(name, label) for name, label in NAV
            if allowed(ident, SCOPES[name], key)
            and (ident.role == "operator" or name not in operator_only)]


def render(request: Request, template: str, ident: Identity | None, status: int = 200,
           **ctx: Any) -> Response:
    nav = nav_for(ident, getattr(request.state, "console_key", None)) if ident else []
    html = templates.get_template(template).render(
        ident=ident, nav=nav, csrf=ident.csrf if ident else "", **ctx)
    return _finish(request, HTMLResponse(html, status_code=status), ident)


Page = Callable[[Request, "Services", Identity], Awaitable[Response]]


def page(name: str, handler: Page) -> Callable[[Request], Awaitable[Response]]:
    """A console page: signed in (or anonymous loopback), holding the page's
    scope (``SCOPES[name]``), errors shown as a page."""
    scope = SCOPES[name]

    async def endpoint(request: Request) -> Response:
        svc = _svc(request)
        ident = identify(request, svc.console.sessions, svc.settings)
        current = await key_of(ident, svc.console_keys) if ident is not None else None
        if current is None:
            query = {"next": request.url.path}
            if ident is not None:  # a key's session whose key was revoked, expired...
                query["ended"] = "1"
            target = "/ui/signin?" + urlencode(query)
            response = RedirectResponse(target, status_code=303)
            if ident is not None:
                response.headers.append("set-cookie",
                                        cookie_header(COOKIE, "", 0, _secure(request)))
            return _finish(request, response, None)
        ident, key = current
        request.state.console_key = key  # the navigation shows what it may open
        if ident.is_key and name in OPERATOR_PAGES:
            return render(request, "error.html", ident, status=403, active=name,
                          message="This page shows figures of every tenant: the operator's "
                                  "(master key) only.")
        if not allowed(ident, scope, key):
            return render(request, "error.html", ident, status=403, active=name,
                          message=f"This page needs the {scope} scope.")
        try:
            return await handler(request, svc, ident)
        except SeawallError as e:
            return render(request, "error.html", ident, status=e.status, active=name,
                          message=e.message)
    return endpoint


# -- sign in / out --

def _next(value: str | None) -> str:
    """Only a console path: never an open redirect."""
    if value and value.startswith("/ui") and "//" not in value and "\\" not in value:
        return value
    return "/ui/overview"


async def signin_form(request: Request) -> Response:
    svc = _svc(request)
    token = svc.console.sessions.pre_token()
    ended = request.query_params.get("ended") == "1"
    response = render(request, "signin.html", None, pre=token,
                      error=ENDED if ended else None,
                      next=_next(request.query_params.get("next")))
    response.headers.append("set-cookie", cookie_header(PRE_COOKIE, token, 900,
                                                        _secure(request)))
    return response


async def signin(request: Request) -> Response:
    svc = _svc(request)
    form = await _form(request)
    sessions = svc.console.sessions
    nxt = _next(form.get("next"))
    if not sessions.pre_ok(cookie_value(request.headers.get("cookie"), PRE_COOKIE),
                           form.get(CSRF_FIELD)):
        return _finish(request, HTMLResponse("Sign-in form expired or forged (CSRF); reload "
                                             "the sign-in page.", status_code=403), None)
    secret = (form.get("key") or "").strip()
    ident, why = await _signed_in(request, svc, secret)
    if ident is None:
        token = sessions.pre_token()
        response = render(request, "signin.html", None, status=401, pre=token, error=why,
                          next=nxt)
        response.headers.append("set-cookie", cookie_header(PRE_COOKIE, token, 900,
                                                            _secure(request)))
        return response
    response = RedirectResponse(nxt, status_code=303)
    response.headers.append("set-cookie", cookie_header(
        COOKIE, sessions.cookie(ident), int(svc.settings.console.session_ttl_s),
        _secure(request)))
    return _finish(request, response, None)


ENDED = "Your session has ended: its key was revoked, expired or rotated out. Sign in again."


async def _signed_in(request: Request, svc: Services, secret: str
                     ) -> tuple[Identity | None, str]:
    """Check ``secret`` as the API does (seawall/pipeline/stages.py AuthStage):
    the master key, or a virtual key holding an admin scope. The session
    remembers a key by id and fingerprint, never the secret."""
    if not secret or AuthStage.secret_of("Bearer " + secret) is None:
        return None, "Enter the master key or an admin key."
    ctx = RequestContext(endpoint="console.signin", authorization="Bearer " + secret,
                         client_host=request.client.host if request.client else None)
    try:
        await svc.auth.before(ctx)
    except SeawallError as e:
        if not secret.startswith(VIRTUAL_KEY_PREFIX):
            return None, "That key is not the master key."
        return None, e.message
    sessions = svc.console.sessions
    key = ctx.key
    if key is MASTER:
        return sessions.new("operator", "operator", None), ""
    if key is None:  # not reachable with a non-empty secret; refuse rather than assume
        return None, "That key is not the master key."
    if not may_sign_in(key):
        return None, (f"The key {key.name!r} (role {key.role}) holds no admin scope "
                      f"({', '.join(scopes_of(key)) or 'none'}), so it cannot sign in to the "
                      "console; use a tenant_admin key or the master key.")
    return sessions.new(key.id, key.role, key.tenant, name=key.name,
                        kf=svc.console_keys.fingerprint(hash_key(secret))), ""


async def signout(request: Request) -> Response:
    svc = _svc(request)
    form = await _form(request)
    ident = svc.console.sessions.read(cookie_value(request.headers.get("cookie"), COOKIE))
    if not csrf_ok(ident, form.get(CSRF_FIELD)):
        return _finish(request, HTMLResponse("Missing or wrong CSRF token.", status_code=403),
                       None)
    response = RedirectResponse("/ui/signin", status_code=303)
    response.headers.append("set-cookie", cookie_header(COOKIE, "", 0, _secure(request)))
    return _finish(request, response, None)


async def _form(request: Request) -> dict[str, str]:
    """A small urlencoded form (bounded)."""
    from urllib.parse import parse_qs

    body = await read_body(request, MAX_FORM)
    return {k: v[0] for k, v in parse_qs(body.decode("utf-8", "replace")).items()}


# -- pages --

async def overview(request: Request, svc: Services, ident: Identity) -> Response:
    rng = request.query_params.get("range", "24h")
    data = await svc.console.overview(rng, ident.tenant)
    template = "overview_panel.html" if request.query_params.get("panel") else "overview.html"
    breakers = {name: dep.health.breaker.state.label
                for name, dep in svc.registry.by_name.items()}
    return render(request, template, ident, active="overview", data=data, range=rng,
                  ranges=list(RANGES), breakers=breakers, tiers=_tiers(svc.settings),
                  series=orjson.dumps(data["series"]).decode())


def _tiers(settings: Any) -> dict[str, dict[str, str]]:
    """Each configured route's tiers named: cheapest, strongest, or tier i."""
    out: dict[str, dict[str, str]] = {}
    for name, route in settings.routes.items():
        last = len(route.tiers) - 1
        out[name] = {m: "cheapest" if i == 0 else "strongest" if i == last else f"tier {i}"
                     for i, m in enumerate(route.tiers)}
    return out


async def traces(request: Request, svc: Services, ident: Identity) -> Response:
    f = TraceFilter.parse(request.query_params)
    if ident.tenant is not None:
        f.tenant = ident.tenant  # a tenant's view: forced, whatever the URL says
    result = await svc.console.queries.page(f)
    counts = await svc.console.queries.feedback_counts([r["trace_id"] for r in result.rows])
    params = {k: v for k, v in request.query_params.items() if k != "cursor" and v}
    older = ("?" + urlencode({**params, "cursor": result.next_cursor})
             if result.next_cursor else None)
    return render(request, "traces.html", ident, active="traces", page=result, counts=counts,
                  params=defaultdict(str, params), older=older, models=sorted(svc.settings.models),
                  routes=sorted(svc.settings.routes))


async def trace(request: Request, svc: Services, ident: Identity) -> Response:
    trace_id = request.path_params["trace_id"]
    doc = None
    if 0 < len(trace_id) <= 200:
        doc = await trace_with_feedback(svc.store, svc.feedback, trace_id, svc.scores)
    if doc is None or (ident.tenant is not None and doc["tenant"] != ident.tenant):
        return render(request, "error.html", ident, status=404, active="traces",
                      message=f"No trace record {trace_id!r}.")
    spans = waterfall(doc.get("spans"))
    upstream = next((b.start_ms for b in spans if b.name == "upstream"), 0.0)
    return render(request, "trace.html", ident, active="traces", t=doc, spans=spans,
                  attempts=attempt_bars(doc.get("attempts"), doc.get("latency_ms"), upstream),
                  replay="/ui/playground?" + urlencode({"replay": doc["trace_id"]}))


async def playground(request: Request, svc: Services, ident: Identity) -> Response:
    import asyncio

    models = sorted(n for n, m in svc.settings.models.items() if m.kind == "chat")
    replay: dict[str, Any] = {}
    rid = request.query_params.get("replay")
    if rid and len(rid) <= 200:
        doc = await trace_with_feedback(svc.store, svc.feedback, rid)
        if doc and (ident.tenant is None or doc["tenant"] == ident.tenant):
            replay = replay_of(doc)
    prompts = [p.name for p in await asyncio.to_thread(svc.prompts.list)]
    collections = sorted(c.name for c in await svc.rag.collections(ident.tenant or "default"))
    scale = svc.settings.feedback.scale
    return render(request, "playground.html", ident, active="playground", models=models,
                  routes=sorted(svc.settings.routes), prompts=prompts, collections=collections,
                  replay=replay,
                  scale_min=scale.min, scale_max=scale.max)


MAX_SPEND_ROWS = 200  # keys whose spend the page reads (one budget read each)


async def keys(request: Request, svc: Services, ident: Identity) -> Response:
    """Active keys (a tenant's view: its own), each key's own budget with its
    spend this period (as ``GET /admin/keys/{id}``), and the form that makes
    a key through ``POST /admin/keys`` (static/keys.js)."""
    rows = await svc.store.list_keys(include_revoked=False, tenant=ident.tenant)
    spend: dict[str, dict[str, Any]] = {}
    for k in rows:
        lim = key_limit(k)
        if lim is not None and len(spend) < MAX_SPEND_ROWS:
            spend[k.id] = await spend_line(svc.budgets, lim)
    held: tuple[str, ...] = PERMISSION_SCOPES  # what the signed-in identity may grant
    if ident.is_key:
        me = await svc.auth.key_by_id(ident.sub)
        held = scopes_of(me) if me is not None else ()
    return render(request, "keys.html", ident, active="keys", keys=rows, spend=spend,
                  scopes=held, default_scopes=DEFAULT_APP_SCOPES,
                  models=sorted(svc.settings.models) + sorted(svc.settings.routes))


async def prompts(request: Request, svc: Services, ident: Identity) -> Response:
    import asyncio

    summaries = await asyncio.to_thread(svc.prompts.list)
    return render(request, "prompts.html", ident, active="prompts", prompts=summaries)


async def quality(request: Request, svc: Services, ident: Identity) -> Response:
    """The quality evaluator's last round (SLOs with budget and burn rates,
    drift per model x prompt version) and the alert states: read, never
    recomputed, so the page costs nothing however much traffic there is."""
    import time

    q = svc.settings.quality
    last = svc.quality.last if svc.quality is not None else None
    alerts = await svc.slo_store.alerts() if (q.slos or q.drift.enabled) else []
    rng = request.query_params.get("range", "7d")
    if rng not in charts.RANGES:
        rng = "7d"
    series: list[dict[str, Any]] = []
    slo_series: list[dict[str, Any]] = []
    untested: list[str] = []
    if svc.quality is not None:
        since = time.time() - charts.RANGES[rng]
        series, untested = charts.drift_series(await svc.quality.drift_points(since))
        slo_series = charts.slo_series(await svc.quality.slo_points(since))
    return render(request, "quality.html", ident, active="quality",
                  configured=bool(q.slos or q.judges or q.drift.enabled), last=last,
                  judges=[j.name for j in q.judges], alerts=alerts[:50],
                  drift_series=series, untested=untested, range=rng, ranges=list(charts.RANGES),
                  series_json=[orjson.dumps(g).decode() for g in series],
                  slo_series=slo_series,
                  slo_json=[orjson.dumps(g).decode() for g in slo_series])


async def home(request: Request) -> Response:
    return RedirectResponse("/ui/overview", status_code=303)


def console_app(state: Any) -> Starlette:
    """The console as an ASGI app of its own (mounted at /ui by
    seawall/console/bridge.py), sharing the gateway's services."""
    app = Starlette(routes=routes(), exception_handlers={Exception: _crash})
    app.state.services = state.services
    return app


async def _crash(request: Request, exc: Exception) -> Response:
    import logging

    logging.getLogger("seawall.console").error("console page failed", exc_info=exc)
    return _finish(request, HTMLResponse("The console failed on this page; the gateway's log "
                                         "says why.", status_code=500), None)


def routes() -> list[Any]:
    return [
        Route("/ui", home, methods=["GET"]),
        Route("/ui/", home, methods=["GET"]),
        Route("/ui/signin", signin_form, methods=["GET"]),
        Route("/ui/signin", signin, methods=["POST"]),
        Route("/ui/signout", signout, methods=["POST"]),
        Route("/ui/overview", page("overview", overview), methods=["GET"]),
        Route("/ui/traces", page("traces", traces), methods=["GET"]),
        Route("/ui/traces/{trace_id}", page("traces", trace), methods=["GET"]),
        Route("/ui/playground", page("playground", playground), methods=["GET"]),
        Route("/ui/keys", page("keys", keys), methods=["GET"]),
        Route("/ui/prompts", page("prompts", prompts), methods=["GET"]),
        *prompt_page.routes(page),
        Route("/ui/quality", page("quality", quality), methods=["GET"]),
        *pages_more.routes(page),
        Mount("/ui/static", StaticFiles(directory=HERE / "static"), name="console-static"),
    ]

