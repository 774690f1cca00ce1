"""Seawall's own OpenAPI 3.1 document, served at ``GET /openapi.json``.

The request bodies are the JSON Schemas of the very msgspec structs the
routes decode with (``msgspec.json.schema_components``), so the document
cannot drift from what is validated; the paths and the response shapes are
written here. The document is built once, when the app is built, and served
as bytes.
"""

from __future__ import annotations

from importlib import metadata
from typing import Any

import msgspec
import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from seawall.api.admin_routes import BudgetIn, KeyIn, PurgeRequest, RotateRequest
from seawall.api.anthropic_wire import CountTokensRequest, MessagesRequest
from seawall.api.http import JSON
from seawall.api.quality_routes import MAX_REQUEST_ID, FeedbackIn
from seawall.api.rag_routes import COLLECTION_NAME, MAX_ID, DeleteIn, DocumentsIn, SearchIn
from seawall.api.wire import MAX_MODEL_NAME, ChatCompletionRequest, EmbeddingRequest
from seawall.responses.wire import ResponsesRequest

REF = "#/components/schemas/{name}"
Schema = dict[str, Any]

_REQUESTS: tuple[type[msgspec.Struct], ...] = (
    ChatCompletionRequest, EmbeddingRequest, MessagesRequest, CountTokensRequest,
    DocumentsIn, SearchIn, DeleteIn, PurgeRequest, ResponsesRequest, FeedbackIn, KeyIn,
    RotateRequest, BudgetIn)

_NULLABLE_STR: Schema = {"anyOf": [{"type": "string"}, {"type": "null"}]}
_OBJECT: Schema = {"type": "object"}

# Response shapes, as the routes write them (extra fields may be added).
_RESPONSES: dict[str, Schema] = {
    "Error": {
        "type": "object", "required": ["error"],
        "description": "The OpenAI error envelope: every OpenAI-format route's 4xx and 5xx.",
        "properties": {"error": {
            "type": "object", "required": ["message", "type", "param", "code"],
            "properties": {"message": {"type": "string"}, "type": {"type": "string"},
                           "param": _NULLABLE_STR, "code": _NULLABLE_STR}}}},
    "AnthropicError": {
        "type": "object", "required": ["type", "error"],
        "description": "Anthropic's error shape: the /v1/messages routes' 4xx and 5xx.",
        "properties": {"type": {"const": "error"}, "error": {
            "type": "object", "required": ["type", "message"],
            "properties": {"type": {"type": "string"}, "message": {"type": "string"},
                           "code": {"type": "string"}}}}},
    "ChatCompletion": {
        "type": "object", "required": ["id", "object", "created", "model", "choices"],
        "properties": {
            "id": {"type": "string"}, "object": {"const": "chat.completion"},
            "created": {"type": "integer"}, "model": {"type": "string"},
            "choices": {"type": "array", "items": {
                "type": "object", "required": ["index", "message", "finish_reason"],
                "properties": {"index": {"type": "integer"},
                               "message": {"type": "object", "required": ["role"]},
                               "finish_reason": {"type": "string"}}}},
            "usage": {"$ref": "#/components/schemas/Usage"},
            "citations": {"type": "array", "items": _OBJECT,
                          "description": "the sources of a RAG answer (docs/rag.md)"}}},
    "Response": {
        "type": "object", "required": ["id", "object", "created_at", "status", "model",
                                       "output"],
        "description": "An OpenAI Responses API response (docs/responses.md).",
        "properties": {"id": {"type": "string"}, "object": {"const": "response"},
                       "created_at": {"type": "integer"}, "status": {"type": "string"},
                       "model": {"type": "string"},
                       "output": {"type": "array", "items": _OBJECT},
                       "usage": _OBJECT, "previous_response_id": _NULLABLE_STR}},
    "Usage": {
        "type": "object", "required": ["prompt_tokens", "completion_tokens", "total_tokens"],
        "properties": {k: {"type": "integer", "minimum": 0}
                       for k in ("prompt_tokens", "completion_tokens", "total_tokens")}},
    "EmbeddingList": {
        "type": "object", "required": ["object", "data", "model", "usage"],
        "properties": {
            "object": {"const": "list"}, "model": {"type": "string"},
            "data": {"type": "array", "items": {
                "type": "object", "required": ["object", "index", "embedding"],
                "properties": {"object": {"const": "embedding"}, "index": {"type": "integer"},
                               "embedding": {"anyOf": [
                                   {"type": "array", "items": {"type": "number"}},
                                   {"type": "string", "description": "base64 float32"}]}}}},
            "usage": {"type": "object", "required": ["prompt_tokens", "total_tokens"],
                      "properties": {"prompt_tokens": {"type": "integer"},
                                     "total_tokens": {"type": "integer"}}}}},
    "Model": {
        "type": "object", "required": ["id", "object", "created", "owned_by"],
        "properties": {"id": {"type": "string"}, "object": {"const": "model"},
                       "created": {"type": "integer"}, "owned_by": {"type": "string"},
                       "tiers": {"type": "array", "items": {"type": "string"},
                                 "description": "a cost-routed model's tiers"}}},
    "ModelList": {
        "type": "object", "required": ["object", "data"],
        "properties": {"object": {"const": "list"},
                       "data": {"type": "array",
                                "items": {"$ref": "#/components/schemas/Model"}}}},
    "AnthropicMessage": {
        "type": "object", "required": ["id", "type", "role", "content", "model",
                                       "stop_reason", "usage"],
        "properties": {"id": {"type": "string"}, "type": {"const": "message"},
                       "role": {"const": "assistant"},
                       "content": {"type": "array", "items": _OBJECT},
                       "model": {"type": "string"}, "stop_reason": _NULLABLE_STR,
                       "usage": _OBJECT}},
    "TokenCount": {"type": "object", "required": ["input_tokens"],
                   "properties": {"input_tokens": {"type": "integer", "minimum": 0}}},
    "List": {"type": "object", "required": ["object", "data"],
             "properties": {"object": {"const": "list"},
                            "data": {"type": "array", "items": _OBJECT}}},
    "Deleted": {"type": "object", "required": ["object", "deleted"],
                "properties": {"object": {"type": "string"}, "deleted": {}}},
    "Status": {"type": "object", "required": ["status"],
               "properties": {"status": {"type": "string"}}},
}


def _ref(name: str) -> Schema:
    return {"$ref": REF.format(name=name)}


def _json(name: str) -> dict[str, Schema]:
    return {JSON: {"schema": _ref(name)}}


def _op(summary: str, ok: dict[str, Any], *, body: dict[str, Any] | None = None,
        error: str = "Error", params: list[Schema] | None = None,
        ok_status: str = "200") -> Schema:
    op: Schema = {"summary": summary, "responses": {
        ok_status: {"description": "OK", "content": ok},
        "4XX": {"description": "The request is refused; the message says what to fix.",
                "content": _json(error)},
        "5XX": {"description": "The gateway or its upstream failed.", "content": _json(error)}}}
    if body is not None:
        op["requestBody"] = {"required": True, "content": body}
    if params:
        op["parameters"] = params
    return op


def _path_param(name: str, schema: Schema) -> Schema:
    return {"name": name, "in": "path", "required": True, "schema": schema}


def _query_param(name: str, schema: Schema) -> Schema:
    return {"name": name, "in": "query", "required": False, "schema": schema}


_COLLECTION = _path_param("name", {"type": "string", "pattern": COLLECTION_NAME.pattern,
                                   "description": "the collection, inside the caller's tenant"})
_RESPONSE_ID = _path_param("response_id", {"type": "string", "maxLength": 128})
_KEY = _path_param("key", {"type": "string", "minLength": 1, "maxLength": 200,
                           "description": "a key's id or name"})
_TENANT = _path_param("tenant", {"type": "string", "minLength": 1, "maxLength": 200})
_DOC_ID = _path_param("doc_id", {"type": "integer", "minimum": 0, "maximum": MAX_ID})
_UPLOAD: Schema = {"type": "object", "required": ["file"], "properties": {
    "file": {"type": "string", "format": "binary",
             "description": "one or more files; the format comes from the file name"},
    "metadata": {"type": "string", "description": "a JSON object stored with each document"}}}


def _batch_paths() -> dict[str, Schema]:
    """The Files and Batch APIs (docs/batches.md)."""
    obj = {JSON: {"schema": _OBJECT}}
    page = [_query_param("limit", {"type": "integer", "minimum": 1, "maximum": 100}),
            _query_param("after", {"type": "string"})]
    file_id = [_path_param("file_id", {"type": "string", "maxLength": 128})]
    batch_id = [_path_param("batch_id", {"type": "string", "maxLength": 128})]
    upload: Schema = {"type": "object", "required": ["file", "purpose"], "properties": {
        "file": {"type": "string", "format": "binary", "description": "JSONL of requests"},
        "purpose": {"enum": ["batch"]}}}
    return {
        "/v1/files": {
            "post": _op("Upload a file (purpose batch)", obj,
                        body={"multipart/form-data": {"schema": upload}}),
            "get": _op("The caller's files, newest first", _json("List"), params=[
                *page, _query_param("purpose", {"type": "string"})])},
        "/v1/files/{file_id}": {
            "get": _op("One file", obj, params=file_id),
            "delete": _op("Delete a file", _json("Deleted"), params=file_id)},
        "/v1/files/{file_id}/content": {"get": _op(
            "A file's content", {"application/octet-stream": {"schema": {"type": "string"}}},
            params=file_id)},
        "/v1/batches": {
            "post": _op("Create a batch (runs as a job)", obj, body=obj),
            "get": _op("The caller's batches, newest first", _json("List"), params=page)},
        "/v1/batches/{batch_id}": {"get": _op("One batch", obj, params=batch_id)},
        "/v1/batches/{batch_id}/cancel": {"post": _op("Cancel a batch", obj, params=batch_id)},
    }


def _paths() -> dict[str, Schema]:
    anthropic = "AnthropicError"
    search = _op("Search a collection", _json("List"), body=_json("SearchIn"),
                 params=[_COLLECTION])
    return {
        "/v1/chat/completions": {"post": _op(
            "Chat completion (OpenAI); `stream: true` answers with server-sent events",
            {**_json("ChatCompletion"), "text/event-stream": {"schema": {"type": "string"}}},
            body=_json("ChatCompletionRequest"))},
        "/v1/embeddings": {"post": _op("Embeddings (OpenAI)", _json("EmbeddingList"),
                                       body=_json("EmbeddingRequest"))},
        "/v1/models": {"get": _op("The models and routes a client may name",
                                  _json("ModelList"))},
        "/v1/models/{model}": {"get": _op(
            "One model or route", _json("Model"),
            params=[_path_param("model", {"type": "string", "minLength": 1,
                                          "maxLength": MAX_MODEL_NAME})])},
        "/v1/messages": {"post": _op(
            "Messages (Anthropic); `stream: true` answers with Anthropic's events",
            {**_json("AnthropicMessage"), "text/event-stream": {"schema": {"type": "string"}}},
            body=_json("MessagesRequest"), error=anthropic)},
        "/v1/messages/count_tokens": {"post": _op(
            "Estimated input tokens of a Messages request", _json("TokenCount"),
            body=_json("CountTokensRequest"), error=anthropic)},
        "/v1/responses": {"post": _op(
            "Create a response (OpenAI Responses API); `stream: true` answers with its events",
            {**_json("Response"), "text/event-stream": {"schema": {"type": "string"}}},
            body=_json("ResponsesRequest"))},
        "/v1/responses/{response_id}": {
            "get": _op("A stored response", _json("Response"), params=[_RESPONSE_ID]),
            "delete": _op("Delete a stored response", _json("Deleted"), params=[_RESPONSE_ID])},
        "/v1/responses/{response_id}/input_items": {"get": _op(
            "A stored response's input items", _json("List"), params=[
                _RESPONSE_ID,
                _query_param("limit", {"type": "integer", "minimum": 1, "maximum": 100}),
                _query_param("order", {"enum": ["asc", "desc"]}),
                _query_param("after", {"type": "string"})])},
        "/v1/responses/{response_id}/cancel": {"post": _op(
            "Cancel a background response (none yet: a 400 for any stored response)",
            _json("Response"), params=[_RESPONSE_ID])},
        **_batch_paths(),
        "/v1/collections": {"get": _op("The caller's RAG collections", _json("List"))},
        "/v1/collections/{name}": {
            "get": _op("One collection", {JSON: {"schema": _OBJECT}}, params=[_COLLECTION]),
            "delete": _op("Delete a collection and its documents", _json("Deleted"),
                          params=[_COLLECTION])},
        "/v1/collections/{name}/documents": {
            "post": _op("Add or replace documents (JSON, or a multipart upload of files)",
                        {JSON: {"schema": _OBJECT}},
                        body={**_json("DocumentsIn"),
                              "multipart/form-data": {"schema": _UPLOAD}},
                        params=[_COLLECTION]),
            "get": _op("List documents", {JSON: {"schema": _OBJECT}}, params=[
                _COLLECTION,
                _query_param("limit", {"type": "integer", "minimum": 1, "maximum": 1000}),
                _query_param("after", {"type": "integer", "minimum": 0})])},
        "/v1/collections/{name}/documents/delete": {"post": _op(
            "Delete documents by id or source", _json("Deleted"), body=_json("DeleteIn"),
            params=[_COLLECTION])},
        "/v1/collections/{name}/documents/{doc_id}": {
            "get": _op("One document", {JSON: {"schema": _OBJECT}},
                       params=[_COLLECTION, _DOC_ID]),
            "delete": _op("Delete one document", _json("Deleted"),
                          params=[_COLLECTION, _DOC_ID])},
        "/v1/collections/{name}/search": {"post": search},
        "/v1/retrieve": {"post": _op("Search the collection named in the body",
                                     _json("List"), body=_json("SearchIn"))},
        "/v1/feedback": {"post": _op(
            "Rate an answer of the caller's tenant by its x-request-id or resp_ id; a user's "
            "second rating replaces the first (docs/quality.md)", {JSON: {"schema": _OBJECT}},
            body=_json("FeedbackIn"))},
        "/admin/traces": {"get": _op(
            "Trace records, newest first, filtered; page with next_cursor (master key; "
            "docs/console.md)", {JSON: {"schema": _OBJECT}},
            params=[*(_query_param(n, {"type": "string", "maxLength": 200}) for n in (
                "q", "model", "tenant", "key_id", "user", "prompt_version", "experiment",
                "cursor")),
                _query_param("status", {"type": "string", "enum": ["ok", "error"]}),
                _query_param("cache", {"type": "string", "enum": [
                    "hit", "semantic-hit", "coalesced", "miss", "bypass"]}),
                _query_param("range", {"type": "string", "enum": [
                    "15m", "1h", "6h", "24h", "7d", "30d"]}),
                _query_param("since", {"type": "number"}),
                _query_param("until", {"type": "number"}),
                _query_param("limit", {"type": "integer", "minimum": 1, "maximum": 200})])},
        "/admin/prompts/{name}/rollback": {"post": _op(
            "Move a prompt's label (default production) back to its previous version "
            "(master key; docs/console.md)", {JSON: {"schema": _OBJECT}},
            body={JSON: {"schema": {"type": "object", "additionalProperties": False,
                                    "properties": {"label": {"type": "string",
                                                             "minLength": 1,
                                                             "maxLength": 64}}}}},
            params=[_path_param("name", {"type": "string", "maxLength": 200})])},
        "/admin/prompts/{name}/label": {"post": _op(
            "Point a prompt's label (default production) at any version, forward or back "
            "(master key; audited as prompt.label; docs/console.md)", {JSON: {"schema": _OBJECT}},
            body={JSON: {"schema": {"type": "object", "additionalProperties": False,
                                    "required": ["version"],
                                    "properties": {"version": {"type": "integer", "minimum": 1,
                                                               "maximum": 10**9},
                                                   "label": {"type": "string",
                                                             "minLength": 1,
                                                             "maxLength": 64}}}}},
            params=[_path_param("name", {"type": "string", "maxLength": 200})])},
        "/admin/experiments": {"get": _op(
            "Every experiment: arms and weights now; a canary's share, step, status, reason, "
            "window and history (master key; docs/experiments.md)",
            {JSON: {"schema": _OBJECT}})},
        **{f"/admin/experiments/{{name}}/{verb}": {"post": _op(
            f"{what} a canary by hand on every replica, audited as experiment.{verb} "
            "(master key; docs/experiments.md)", {JSON: {"schema": _OBJECT}},
            body={JSON: {"schema": {"type": "object", "additionalProperties": False,
                                    "properties": {"reason": {"type": "string",
                                                              "minLength": 1,
                                                              "maxLength": 500}}}}},
            params=[_path_param("name", {"type": "string", "maxLength": 200})])}
           for verb, what in (("rollback", "Roll back (every request to the baseline)"),
                              ("promote", "Promote (every request to the candidate)"))},
        "/admin/jobs": {"get": _op(
            "Jobs of every tenant, newest first, without payload or result; page with "
            "next_cursor (master key; docs/console.md)", {JSON: {"schema": _OBJECT}},
            params=[*(_query_param(n, {"type": "string", "maxLength": 200})
                      for n in ("kind", "tenant", "cursor")),
                    _query_param("state", {"type": "string", "enum": [
                        "queued", "running", "succeeded", "failed", "dead", "cancelled"]}),
                    _query_param("limit", {"type": "integer", "minimum": 1, "maximum": 100})])},
        "/admin/batches": {"get": _op(
            "Batches of every tenant (or one), newest first; page with after=last_id "
            "(master key; docs/console.md)", {JSON: {"schema": _OBJECT}},
            params=[*(_query_param(n, {"type": "string", "maxLength": 200})
                      for n in ("tenant", "after")),
                    _query_param("limit", {"type": "integer", "minimum": 1, "maximum": 100})])},
        "/admin/traces/{request_id}": {"get": _op(
            "One whole trace record with its feedback and scores (master key)",
            {JSON: {"schema": _OBJECT}},
            params=[_path_param("request_id", {"type": "string",
                                               "maxLength": MAX_REQUEST_ID})])},
        "/admin/audit": {"get": _op(
            "The audit log of admin actions, newest first (master key; docs/security.md)",
            {JSON: {"schema": _OBJECT}}, params=[
                _query_param("tenant", {"type": "string", "minLength": 1, "maxLength": 1000}),
                _query_param("action", {"type": "string", "maxLength": 100,
                                        "pattern": r"^[a-z][a-z0-9_]*(\.[a-z0-9_]+)*(\.\*)?$"}),
                _query_param("since", {"type": "string", "maxLength": 40}),
                _query_param("limit", {"type": "integer", "minimum": 1, "maximum": 1000}),
                _query_param("before_id", {"type": "integer", "minimum": 1})])},
        "/admin/cache": {"get": _op("Response cache statistics (master key)",
                                    {JSON: {"schema": _OBJECT}})},
        "/admin/cache/purge": {"post": _op("Purge cache entries (master key)",
                                           {JSON: {"schema": _OBJECT}},
                                           body=_json("PurgeRequest"))},
        "/admin/cache/entries/{entry}/release": {"post": _op(
            "Serve a quarantined cache entry again (master key; docs/caching.md)",
            {JSON: {"schema": _OBJECT}},
            params=[_path_param("entry", {"type": "string", "pattern": "^[0-9]{1,19}$"})])},
        "/admin/keys": {
            "get": _op("Keys (a tenant_admin: of its tenant), never a secret; ?all=true "
                       "includes revoked ones (docs/security.md)", {JSON: {"schema": _OBJECT}},
                       params=[_query_param("all", {"type": "string"})]),
            "post": _op("Make a key; the answer holds its secret, once", {JSON: {
                "schema": _OBJECT}}, body=_json("KeyIn"), ok_status="201")},
        "/admin/keys/{key}": {"get": _op(
            "One key with its spend against its budgets", {JSON: {"schema": _OBJECT}},
            params=[_KEY])},
        "/admin/keys/{key}/revoke": {"post": _op(
            "Revoke a virtual key by id or name; every replica refuses it within a second",
            {JSON: {"schema": _OBJECT}}, params=[_KEY])},
        "/admin/keys/{key}/rotate": {"post": _op(
            "A new secret (in the answer, once); the old one works for grace",
            {JSON: {"schema": _OBJECT}}, body=_json("RotateRequest"), params=[_KEY])},
        "/admin/keys/{key}/budget": {"post": _op(
            "Set, remove or reset a key's budget", {JSON: {"schema": _OBJECT}},
            body=_json("BudgetIn"), params=[_KEY])},
        "/admin/tenants/{tenant}": {"get": _op(
            "A tenant's budget, spend this period and number of keys",
            {JSON: {"schema": _OBJECT}}, params=[_TENANT])},
        "/admin/tenants/{tenant}/budget": {"post": _op(
            "Set, remove or reset a tenant's budget (master key)", {JSON: {"schema": _OBJECT}},
            body=_json("BudgetIn"), params=[_TENANT])},
        "/health": {"get": {"summary": "Liveness", "security": [], "responses": {
            "200": {"description": "OK", "content": _json("Status")}}}},
        "/ready": {"get": {"summary": "Readiness, with each check's reason", "security": [],
                           "responses": {
            "200": {"description": "Ready", "content": _json("Status")},
            "503": {"description": "Not ready", "content": _json("Status")}}}},
        "/metrics": {"get": {"summary": "Prometheus metrics", "responses": {
            "200": {"description": "OK", "content": {"text/plain": {"schema": {
                "type": "string"}}}},
            "401": {"description": "The master key is needed", "content": _json("Error")}}}},
        "/openapi.json": {"get": {"summary": "This document", "security": [], "responses": {
            "200": {"description": "OK", "content": {JSON: {"schema": _OBJECT}}}}}},
    }


def _version() -> str:
    try:
        return metadata.version("seawall")
    except metadata.PackageNotFoundError:  # run from a source tree
        return "0"


def build_document() -> Schema:
    """The whole document (a few milliseconds: call once)."""
    _, components = msgspec.json.schema_components(_REQUESTS, ref_template=REF)
    overlap = components.keys() & _RESPONSES.keys()
    assert not overlap, f"response schema names taken by request structs: {overlap}"
    return {
        "openapi": "3.1.0",
        "info": {"title": "Seawall", "version": _version(),
                 "description": "The routes this gateway serves (docs/operations.md)."},
        "security": [{"bearer": []}, {}],
        "paths": _paths(),
        "components": {
            "schemas": {**components, **_RESPONSES},
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer",
                           "description": "a virtual key or the master key; none needed "
                                          "from loopback when auth allows it"},
                "x-api-key": {"type": "apiKey", "in": "header", "name": "x-api-key",
                              "description": "the Anthropic SDK's header (/v1/messages)"}}},
    }


def encode_document() -> bytes:
    return orjson.dumps(build_document())


async def openapi_json(request: Request) -> Response:
    return Response(request.app.state.openapi, media_type=JSON)


routes = [Route("/openapi.json", openapi_json, methods=["GET"])]
