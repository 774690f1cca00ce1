"""The OpenAI Files (purpose ``batch``) and Batch APIs (docs/batches.md).

Uploads stream in under ``batches.max_file_bytes`` (413 past it; parts over
1 MB are spooled to disk by the multipart parser, then copied to the store
in 1 MB pieces on a thread), so no upload is ever whole in memory; downloads
stream out the same way. Every id is tenant-scoped: another tenant's is 404.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TYPE_CHECKING, Any

from starlette.datastructures import UploadFile
from starlette.formparsers import MultiPartException, MultiPartParser
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from seawall.api.http import error_response, json_response, peer_host, read_body
from seawall.api.uploads import bounded_stream
from seawall.api.wire import decode_json_object
from seawall.batches.lines import auth_of
from seawall.batches.store_api import CHUNK
from seawall.errors import BodyTooLarge, InvalidRequest, NotFound, SeawallError
from seawall.observe.logs import current_trace_id
from seawall.pipeline.context import RequestContext

if TYPE_CHECKING:
    from seawall.app import Services

PURPOSES = ("batch",)
MAX_PAGE = 100


def _svc(request: Request) -> Services:
    return request.app.state.services


def _ctx(request: Request, endpoint: str) -> RequestContext:
    h = request.headers
    ctx = RequestContext(endpoint=endpoint, authorization=h.get("authorization"),
                         client_host=peer_host(request), traceparent=h.get("traceparent"))
    current_trace_id.set(ctx.trace_id)
    return ctx


Work = Callable[["Services", RequestContext, Request], Awaitable[Response]]


async def _served(request: Request, endpoint: str, work: Work) -> Response:
    """``work`` inside the pipeline's scope (auth, admission, the key's rate
    limits, a trace record), answered with ``x-request-id`` like every other
    route; its errors as the OpenAI error envelope."""
    svc = _svc(request)
    ctx = _ctx(request, endpoint)
    headers = {"x-request-id": ctx.trace_id}
    try:
        async with svc.pipeline.scope(ctx):  # the scope "jobs", the key's rate limits
            response = await work(svc, ctx, request)
    except SeawallError as e:
        return error_response(e, headers)
    response.headers.update(headers)
    return response


def _page(request: Request) -> tuple[int, str | None]:
    raw = request.query_params.get("limit", "20")
    if not raw.isdigit() or not 1 <= int(raw) <= MAX_PAGE:
        raise InvalidRequest(f"limit must be from 1 to {MAX_PAGE}.", param="limit")
    return int(raw), request.query_params.get("after")


def _listing(items: list[Any], limit: int) -> dict[str, Any]:
    data = [i.public() for i in items[:limit]]
    return {"object": "list", "data": data, "has_more": len(items) > limit,
            "first_id": data[0]["id"] if data else None,
            "last_id": data[-1]["id"] if data else None}


async def _upload_chunks(upload: UploadFile) -> AsyncIterator[bytes]:
    await upload.seek(0)
    while piece := await upload.read(CHUNK):  # a thread read once spooled to disk
        yield piece


async def _create_file(svc: Services, ctx: RequestContext, request: Request) -> Response:
    limit = svc.settings.batches.max_file_bytes
    parser = MultiPartParser(request.headers, bounded_stream(request, limit),
                             max_files=1, max_fields=10, max_part_size=1 << 16)
    try:
        form = await parser.parse()
    except MultiPartException as e:
        raise InvalidRequest(f"Invalid multipart form: {e.message}",
                             code="invalid_form") from None
    except BodyTooLarge:
        raise BodyTooLarge(f"The file is larger than {limit} bytes, the most this "
                           "gateway accepts (batches.max_file_bytes); split the batch.",
                           param="file") from None
    try:
        purpose, upload = form.get("purpose"), form.get("file")
        if purpose not in PURPOSES:
            raise InvalidRequest("purpose must be 'batch' (the only purpose this "
                                 "gateway stores files for).", param="purpose")
        if not isinstance(upload, UploadFile):
            raise InvalidRequest("A file part named 'file' is required.", param="file")
        stored = await svc.batch_store.put_file(
            ctx.tenant, (upload.filename or "upload.jsonl")[:256], str(purpose),
            _upload_chunks(upload))
    finally:
        await form.close()
    return json_response(stored.public())


async def _list_files(svc: Services, ctx: RequestContext, request: Request) -> Response:
    limit, after = _page(request)
    files = await svc.batch_store.list_files(
        ctx.tenant, request.query_params.get("purpose"), after, limit + 1)
    return json_response(_listing(files, limit))


async def _file(svc: Services, ctx: RequestContext, request: Request) -> Any:
    file_id = request.path_params["file_id"]
    f = await svc.batch_store.get_file(file_id, ctx.tenant)
    if f is None:
        raise NotFound(f"No such file: {file_id[:100]!r}.", param="file_id")
    return f


async def _retrieve_file(svc: Services, ctx: RequestContext, request: Request) -> Response:
    return json_response((await _file(svc, ctx, request)).public())


async def _file_content(svc: Services, ctx: RequestContext, request: Request) -> Response:
    f = await _file(svc, ctx, request)
    return StreamingResponse(svc.batch_store.read_file(f.id),
                             media_type="application/octet-stream",
                             headers={"content-length": str(f.bytes)})


async def _delete_file(svc: Services, ctx: RequestContext, request: Request) -> Response:
    f = await _file(svc, ctx, request)
    await svc.batch_store.delete_file(f.id, ctx.tenant)
    return json_response({"id": f.id, "object": "file", "deleted": True})


async def _create_batch(svc: Services, ctx: RequestContext, request: Request) -> Response:
    body = decode_json_object(await read_body(request, 64 * 1024),
                              svc.settings.server.max_json_depth)
    batch = await svc.batches.create(
        ctx.tenant, auth_of(ctx), body.get("input_file_id"), body.get("endpoint"),
        body.get("completion_window"), body.get("metadata"))
    return json_response(batch.public())


async def _batch(svc: Services, ctx: RequestContext, request: Request) -> Any:
    batch_id = request.path_params["batch_id"]
    b = await svc.batch_store.get_batch(batch_id, ctx.tenant)
    if b is None:
        raise NotFound(f"No such batch: {batch_id[:100]!r}.", param="batch_id")
    return b


async def _retrieve_batch(svc: Services, ctx: RequestContext, request: Request) -> Response:
    return json_response((await _batch(svc, ctx, request)).public())


async def _cancel_batch(svc: Services, ctx: RequestContext, request: Request) -> Response:
    b = await _batch(svc, ctx, request)
    b = await svc.batches.cancel(b.id, ctx.tenant) or b
    return json_response(b.public())


async def _list_batches(svc: Services, ctx: RequestContext, request: Request) -> Response:
    limit, after = _page(request)
    batches = await svc.batch_store.list_batches(ctx.tenant, after, limit + 1)
    return json_response(_listing(batches, limit))


def _route(path: str, method: str, endpoint: str, work: Work) -> Route:
    async def handler(request: Request) -> Response:
        return await _served(request, endpoint, work)

    return Route(path, handler, methods=[method])


routes = [
    _route("/v1/files", "POST", "files", _create_file),
    _route("/v1/files", "GET", "files", _list_files),
    _route("/v1/files/{file_id}", "GET", "files", _retrieve_file),
    _route("/v1/files/{file_id}", "DELETE", "files", _delete_file),
    _route("/v1/files/{file_id}/content", "GET", "files", _file_content),
    _route("/v1/batches", "POST", "batches", _create_batch),
    _route("/v1/batches", "GET", "batches", _list_batches),
    _route("/v1/batches/{batch_id}", "GET", "batches", _retrieve_batch),
    _route("/v1/batches/{batch_id}/cancel", "POST", "batches", _cancel_batch),
]
