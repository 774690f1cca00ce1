"""The RAG endpoints: collections, documents and search (docs/rag.md#http-api).

Every call goes through the pipeline like the OpenAI routes (authentication,
admission, the key's rate limit, a trace record: ``Pipeline.scope``) and works
inside the caller's tenant: a collection named ``handbook`` of one tenant is
invisible to another. Documents arrive as JSON (``{"documents": [{"text": ...,
"source": ...}]}``) or as a multipart upload of files, whose format is
detected from the file name (Markdown, text, HTML, PDF, JSONL). Uploads are
capped while they are read; parsing, chunking and embedding run on a worker
thread under the tenant's ingestion quota, and stop when the client leaves.
"""

from __future__ import annotations

import asyncio
import re
import threading
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Annotated, Any, Literal, TypeVar

import msgspec
from msgspec import Meta
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from seawall.api.http import DisconnectWatch, error_response, json_response, peer_host, read_body
from seawall.api.limits import depth_exceeds
from seawall.api.uploads import File, read_form, read_upload
from seawall.api.wire import convert, decode_json_object
from seawall.audit.record import collection_state
from seawall.errors import InvalidRequest, SeawallError
from seawall.observe.logs import current_trace_id
from seawall.pipeline.context import RequestContext
from seawall.pipeline.permissions import (
    WRITE_ENDPOINTS,
    may_read_collection,
    require_collection,
)
from seawall.pipeline.pipeline import ClientClosed
from seawall.rag.documents import LoadedDocument
from seawall.rag.ingest import check_cancel
from seawall.rag.loaders import UnsupportedFormat, detect_format, load_bytes, load_text
from seawall.rag.service import SearchRequest
from seawall.rag.stage import RagState

if TYPE_CHECKING:
    from seawall.app import Services

T = TypeVar("T")
COLLECTION_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
Formats = Literal["markdown", "text", "html", "jsonl"]
MAX_JSON_BYTES = 1 << 20  # search and delete bodies
# Levels of objects and lists a document's metadata may nest (it is stored
# and hashed as JSON, and orjson stops at 255).
MAX_METADATA_DEPTH = 32
MAX_ID = 2**63 - 1  # SQLite's INTEGER: a larger id was a 500 (found by fuzzing)
RowId = Annotated[int, Meta(ge=0, le=MAX_ID)]


class DocumentIn(msgspec.Struct, forbid_unknown_fields=True):
    text: str
    source: Annotated[str, Meta(min_length=1, max_length=1000)] | None = None
    id: Annotated[str, Meta(min_length=1, max_length=1000)] | None = None  # = source
    title: str | None = None
    format: Formats | None = None  # None: from the source's extension (.md, .html...), else text
    metadata: dict[str, Any] = {}


class DocumentsIn(msgspec.Struct, forbid_unknown_fields=True):
    documents: Annotated[list[DocumentIn], Meta(min_length=1, max_length=10_000)]


class SearchIn(msgspec.Struct, forbid_unknown_fields=True):
    query: Annotated[str, Meta(min_length=1)]
    top_k: Annotated[int, Meta(ge=1, le=100)] = 5
    filter: dict[str, Any] | None = None
    mode: Literal["hybrid", "bm25", "dense"] | None = None
    fusion: Literal["rrf", "weighted"] | None = None
    rerank: bool | None = None
    collection: str | None = None  # /v1/retrieve only


class DeleteIn(msgspec.Struct, forbid_unknown_fields=True):
    ids: list[RowId] = []
    sources: list[str] = []


def _svc(request: Request) -> Services:
    return request.app.state.services


Handler = Callable[[Request, "Services", RequestContext], Awaitable[Response]]


async def _serve(request: Request, endpoint: str, handler: Handler) -> Response:
    """Run ``handler`` inside the pipeline's scope: authenticated, admitted,
    rate limited and recorded as ``endpoint``, whatever happens."""
    svc = _svc(request)
    h = request.headers
    ctx = RequestContext(endpoint=endpoint, authorization=h.get("authorization"),
                         client_host=peer_host(request),
                         traceparent=h.get("traceparent"))
    current_trace_id.set(ctx.trace_id)
    headers = {"x-request-id": ctx.trace_id}
    try:
        async with svc.pipeline.scope(ctx):
            response = await handler(request, svc, ctx)
    except SeawallError as e:
        return error_response(e, headers)
    response.headers.update(headers)
    return response


def _decode(body: bytes, typ: type[T]) -> T:
    """A JSON body as ``typ``, nested at most the default JSON depth (api/limits.py)."""
    return convert(decode_json_object(body), typ)


def _name(value: str | None) -> str:
    if value is None or not COLLECTION_NAME.match(value):
        raise InvalidRequest("A collection name is 1-64 letters, digits, '.', '_' or '-', "
                             "starting with a letter or digit.", param="collection")
    return value


def _int(request: Request, param: str, default: int, lo: int, hi: int) -> int:
    raw = request.query_params.get(param)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise InvalidRequest(f"{param} must be an integer", param=param) from None
    if not lo <= value <= hi:
        raise InvalidRequest(f"{param} must be between {lo} and {hi}", param=param)
    return value


def _doc_id(request: Request) -> int:
    doc_id: int = request.path_params["doc_id"]  # the route's ``:int`` converter
    if doc_id > MAX_ID:
        raise InvalidRequest(f"doc_id must be at most {MAX_ID}", param="doc_id")
    return doc_id


def _note(ctx: RequestContext, collection: str) -> None:
    """May the caller read (or, for a writing endpoint, write) ``collection``?
    (its key's scopes and --collections-read/-write); then the collection in
    the trace record's ``rag`` field."""
    require_collection(ctx, collection, write=ctx.endpoint in WRITE_ENDPOINTS)
    ctx.rag = RagState(collection=collection, query="", top_k=0, sources=[], candidates=0,
                       system="")


async def list_collections(request: Request) -> Response:
    async def handle(request: Request, svc: Services, ctx: RequestContext) -> Response:
        rows = [c for c in await svc.rag.collections(ctx.tenant)
                if may_read_collection(ctx, c.name)]
        return json_response({"object": "list", "data": [c.public() for c in rows]})
    return await _serve(request, "rag.collections.list", handle)


async def get_collection(request: Request) -> Response:
    async def handle(request: Request, svc: Services, ctx: RequestContext) -> Response:
        name = _name(request.path_params["name"])
        _note(ctx, name)
        return json_response((await svc.rag.collection(ctx.tenant, name)).public())
    return await _serve(request, "rag.collections.get", handle)


async def delete_collection(request: Request) -> Response:
    async def handle(request: Request, svc: Services, ctx: RequestContext) -> Response:
        name = _name(request.path_params["name"])
        _note(ctx, name)
        info = await svc.rag.collection(ctx.tenant, name)  # raises the 404
        if not await svc.rag.delete_collection(ctx.tenant, name):
            await svc.rag.collection(ctx.tenant, name)  # deleted meanwhile: the 404
        await svc.audit.record(ctx, "collection.delete", tenant=ctx.tenant, target=name,
                               before=collection_state(info))
        return json_response({"object": "collection.deleted", "name": name, "deleted": True})
    return await _serve(request, "rag.collections.delete", handle)


def _metadata(value: dict[str, Any], param: str) -> dict[str, Any]:
    if depth_exceeds(value, MAX_METADATA_DEPTH):
        raise InvalidRequest(f"{param} nests more than {MAX_METADATA_DEPTH} levels of objects "
                             "and lists", param=param, code="too_deeply_nested")
    return value


def _load(what: str, load: Callable[[], list[LoadedDocument]]) -> list[LoadedDocument]:
    """One document's (or file's) loader, its failures as 400s that name it."""
    try:
        docs = load()
    except (UnsupportedFormat, ValueError) as e:
        raise InvalidRequest(f"{what}: {e}", param=what) from None
    except RecursionError:
        raise InvalidRequest(f"{what}: the document is too deeply nested to read",
                             param=what, code="too_deeply_nested") from None
    for d in docs:
        _metadata(d.metadata, what)
    return docs


def _from_json(body: bytes, cancel: threading.Event) -> list[LoadedDocument]:
    """JSON documents, decoded and parsed (on a worker thread)."""
    req = _decode(body, DocumentsIn)
    docs: list[LoadedDocument] = []
    for i, d in enumerate(req.documents):
        check_cancel(cancel)
        what = f"documents[{i}]"
        source = d.source or d.id
        if source is None:
            raise InvalidRequest(f"{what} needs a source (or id): re-sending the same "
                                 "source replaces that document", param=f"{what}.source")
        _metadata(d.metadata, f"{what}.metadata")

        def load(d: DocumentIn = d, source: str = source) -> list[LoadedDocument]:
            fmt = d.format or detect_format(source)
            if fmt == "pdf":
                raise ValueError("a PDF is uploaded as a file (multipart), not as JSON text")
            return load_text(d.text, source, fmt, metadata=d.metadata, title=d.title,
                             modified=time.time())
        docs += _load(what, load)
    return docs


def _from_files(files: list[File], metadata: dict[str, Any],
                cancel: threading.Event) -> list[LoadedDocument]:
    """Uploaded files, parsed (on a worker thread), checking between files
    whether the client left."""
    docs: list[LoadedDocument] = []
    for f in files:
        check_cancel(cancel)

        def load(f: File = f) -> list[LoadedDocument]:
            return load_bytes(f.data, f.name, metadata=dict(metadata), modified=time.time())
        docs += _load(f.name, load)
    return docs


async def _read_documents(request: Request, svc: Services
                          ) -> tuple[Callable[[threading.Event], list[LoadedDocument]], int]:
    """Read the body under the upload cap; return the function that parses
    it, and its size."""
    rag = svc.settings.rag
    if request.headers.get("content-type", "").startswith("multipart/form-data"):
        form = await read_form(request, rag.max_upload_bytes, rag.max_files)
        metadata: dict[str, Any] = {}
        if "metadata" in form.fields:
            try:
                metadata = decode_json_object(form.fields["metadata"].encode())
            except (SeawallError, RecursionError):
                raise InvalidRequest("the metadata field must be a JSON object",
                                     param="metadata") from None
            _metadata(metadata, "metadata")
        if not form.files:
            raise InvalidRequest("the form has no file fields", param="file")
        files = form.files
        return (lambda cancel: _from_files(files, metadata, cancel),
                sum(len(f.data) for f in files))
    body = await read_upload(request, rag.max_upload_bytes)
    return lambda cancel: _from_json(body, cancel), len(body)


async def add_documents(request: Request) -> Response:
    async def handle(request: Request, svc: Services, ctx: RequestContext) -> Response:
        name = _name(request.path_params["name"])
        _note(ctx, name)
        quota = svc.rag.quota
        existed = await asyncio.to_thread(svc.rag.store.collection_id, ctx.tenant, name)
        with quota.tenant_slot(ctx.tenant):  # before the body: a refusal costs nothing
            load, size = await _read_documents(request, svc)
            quota.charge(ctx.tenant, size)
            with quota.work_slot():
                async with DisconnectWatch(request.receive) as watch:
                    results = await svc.rag.ingest(ctx.tenant, name, load)
            if existed is None:
                info = await svc.rag.collection(ctx.tenant, name)
                await svc.audit.record(ctx, "collection.create", tenant=ctx.tenant,
                                       target=name, after=collection_state(info))
            if watch.disconnected:
                raise ClientClosed("The client closed the connection during the ingestion; "
                                   "documents stored before it left stay stored.")
        return json_response({"object": "list", "collection": name,
                              "data": [r.public() for r in results]})
    return await _serve(request, "rag.ingest", handle)


async def list_documents(request: Request) -> Response:
    async def handle(request: Request, svc: Services, ctx: RequestContext) -> Response:
        name = _name(request.path_params["name"])
        _note(ctx, name)
        limit = _int(request, "limit", 100, 1, 1000)
        after = _int(request, "after", 0, 0, 2**62)
        docs = await svc.rag.documents(ctx.tenant, name, limit, after)
        return json_response({"object": "list", "data": [d.public() for d in docs],
                              "has_more": len(docs) == limit,
                              "last_id": docs[-1].id if docs else None})
    return await _serve(request, "rag.documents.list", handle)


async def get_document(request: Request) -> Response:
    async def handle(request: Request, svc: Services, ctx: RequestContext) -> Response:
        name = _name(request.path_params["name"])
        _note(ctx, name)
        doc = await svc.rag.document(ctx.tenant, name, _doc_id(request))
        return json_response(doc.public())
    return await _serve(request, "rag.documents.get", handle)


async def delete_document(request: Request) -> Response:
    async def handle(request: Request, svc: Services, ctx: RequestContext) -> Response:
        name = _name(request.path_params["name"])
        _note(ctx, name)
        doc_id = _doc_id(request)
        await svc.rag.document(ctx.tenant, name, doc_id)  # 404 if absent
        await svc.rag.delete_documents(ctx.tenant, name, ids=[doc_id])
        return json_response({"object": "document.deleted", "id": doc_id, "deleted": True})
    return await _serve(request, "rag.documents.delete", handle)


async def delete_documents(request: Request) -> Response:
    """``POST .../documents/delete`` with ``{"sources": [...], "ids": [...]}``."""
    async def handle(request: Request, svc: Services, ctx: RequestContext) -> Response:
        name = _name(request.path_params["name"])
        _note(ctx, name)
        req = _decode(await read_body(request, MAX_JSON_BYTES), DeleteIn)
        n = await svc.rag.delete_documents(ctx.tenant, name, ids=req.ids, sources=req.sources)
        return json_response({"object": "documents.deleted", "deleted": n})
    return await _serve(request, "rag.documents.delete", handle)


async def _search(request: Request, name: str | None) -> Response:
    async def handle(request: Request, svc: Services, ctx: RequestContext) -> Response:
        ctx.body = await read_body(request, MAX_JSON_BYTES)
        req = _decode(ctx.body, SearchIn)
        collection = _name(name if name is not None else req.collection)
        _note(ctx, collection)
        result = await svc.rag.search(ctx.tenant, collection, SearchRequest(
            query=req.query, top_k=req.top_k, filter=req.filter, mode=req.mode,
            fusion=req.fusion, rerank=req.rerank))
        ctx.rag = RagState(collection=collection, query=req.query, top_k=req.top_k, sources=[],
                           candidates=len(result.hits), system="",
                           timings_ms=result.timings_ms, rerank_error=result.rerank_error)
        body = {"object": "list", "collection": collection,
                "data": [h.public(i + 1) for i, h in enumerate(result.hits)],
                "timings_ms": {k: round(v, 3) for k, v in result.timings_ms.items()}}
        if result.rerank_error is not None:
            body["rerank_error"] = result.rerank_error
        return json_response(body)
    return await _serve(request, "rag.search", handle)


async def search(request: Request) -> Response:
    return await _search(request, request.path_params["name"])


async def retrieve(request: Request) -> Response:
    return await _search(request, None)


routes = [
    Route("/v1/collections", list_collections, methods=["GET"]),
    Route("/v1/collections/{name}", get_collection, methods=["GET"]),
    Route("/v1/collections/{name}", delete_collection, methods=["DELETE"]),
    Route("/v1/collections/{name}/documents", add_documents, methods=["POST"]),
    Route("/v1/collections/{name}/documents", list_documents, methods=["GET"]),
    Route("/v1/collections/{name}/documents/delete", delete_documents, methods=["POST"]),
    Route("/v1/collections/{name}/documents/{doc_id:int}", get_document, methods=["GET"]),
    Route("/v1/collections/{name}/documents/{doc_id:int}", delete_document,
          methods=["DELETE"]),
    Route("/v1/collections/{name}/search", search, methods=["POST"]),
    Route("/v1/retrieve", retrieve, methods=["POST"]),
]
