"""Admin API routes behind the console's Experiments and Jobs pages (the
operator only: master key, or anonymous loopback when allowed):

- ``GET /admin/experiments``: every experiment as this replica has it
  (arms and weights; a canary's share, step, status, reason and history);
- ``POST /admin/experiments/{name}/rollback`` and ``/promote``: end a canary
  by hand, saved like the canary's own verdicts (compare-and-set, then the
  change notice every replica reloads on) and audited;
- ``GET /admin/jobs`` and ``GET /admin/batches``: the newest jobs and batches
  of every tenant, filtered, paged by cursor, bounded;
- ``POST /admin/prompts/{name}/label``: point a prompt's label at any
  version, forward or back (``seawall prompts label``), tell every replica,
  audited as ``prompt.label``.
"""

from __future__ import annotations

import asyncio
import dataclasses
from typing import TYPE_CHECKING, Annotated, Any

import msgspec
from msgspec import Meta
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from seawall.api.admin_routes import _serve as serve_admin
from seawall.api.http import json_response, read_body
from seawall.api.wire import convert, decode_json_object
from seawall.audit.model import ALL_TENANTS
from seawall.audit.record import actor_of
from seawall.console.session import CSRF_HEADER
from seawall.errors import InvalidRequest, NotFound
from seawall.experiments.service import OverrideRefused
from seawall.jobs.queue import JobState
from seawall.prompts.errors import PromptNotFound, SpecError
from seawall.prompts.model import NAME_RE, check_label

if TYPE_CHECKING:
    from seawall.app import Services
    from seawall.experiments.canary import Status

EXPERIMENTS_SCOPE = "admin:experiments"
MAX_PAGE = 100
MAX_CURSOR = 200


class OverrideIn(msgspec.Struct, forbid_unknown_fields=True):
    reason: Annotated[str, Meta(min_length=1, max_length=500)] | None = None


class LabelIn(msgspec.Struct, forbid_unknown_fields=True):
    version: Annotated[int, Meta(ge=1, le=10**9)]
    label: Annotated[str, Meta(min_length=1, max_length=64)] = "production"


async def prompt_label(request: Request) -> Response:
    """Move ``label`` to ``version`` (either way); a label already there is
    answered ``{"moved": false}`` and recorded nowhere. Prompts are
    gateway-wide, so (as the rollback) the operator's only."""
    async def handle(request: Request, svc: Services) -> Response:
        name = request.path_params["name"]
        if not NAME_RE.match(name):  # as the registry names prompts (at most 100 characters)
            raise PromptNotFound("No prompt by that name.", param="name")
        req = convert(decode_json_object(await read_body(request, 4096)), LabelIn)
        try:
            check_label(req.label)
        except SpecError as e:
            raise InvalidRequest(str(e), param="label") from None
        actor = "console" if request.headers.get(CSRF_HEADER) else "admin-api"
        # An unknown prompt or version is PromptNotFound (404).
        move = await asyncio.to_thread(svc.prompts.label, name, req.version, req.label, actor)
        if move is None:
            return json_response({"name": name, "label": req.label, "version": req.version,
                                  "moved": False})
        svc.prompts.invalidate()
        await svc.bus.publish({"kind": "prompt_label", "prompt": name})
        await svc.audit.record(request.state.ctx, "prompt.label", tenant=ALL_TENANTS,
                               target=f"{name}:{req.label}",
                               before={"label": req.label, "version": move.from_version},
                               after={"label": req.label, "version": move.to_version})
        return json_response({**dataclasses.asdict(move), "moved": True})
    return await serve_admin(request, "admin.prompts.label", handle)


def experiments_status(svc: Services) -> list[dict[str, Any]]:
    """Each experiment with its arms' weights now (a canary's from its share)."""
    rows = svc.experiments.status()
    for row in rows:
        if "share" in row:
            base, cand = row["variants"]
            row["weights"] = {base: round(100 - row["share"], 2), cand: round(row["share"], 2)}
    return rows


async def experiment_list(request: Request) -> Response:
    async def handle(request: Request, svc: Services) -> Response:
        return json_response({"object": "list", "data": experiments_status(svc)})
    return await serve_admin(request, "admin.experiments.list", handle)


def _override(status: Status, verb: str) -> Any:
    async def endpoint(request: Request) -> Response:
        async def handle(request: Request, svc: Services) -> Response:
            name = request.path_params["name"]
            if name not in svc.settings.experiments:
                raise NotFound(f"No experiment {name[:200]!r}.", param="name")
            req = convert(decode_json_object(await read_body(request, 4096) or b"{}"),
                          OverrideIn)
            ctx = request.state.ctx
            who = actor_of(ctx)
            done = "rolled back" if status == "rolled_back" else "promoted"
            reason = f"{done} by hand ({who.name})" + (f": {req.reason}" if req.reason else "")
            try:
                moved = await svc.experiments.override(name, status, reason, who.name)
            except OverrideRefused as e:
                raise InvalidRequest(str(e), code=f"{verb}_refused") from None
            await svc.audit.record(ctx, f"experiment.{verb}", tenant=ALL_TENANTS,
                                   target=name, before=moved["before"],
                                   after={**moved["after"], "reason": reason})
            return json_response({"name": name, "reason": reason, **moved})
        return await serve_admin(request, f"admin.experiments.{verb}", handle)
    return endpoint


def _limit(request: Request) -> int:
    raw = request.query_params.get("limit", "50")
    if not raw.isdigit() or not 1 <= int(raw) <= MAX_PAGE:
        raise InvalidRequest(f"limit must be from 1 to {MAX_PAGE}.", param="limit")
    return int(raw)


def _filter(request: Request, name: str) -> str | None:
    value = request.query_params.get(name) or None
    if value is not None and len(value) > 200:
        raise InvalidRequest(f"{name} is longer than 200 characters.", param=name)
    return value


def _job_cursor(raw: str | None) -> tuple[float, str] | None:
    """``<created_at>:<id>`` of the previous page's last job."""
    if raw is None:
        return None
    when, _, job_id = raw.partition(":")
    try:
        if len(raw) > MAX_CURSOR or not job_id:
            raise ValueError
        return float(when), job_id
    except ValueError:
        raise InvalidRequest("cursor must be a next_cursor from a previous page.",
                             param="cursor") from None


async def list_jobs(svc: Services, request: Request) -> dict[str, Any]:
    """The newest jobs (every tenant), as ``GET /admin/jobs`` answers."""
    limit = _limit(request)
    state = _filter(request, "state")
    if state is not None and state not in {s.value for s in JobState}:
        raise InvalidRequest(f"state must be one of {', '.join(s.value for s in JobState)}.",
                             param="state")
    jobs = await svc.jobs.list(state=state, kind=_filter(request, "kind"),
                               tenant=_filter(request, "tenant"), limit=limit + 1,
                               before=_job_cursor(_filter(request, "cursor")))
    page = jobs[:limit]
    data = []
    for j in page:
        d = j.public()
        d.pop("payload", None)  # may be large and hold a caller's data: `seawall jobs show`
        d.pop("result", None)
        data.append(d)
    nxt = f"{page[-1].created_at!r}:{page[-1].id}" if len(jobs) > limit else None
    return {"object": "list", "data": data, "next_cursor": nxt}


async def list_batches(svc: Services, request: Request) -> dict[str, Any]:
    """The newest batches (every tenant, or ``tenant``), as ``GET /admin/batches``."""
    limit = _limit(request)
    batches = await svc.batch_store.list_batches(_filter(request, "tenant"),
                                                 _filter(request, "after"), limit + 1)
    data = [{**b.public(), "tenant": b.tenant} for b in batches[:limit]]
    return {"object": "list", "data": data, "has_more": len(batches) > limit,
            "last_id": data[-1]["id"] if data else None}


async def job_list(request: Request) -> Response:
    async def handle(request: Request, svc: Services) -> Response:
        return json_response(await list_jobs(svc, request))
    return await serve_admin(request, "admin.jobs.list", handle)


async def batch_list(request: Request) -> Response:
    async def handle(request: Request, svc: Services) -> Response:
        return json_response(await list_batches(svc, request))
    return await serve_admin(request, "admin.batches.list", handle)


routes = [Route("/admin/experiments", experiment_list, methods=["GET"]),
          Route("/admin/experiments/{name}/rollback", _override("rolled_back", "rollback"),
                methods=["POST"]),
          Route("/admin/experiments/{name}/promote", _override("promoted", "promote"),
                methods=["POST"]),
          Route("/admin/prompts/{name}/label", prompt_label, methods=["POST"]),
          Route("/admin/jobs", job_list, methods=["GET"]),
          Route("/admin/batches", batch_list, methods=["GET"])]
