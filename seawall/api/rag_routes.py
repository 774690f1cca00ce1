"""The RAG endpoints: collections, documents and search (docs/rag.md#http-api).

Every call authenticates like the OpenAI routes and works inside the caller's
tenant: a collection named ``handbook`` of one tenant is invisible to another.
Documents arrive as JSON (``{"documents": [{"text": ..., "source": ...}]}``)
or as a multipart upload of files, whose format is detected from the file
name (Markdown, text, HTML, PDF, JSONL).
"""

from __future__ import annotations

import re
import time
from typing import TYPE_CHECKING, Annotated, Any, Literal

import msgspec
from msgspec import Meta
from starlette.datastructures import UploadFile
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from seawall.api.http import error_response, json_response, read_body
from seawall.api.wire import convert, decode_json_object
from seawall.errors import BodyTooLarge, InvalidRequest, SeawallError
from seawall.pipeline.context import RequestContext
from seawall.rag.documents import LoadedDocument
from seawall.rag.loaders import UnsupportedFormat, detect_format, load_bytes, load_text
from seawall.rag.service import SearchRequest

if TYPE_CHECKING:
    from seawall.app import Services

COLLECTION_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
Formats = Literal["markdown", "text", "html", "jsonl"]


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
    ids: list[int] = []
    sources: list[str] = []


def _svc(request: Request) -> Services:
    return request.app.state.services


async def _tenant(request: Request, svc: Services) -> str:
    ctx = RequestContext(endpoint="rag", authorization=request.headers.get("authorization"),
                         client_host=request.client.host if request.client else None)
    await svc.auth.before(ctx)
    return ctx.tenant


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


async def list_collections(request: Request) -> Response:
    svc = _svc(request)
    try:
        tenant = await _tenant(request, svc)
    except SeawallError as e:
        return error_response(e)
    rows = await svc.rag.collections(tenant)
    return json_response({"object": "list", "data": [c.public() for c in rows]})


async def get_collection(request: Request) -> Response:
    svc = _svc(request)
    try:
        tenant = await _tenant(request, svc)
        info = await svc.rag.collection(tenant, _name(request.path_params["name"]))
    except SeawallError as e:
        return error_response(e)
    return json_response(info.public())


async def delete_collection(request: Request) -> Response:
    svc = _svc(request)
    try:
        tenant = await _tenant(request, svc)
        name = _name(request.path_params["name"])
        if not await svc.rag.delete_collection(tenant, name):
            await svc.rag.collection(tenant, name)  # raises the 404
    except SeawallError as e:
        return error_response(e)
    return json_response({"object": "collection.deleted", "name": name, "deleted": True})


def _from_json(body: bytes) -> list[LoadedDocument]:
    req = convert(decode_json_object(body), DocumentsIn)
    docs: list[LoadedDocument] = []
    for i, d in enumerate(req.documents):
        source = d.source or d.id
        if source is None:
            raise InvalidRequest(f"documents[{i}] needs a source (or id): re-sending the same "
                                 "source replaces that document", param=f"documents[{i}].source")
        try:
            fmt = d.format or detect_format(source)
            if fmt == "pdf":
                raise InvalidRequest(f"documents[{i}]: a PDF is uploaded as a file (multipart), "
                                     "not as JSON text", param=f"documents[{i}].format")
            docs += load_text(d.text, source, fmt, metadata=d.metadata, title=d.title,
                              modified=time.time())
        except (UnsupportedFormat, ValueError) as e:
            raise InvalidRequest(f"documents[{i}]: {e}", param=f"documents[{i}]") from None
    return docs


async def _from_form(request: Request, limit: int) -> list[LoadedDocument]:
    """Files from a multipart form: each ``file`` field is one file; an optional
    ``metadata`` field (a JSON object) applies to all of them."""
    async with request.form(max_files=1000, max_part_size=limit) as form:
        metadata: dict[str, Any] = {}
        if isinstance(raw := form.get("metadata"), str):
            try:
                metadata = decode_json_object(raw.encode())
            except SeawallError:
                raise InvalidRequest("the metadata field must be a JSON object",
                                     param="metadata") from None
        files = [f for _, f in form.multi_items() if isinstance(f, UploadFile)]
        if not files:
            raise InvalidRequest("the form has no file fields", param="file")
        docs: list[LoadedDocument] = []
        for f in files:
            name = f.filename or "upload"
            data = await f.read()
            try:
                docs += load_bytes(data, name, metadata=dict(metadata), modified=time.time())
            except (UnsupportedFormat, ValueError) as e:
                raise InvalidRequest(f"{name}: {e}", param="file") from None
    return docs


async def add_documents(request: Request) -> Response:
    svc = _svc(request)
    try:
        tenant = await _tenant(request, svc)
        name = _name(request.path_params["name"])
        limit = svc.settings.rag.max_upload_bytes
        if request.headers.get("content-type", "").startswith("multipart/form-data"):
            read_declared(request, limit)
            docs = await _from_form(request, limit)
        else:
            docs = _from_json(await read_body(request, limit))
        results = await svc.rag.ingest(tenant, name, docs)
    except SeawallError as e:
        return error_response(e)
    return json_response({"object": "list", "collection": name,
                          "data": [r.public() for r in results]})


def read_declared(request: Request, limit: int) -> None:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise BodyTooLarge(f"The upload is {declared} bytes; at most {limit} are accepted "
                           "(rag.max_upload_bytes).")


async def list_documents(request: Request) -> Response:
    svc = _svc(request)
    try:
        tenant = await _tenant(request, svc)
        name = _name(request.path_params["name"])
        limit = _int(request, "limit", 100, 1, 1000)
        after = _int(request, "after", 0, 0, 2**62)
        docs = await svc.rag.documents(tenant, name, limit, after)
    except SeawallError as e:
        return error_response(e)
    return json_response({"object": "list", "data": [d.public() for d in docs],
                          "has_more": len(docs) == limit,
                          "last_id": docs[-1].id if docs else None})


async def get_document(request: Request) -> Response:
    svc = _svc(request)
    try:
        tenant = await _tenant(request, svc)
        name = _name(request.path_params["name"])
        doc = await svc.rag.document(tenant, name, int(request.path_params["doc_id"]))
    except SeawallError as e:
        return error_response(e)
    return json_response(doc.public())


async def delete_document(request: Request) -> Response:
    svc = _svc(request)
    try:
        tenant = await _tenant(request, svc)
        name = _name(request.path_params["name"])
        doc_id = int(request.path_params["doc_id"])
        await svc.rag.document(tenant, name, doc_id)  # 404 if absent
        await svc.rag.delete_documents(tenant, name, ids=[doc_id])
    except SeawallError as e:
        return error_response(e)
    return json_response({"object": "document.deleted", "id": doc_id, "deleted": True})


async def delete_documents(request: Request) -> Response:
    """``POST .../documents/delete`` with ``{"sources": [...], "ids": [...]}``."""
    svc = _svc(request)
    try:
        tenant = await _tenant(request, svc)
        name = _name(request.path_params["name"])
        req = convert(decode_json_object(await read_body(request, 1 << 20)), DeleteIn)
        n = await svc.rag.delete_documents(tenant, name, ids=req.ids, sources=req.sources)
    except SeawallError as e:
        return error_response(e)
    return json_response({"object": "documents.deleted", "deleted": n})


async def _search(request: Request, name: str | None) -> Response:
    svc = _svc(request)
    try:
        tenant = await _tenant(request, svc)
        req = convert(decode_json_object(await read_body(request, 1 << 20)), SearchIn)
        collection = _name(name if name is not None else req.collection)
        result = await svc.rag.search(tenant, collection, SearchRequest(
            query=req.query, top_k=req.top_k, filter=req.filter, mode=req.mode,
            fusion=req.fusion, rerank=req.rerank))
    except SeawallError as e:
        return error_response(e)
    body = {"object": "list", "collection": collection,
            "data": [h.public(i + 1) for i, h in enumerate(result.hits)],
            "timings_ms": {k: round(v, 3) for k, v in result.timings_ms.items()}}
    if result.rerank_error is not None:
        body["rerank_error"] = result.rerank_error
    return json_response(body)


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
