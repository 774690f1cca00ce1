"""Conformance fuzzing, with schemathesis, against a running gateway on loopback.

Two descriptions drive it:

* OpenAI's own OpenAPI description, cut to the routes a gateway serves
  (tests/fixtures/openai_openapi/: POST /chat/completions, POST /embeddings,
  GET /models, GET /models/{model}). Requests the spec calls valid never get
  a 5xx, and a 2xx answer validates against the spec's response schema (each
  event of a stream against its chunk schema); requests it calls invalid get a
  4xx in the OpenAI error envelope, or pass through to the upstream when
  Seawall does not check that field itself (counted, not refused: a gateway
  forwards what its upstream may accept).
* Seawall's own document, ``GET /openapi.json``, for every route it serves:
  the same rules, each error in the envelope that route documents.

Generated requests name models that are not configured, so the ``model`` of a
valid case (and of an invalid case whose ``model`` is a string) is replaced by
a configured one, served by the fake upstream over a real socket.

Bounded for CI: ``SEAWALL_FUZZ_EXAMPLES`` cases per operation and mode
(default 20, derandomized: the same cases every run). Set it to fuzz longer
with fresh random cases each run: ``SEAWALL_FUZZ_EXAMPLES=500 pytest
tests/e2e/test_conformance.py``.
"""

from __future__ import annotations

import base64
import os
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import orjson
import pytest
import schemathesis
import yaml
from hypothesis import HealthCheck, Phase, given, settings
from jsonschema import Draft202012Validator
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012
from schemathesis import GenerationMode
from schemathesis.specs.openapi.checks import response_schema_conformance

from seawall.api.openapi import build_document
from tests.gateway import Running, run_gateway
from tests.servers import FakeUpstreamClient

SPEC_PATH = Path(__file__).parents[1] / "fixtures" / "openai_openapi" / \
    "openapi.gateway-subset.yaml"
MASTER = "sk-master-conformance"
AUTH = {"Authorization": f"Bearer {MASTER}"}
CHAT_MODEL, EMBED_MODEL = "gpt-fuzz", "emb-fuzz"
COLLECTION = "fuzz"
DOC_ID = [0]  # the document the fixture adds to it
EXAMPLES = int(os.environ.get("SEAWALL_FUZZ_EXAMPLES", "20"))
FUZZ = settings(max_examples=EXAMPLES, deadline=None, database=None,
                derandomize="SEAWALL_FUZZ_EXAMPLES" not in os.environ,
                phases=[Phase.explicit, Phase.generate],
                suppress_health_check=list(HealthCheck), print_blob=True)
POSITIVE, NEGATIVE = GenerationMode.POSITIVE, GenerationMode.NEGATIVE

SPEC: dict[str, Any] = yaml.safe_load(SPEC_PATH.read_text())
OPENAI = schemathesis.openapi.from_dict(SPEC)


def _nullable(node: Any) -> Any:
    """The spec still says ``nullable: true`` (OpenAPI 3.0) in places, which JSON
    Schema 2020-12 ignores (schemathesis honours it): spell it as ``anyOf`` null."""
    if isinstance(node, list):
        return [_nullable(v) for v in node]
    if not isinstance(node, dict):
        return node
    out = {k: _nullable(v) for k, v in node.items()}
    if out.get("nullable") is True:
        del out["nullable"]
        return {"anyOf": [out, {"type": "null"}]}
    return out


_REGISTRY = Registry().with_resource("urn:openai", Resource.from_contents(
    _nullable(SPEC), default_specification=DRAFT202012))


def _validator(name: str) -> Draft202012Validator:
    return Draft202012Validator({"$ref": f"urn:openai#/components/schemas/{name}"},
                                registry=_REGISTRY)


STREAM_CHUNK = _validator("CreateChatCompletionStreamResponse")
EMBEDDINGS = _validator("CreateEmbeddingResponse")

# What the fuzzing saw, printed at the end of the module (pytest -s).
SEEN: Counter[str] = Counter()


@pytest.fixture(scope="module")
def gw(upstream: FakeUpstreamClient, tmp_path_factory: pytest.TempPathFactory
       ) -> Iterator[Running]:
    config = {
        "auth": {"master_key": MASTER},
        "observe": {"traces": {"flush_interval_s": 0.05}},
        "providers": {"up": {"type": "openai", "base_url": upstream.base_url + "/v1",
                             "api_key": "x"}},
        "models": {CHAT_MODEL: {"provider": "up", "model": "fake-model"},
                   EMBED_MODEL: {"provider": "up", "kind": "embedding",
                                 "model": "fake-embedding"}},
    }
    with run_gateway(config, tmp_path_factory.mktemp("conformance")) as running:
        # A collection for valid RAG cases to find (real MiniLM embeddings).
        added = httpx.post(f"{running.url}/v1/collections/{COLLECTION}/documents", headers=AUTH,
                           json={"documents": [{"text": "# Deploys\n\nRoll back with "
                                                "`deploy rollback`.", "source": "deploys.md"}]},
                           timeout=120)
        assert added.status_code == 200, added.text
        DOC_ID[:] = [added.json()["data"][0]["document_id"]]
        yield running
    if SEEN:
        print("\nconformance fuzzing:", dict(sorted(SEEN.items())))


def _model_for(path: str) -> str:
    return EMBED_MODEL if path.endswith("/embeddings") else CHAT_MODEL


def _patch(case: Any, mode: GenerationMode) -> None:
    """Name a configured model; authenticate with the master key."""
    case.headers = {**(case.headers or {}), **AUTH}
    path = case.operation.path
    body = case.body
    if isinstance(body, dict) and isinstance(body.get("model"), str):
        body["model"] = _model_for(path)
    params = case.path_parameters or {}
    if mode is POSITIVE and "model" in params:
        params["model"] = CHAT_MODEL
    # Valid RAG cases name the collection that exists (but do not delete it).
    if mode is POSITIVE and "name" in params and not (
            case.method == "DELETE" and path == "/v1/collections/{name}"):
        params["name"] = COLLECTION
    if mode is POSITIVE and "doc_id" in params:  # find it, never delete it
        if case.method == "GET":
            params["doc_id"] = DOC_ID[0]
        elif params["doc_id"] == DOC_ID[0]:
            params["doc_id"] += 1
    if path.endswith("/documents/delete") and isinstance(body, dict) and isinstance(
            body.get("ids"), list):
        body["ids"] = [i for i in body["ids"] if i != DOC_ID[0]]
    if mode is POSITIVE and path == "/v1/retrieve" and isinstance(body, dict):
        body["collection"] = COLLECTION


def _header(resp: Any, name: str) -> str:
    values = resp.headers.get(name) or [""]  # schemathesis keeps each header's values
    return str(values[0])


def _json(resp: Any) -> Any:
    try:
        return orjson.loads(resp.content)
    except orjson.JSONDecodeError:
        raise AssertionError(f"not JSON: {resp.content[:300]!r}") from None


def _openai_envelope(body: Any) -> None:
    assert isinstance(body, dict) and isinstance(body.get("error"), dict), body
    err = body["error"]
    assert set(err) >= {"message", "type", "param", "code"}, err
    assert isinstance(err["message"], str) and err["message"], err
    assert isinstance(err["type"], str), err
    assert err["param"] is None or isinstance(err["param"], str), err
    assert err["code"] is None or isinstance(err["code"], str), err


def _anthropic_envelope(body: Any) -> None:
    assert isinstance(body, dict) and body.get("type") == "error", body
    err = body.get("error")
    assert isinstance(err, dict) and isinstance(err.get("type"), str), body
    assert isinstance(err.get("message"), str) and err["message"], body


def _check_base64_embeddings(body: Any) -> None:
    """The spec's ``Embedding.embedding`` is an array of floats only, though
    OpenAI answers ``encoding_format: "base64"`` with a base64 string of
    little-endian float32s: decode, then validate as the spec says."""
    for item in body.get("data", []):
        raw = base64.b64decode(item["embedding"], validate=True)
        assert raw and len(raw) % 4 == 0, item
        item["embedding"] = np.frombuffer(raw, dtype="<f4").tolist()
    errors = sorted(EMBEDDINGS.iter_errors(body), key=str)
    assert not errors, errors[0].message


def _check_anthropic_stream(resp: Any) -> None:
    """Anthropic's events: message_start first, message_stop last, each named."""
    names = [line[len("event: "):] for line in resp.text.split("\n")
             if line.startswith("event: ")]
    data = [orjson.loads(line[len("data: "):]) for line in resp.text.split("\n")
            if line.startswith("data: ")]
    assert names and names[0] == "message_start" and names[-1] == "message_stop", names
    assert [d["type"] for d in data] == names


def _check_stream(resp: Any) -> None:
    """Each event a chat.completion.chunk the spec describes; [DONE] last."""
    events = [line[len("data: "):] for line in resp.text.split("\n")
              if line.startswith("data: ")]
    assert events and events[-1] == "[DONE]", resp.text[-300:]
    for data in events[:-1]:
        errors = sorted(STREAM_CHUNK.iter_errors(orjson.loads(data)), key=str)
        assert not errors, f"{errors[0].message} in {data[:300]}"


def _exercise(case: Any, base_url: str, mode: GenerationMode, envelope: Any,
              label: str) -> None:
    _patch(case, mode)
    resp = case.call(base_url=base_url, timeout=30)
    status = resp.status_code
    SEEN[f"{label} {mode.value} {status // 100}xx"] += 1
    assert status < 500, (f"{case.method} {case.formatted_path} -> {status}: "
                          f"{resp.text[:500]}\n{case.as_curl_command()}")
    if status >= 400:
        envelope(_json(resp))
        return
    if mode is NEGATIVE:
        return  # accepted: a field Seawall forwards unchecked, or one it is lenient about
    if _header(resp, "content-type").startswith("text/event-stream"):
        if case.operation.path.startswith("/v1/messages"):
            _check_anthropic_stream(resp)
        else:
            _check_stream(resp)
    elif (label.startswith("openai") and isinstance(case.body, dict)
          and case.body.get("encoding_format") == "base64"):
        _check_base64_embeddings(_json(resp))
    else:
        case.validate_response(resp, checks=[response_schema_conformance])


# -- what the fuzzing found (fixed), pinned ------------------------------------

@pytest.mark.parametrize("method,path,body,status", [
    # an integer beyond 64 bits, forwarded upstream (orjson): was a 500
    ("POST", "/v1/chat/completions", b'{"model": "gpt-fuzz", "messages": [{"role": "user", '
     b'"content": "hi"}], "metadata": {"n": 184467440737095516160}}', 400),
    # a prompt version outside latin-1 echoed in a response header: was a 500
    ("POST", "/v1/chat/completions", b'{"model": "gpt-fuzz", "messages": [{"role": "user", '
     b'"content": "hi"}], "seawall": {"prompt_version": "v\\u00e9\\ud83d\\ude00"}}', 200),
    # ids past SQLite's INTEGER: were a 500
    ("GET", f"/v1/collections/{COLLECTION}/documents/79743041003611701248", b"", 400),
    ("DELETE", f"/v1/collections/{COLLECTION}/documents/9223372036854775808", b"", 400),
    ("POST", f"/v1/collections/{COLLECTION}/documents/delete",
     b'{"ids": [9223372036854775808]}', 400),
    ("POST", "/admin/cache/purge", b'{"entry": 9223372036854775808}', 400),
    ("POST", "/v1/embeddings", b'{"model": "emb-fuzz", "input": "a", "dimensions": 0}', 400),
    # a text part whose text is not a string: the fake upstream failed (502s, then
    # an open breaker: 503s)
    ("POST", "/v1/chat/completions", b'{"model": "gpt-fuzz", "messages": [{"role": "user", '
     b'"content": [{"type": "text", "text": [null]}, {"type": "text", "text": "hi"}]}]}', 200),
])
def test_found_by_fuzzing(gw: Running, method: str, path: str, body: bytes,
                          status: int) -> None:
    resp = httpx.request(method, gw.url + path, content=body or None, timeout=30,
                         headers={**AUTH, "content-type": "application/json"})
    assert resp.status_code == status, resp.text
    if b"prompt_version" in body:
        assert resp.headers["x-seawall-prompt-version"] == "v??"
    if status == 200:
        assert resp.json()["choices"][0]["message"]["content"]
    else:
        _openai_envelope(resp.json())


# -- OpenAI's description ------------------------------------------------------

OPENAI_OPS = [("/chat/completions", "POST"), ("/embeddings", "POST"), ("/models", "GET"),
              ("/models/{model}", "GET")]


@pytest.mark.parametrize("mode", [POSITIVE, NEGATIVE], ids=lambda m: m.value)
@pytest.mark.parametrize("path,method", OPENAI_OPS)
def test_openai_spec(gw: Running, path: str, method: str, mode: GenerationMode) -> None:
    if mode is NEGATIVE and path == "/models":
        pytest.skip("GET /models takes no input to make invalid")
    operation = OPENAI[path][method]

    @FUZZ
    @given(case=operation.as_strategy(generation_mode=mode))
    def run(case: Any) -> None:
        _exercise(case, gw.url + "/v1", mode, _openai_envelope, f"openai {method} {path}")

    run()


# -- Seawall's own document ----------------------------------------------------

OWN_DOC = build_document()
OWN_OPS = [(path, method.upper(), op) for path, item in OWN_DOC["paths"].items()
           for method, op in item.items()]


@pytest.fixture(scope="module")
def own_schema(gw: Running) -> Any:
    """The document as served (and so what is fuzzed)."""
    return schemathesis.openapi.from_url(gw.url + "/openapi.json")


def test_openapi_json_names_every_route(gw: Running) -> None:
    served = httpx.get(gw.url + "/openapi.json", timeout=10)
    assert served.status_code == 200 and served.json() == orjson.loads(orjson.dumps(OWN_DOC))
    routes = {(r.path.replace(":path", "").replace(":int", ""), m)
              for r in gw.app.app.routes for m in (r.methods or ()) if m != "HEAD"}
    documented = {(p.replace("{model}", "{model_id}"), m) for p, m, _ in OWN_OPS}
    assert routes == documented


@pytest.mark.parametrize("mode", [POSITIVE, NEGATIVE], ids=lambda m: m.value)
@pytest.mark.parametrize("path,method", [(p, m) for p, m, _ in OWN_OPS])
def test_own_spec(gw: Running, own_schema: Any, path: str, method: str,
                  mode: GenerationMode) -> None:
    op = OWN_DOC["paths"][path][method.lower()]
    if mode is NEGATIVE and "requestBody" not in op and not op.get("parameters"):
        pytest.skip(f"{method} {path} takes no input to make invalid")
    anthropic = path.startswith("/v1/messages")
    operation = own_schema[path][method]

    @FUZZ
    @given(case=operation.as_strategy(generation_mode=mode))
    def run(case: Any) -> None:
        _exercise(case, gw.url, mode, _anthropic_envelope if anthropic else _openai_envelope,
                  f"own {method} {path}")

    run()
