"""Hostile input to the RAG and admin routes, through the real gateway: rate
limits and admission apply, uploads are capped while they stream (chunked
included), parsing runs off the event loop and stops when the client leaves,
the ingestion quota refuses with 429, nesting gets a 4xx, and every request
leaves a trace record and gives back its admission slot."""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from seawall.pipeline.stages import hash_key
from seawall.store.base import ApiKey
from tests.gateway import Running, run_gateway
from tests.servers import FakeUpstreamClient

pytestmark = pytest.mark.timeout(300)

MASTER = "sk-master-rag-hardening"
LIMITED = "sk-sw-rpm-limited-key-for-rag-hardening"
OTHER = "sk-sw-other-tenant-key-for-rag-hardening"
LIMITED_RPM = 3
BOUNDARY = "seawall-test-boundary"
MB = 1 << 20


@pytest.fixture(scope="module")
def gw(upstream: FakeUpstreamClient, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Running]:
    tmp = tmp_path_factory.mktemp("rag-hardening")
    config = {
        "auth": {"master_key": MASTER, "allow_anonymous_loopback": False},
        "observe": {"traces": {"flush_interval_s": 0.01}},
        "providers": {"f": {"type": "openai", "base_url": upstream.base_url + "/v1"}},
        "models": {"m": {"provider": "f", "model": "fake-1"}},
        "rag": {"max_concurrent_ingests_per_tenant": 1},
    }
    with run_gateway(config, tmp) as running:
        store = running.services.store
        for key_id, secret, tenant, rpm in (("k-limited", LIMITED, "limited", LIMITED_RPM),
                                            ("k-other", OTHER, "other", None)):
            running.on_server(store.create_key(ApiKey(
                id=key_id, name=key_id, tenant=tenant, key_hash=hash_key(secret),
                prefix=secret[:10], rpm=rpm, created_at=0.0)))
        yield running
        # Whatever happened in the module, every request gave back what it took.
        svc = running.services
        assert svc.admission.inflight == 0 and svc.admission.by_tenant == {}
        assert svc.rag.quota.running == 0 and svc.rag.quota.by_tenant == {}


def _headers(key: str = MASTER, **extra: str) -> dict[str, str]:
    return {"authorization": f"Bearer {key}", **extra}


def post(gw: Running, path: str, key: str = MASTER, **kw: Any) -> httpx.Response:
    headers = {**_headers(key), **kw.pop("headers", {})}
    return httpx.post(gw.url + path, headers=headers, timeout=120, **kw)


def trace(gw: Running, trace_id: str) -> dict[str, Any]:
    for _ in range(200):
        rows = [t for t in gw.traces(1000) if t["trace_id"] == trace_id]
        if rows:
            return rows[0]
        time.sleep(0.02)
    raise AssertionError(f"no trace record for {trace_id}")


def upload(gw: Running, collection: str, files: dict[str, bytes],
           key: str = MASTER) -> httpx.Response:
    return httpx.post(gw.url + f"/v1/collections/{collection}/documents", headers=_headers(key),
                      files=[("file", (name, data)) for name, data in files.items()],
                      timeout=120)


def rss_bytes() -> int:
    """Resident memory of this process (the gateway runs in a thread of it)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


def nested_filter(depth: int) -> dict[str, Any]:
    spec: dict[str, Any] = {"team": "ops"}
    for _ in range(depth):
        spec = {"$not": spec}
    return spec


def test_search_and_ingest_are_recorded_and_limited_per_key(gw: Running) -> None:
    r = post(gw, "/v1/collections/notes/documents", json={"documents": [
        {"source": "a.md", "text": "# Otters\n\nOtters hold hands while they sleep.",
         "metadata": {"team": "ops"}}]})
    assert r.status_code == 200, r.text
    rec = trace(gw, r.headers["x-request-id"])
    assert rec["endpoint"] == "rag.ingest" and rec["status"] == 200
    assert "notes" in str(rec["rag"])
    r = post(gw, "/v1/collections/notes/search", json={"query": "sleeping otters"})
    assert r.status_code == 200 and r.json()["data"][0]["source"] == "a.md"
    rec = trace(gw, r.headers["x-request-id"])
    assert rec["endpoint"] == "rag.search" and rec["status"] == 200 and rec["tenant"] == "default"

    # A key with a rate limit spends it on RAG calls like on chat calls.
    for _ in range(LIMITED_RPM):
        r = post(gw, "/v1/collections/notes/search", key=LIMITED, json={"query": "otters"})
        assert r.status_code == 404  # its tenant has no such collection; the call still counts
    refused = [post(gw, "/v1/collections/notes/search", key=LIMITED, json={"query": "otters"}),
               post(gw, "/v1/retrieve", key=LIMITED, json={"query": "otters",
                                                           "collection": "notes"}),
               post(gw, "/v1/collections/notes/documents", key=LIMITED,
                    json={"documents": [{"source": "b.md", "text": "more"}]})]
    for r in refused:
        assert r.status_code == 429, r.text
        assert r.json()["error"]["code"] == "rate_limit_exceeded" and r.headers["retry-after"]
    assert trace(gw, refused[2].headers["x-request-id"])["endpoint"] == "rag.ingest"
    assert trace(gw, refused[2].headers["x-request-id"])["status"] == 429


def test_admin_routes_are_recorded(gw: Running) -> None:
    r = httpx.get(gw.url + "/admin/cache", headers=_headers())
    assert r.status_code == 200
    assert trace(gw, r.headers["x-request-id"])["endpoint"] == "admin.cache.stats"
    r = httpx.post(gw.url + "/admin/cache/purge", json={"all": True}, headers=_headers(OTHER))
    assert r.status_code == 403 and "'admin:cache'" in r.text  # an app key: not its scope
    rec = trace(gw, r.headers["x-request-id"])
    assert rec["endpoint"] == "admin.cache.purge" and rec["status"] == 403


@pytest.mark.parametrize("depth", [300, 900, 1_000, 10_000])
def test_deeply_nested_filter_is_a_400(gw: Running, depth: int) -> None:
    body = b'{"query": "otters", "filter": ' + b'{"$not": ' * depth + b"{}" + b"}" * depth + b"}"
    r = post(gw, "/v1/collections/notes/search", content=body,
             headers={"content-type": "application/json"})
    assert r.status_code == 400, r.text
    assert r.json()["error"]["code"] in ("json_too_deep", "too_deeply_nested")
    # A reasonable one still works (not not not not team = ops).
    r = post(gw, "/v1/collections/notes/search",
             json={"query": "otters", "filter": nested_filter(4)})
    assert r.status_code == 200 and r.json()["data"][0]["source"] == "a.md"


def test_deeply_nested_metadata_is_a_400(gw: Running) -> None:
    meta: Any = "x"
    for _ in range(300):
        meta = {"k": meta}
    r = post(gw, "/v1/collections/notes/documents",
             json={"documents": [{"source": "m.md", "text": "text", "metadata": meta}]})
    # A JSON body past server.max_json_depth is refused as it is decoded.
    assert r.status_code == 400 and r.json()["error"]["code"] == "json_too_deep"
    deeper = (b'{"documents": [{"source": "m.md", "text": "t", "metadata": {"k": '
              + b"[" * 10_000 + b"]" * 10_000 + b"}}]}")
    r = post(gw, "/v1/collections/notes/documents", content=deeper,
             headers={"content-type": "application/json"})
    assert r.status_code == 400 and r.json()["error"]["code"] == "json_too_deep"
    line = b'{"text": "hello", "meta": ' + b"[" * 500 + b"]" * 500 + b"}\n"
    r = upload(gw, "notes", {"deep.jsonl": line})
    assert r.status_code == 400 and r.json()["error"]["code"] == "too_deeply_nested"


@pytest.mark.parametrize("depth,status", [(500, 200), (5_000, 200), (200_000, 400)])
def test_deeply_nested_html_is_never_a_5xx(gw: Running, depth: int, status: int) -> None:
    page = (b"<html><body>" + b"<div>" * depth + b"<p>Deep otters.</p>" + b"</div>" * depth
            + b"</body></html>")
    r = upload(gw, "pages", {f"deep{depth}.html": page})
    assert r.status_code == status, r.text
    if status == 200:
        assert r.json()["data"][0]["chunks"] == 1
    else:
        assert "too deeply" in r.json()["error"]["message"]


def _chunked_multipart(total: int) -> Iterator[bytes]:
    yield (f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="file"; '
           f'filename="big.txt"\r\nContent-Type: text/plain\r\n\r\n').encode()
    piece = b"otters " * (MB // 7)
    for _ in range(total // len(piece)):
        yield piece
    yield f"\r\n--{BOUNDARY}--\r\n".encode()


def test_chunked_uploads_over_the_cap_are_refused_while_streaming(gw: Running) -> None:
    before = rss_bytes()
    r = httpx.post(gw.url + "/v1/collections/big/documents", content=_chunked_multipart(60 * MB),
                   headers=_headers(**{"content-type":
                                       f"multipart/form-data; boundary={BOUNDARY}"}),
                   timeout=120)
    assert r.status_code == 413, r.text
    assert "rag.max_upload_bytes" in r.json()["error"]["message"]
    # Files past 1 MB spool to disk as they stream: memory never holds the upload.
    assert rss_bytes() - before < 40 * MB
    assert trace(gw, r.headers["x-request-id"])["status"] == 413

    def json_body() -> Iterator[bytes]:
        yield b'{"documents": [{"source": "big.txt", "text": "'
        for _ in range(60):
            yield b"x" * MB
        yield b'"}]}'

    r = httpx.post(gw.url + "/v1/collections/big/documents", content=json_body(),
                   headers=_headers(**{"content-type": "application/json"}), timeout=120)
    assert r.status_code == 413 and r.json()["error"]["code"] == "body_too_large"
    assert httpx.get(gw.url + "/v1/collections/big", headers=_headers()).status_code == 404


def test_a_large_html_upload_does_not_block_the_event_loop(gw: Running) -> None:
    """12 MB of markup takes seconds to walk; a probe is answered throughout."""
    unit = b'<div class="row"><span></span><i></i></div>\n'
    page = (b"<html><body><main><h1>Big page</h1><p>One sentence about otters.</p>"
            + unit * (12 * MB // len(unit)) + b"</main></body></html>")
    done = threading.Event()
    result: list[httpx.Response] = []

    def send() -> None:
        try:
            result.append(upload(gw, "pages", {"big.html": page}))
        finally:
            done.set()

    sender = threading.Thread(target=send)
    sender.start()
    probes: list[float] = []
    with httpx.Client(base_url=gw.url, timeout=30) as probe:
        while not done.is_set():
            t0 = time.perf_counter()
            assert probe.get("/health").status_code == 200
            probes.append(time.perf_counter() - t0)
            time.sleep(0.05)
    sender.join()
    assert result and result[0].status_code == 200, result[0].text if result else None
    assert len(probes) >= 10  # the upload took a while: the probes saw it all
    assert max(probes) < 2.0, f"a probe waited {max(probes):.2f} s"


def _many_documents(n: int) -> dict[str, Any]:
    rng = random.Random(12)
    words = ["otter", "river", "stream", "pebble", "kelp", "whisker", "paw", "den", "burrow",
             "fish", "current", "tide", "bank", "reed", "swim", "dive", "float", "sleep"]
    docs = []
    for i in range(n):
        paras = ["\n".join(" ".join(rng.choices(words, k=12)) + "." for _ in range(8))
                 for _ in range(8)]
        docs.append({"source": f"doc{i}.md", "text": f"# Doc {i}\n\n" + "\n\n".join(paras)})
    return {"documents": docs}


def test_ingestion_quota_and_cancellation_when_the_client_leaves(gw: Running) -> None:
    """A long ingestion holds the tenant's one slot (a second one is refused
    with 429, another tenant is not); when its client hangs up, the work
    stops between batches and nothing more is stored."""
    svc = gw.services
    body = _many_documents(1500)  # minutes of work on any machine, if it were not cut
    outcome: list[BaseException | httpx.Response] = []

    def send() -> None:
        try:
            outcome.append(httpx.post(gw.url + "/v1/collections/slow/documents", json=body,
                                      headers=_headers(), timeout=httpx.Timeout(60, read=3)))
        except httpx.ReadTimeout as e:  # the client gives up and closes the connection
            outcome.append(e)

    sender = threading.Thread(target=send)
    sender.start()
    deadline = time.monotonic() + 30
    while svc.rag.quota.by_tenant.get("default") != 1:
        assert time.monotonic() < deadline and sender.is_alive()
        time.sleep(0.01)
    r = post(gw, "/v1/collections/slow/documents",
             json={"documents": [{"source": "x.md", "text": "x"}]})
    assert r.status_code == 429 and r.json()["error"]["code"] == "ingest_quota"
    assert r.headers["retry-after"]
    r = post(gw, "/v1/collections/small/documents", key=OTHER,
             json={"documents": [{"source": "x.md", "text": "a small document"}]})
    assert r.status_code == 200, r.text
    sender.join()
    assert isinstance(outcome[0], httpx.ReadTimeout), "the ingestion finished before the hang-up"
    deadline = time.monotonic() + 60
    while svc.rag.quota.running:  # released only once the worker thread has stopped
        assert time.monotonic() < deadline, "the ingestion went on after the client left"
        time.sleep(0.05)
    stored = httpx.get(gw.url + "/v1/collections/slow", headers=_headers())
    assert stored.status_code == 404 or stored.json()["documents"] < 1500
    rec = next(t for t in gw.traces(1000)
               if t["endpoint"] == "rag.ingest" and "slow" in str(t["rag"]) and t["status"] == 499)
    assert rec["error_code"] == "client_closed_request"


def test_bytes_per_minute_quota_is_charged_per_upload(gw: Running) -> None:
    quota = gw.services.rag.quota
    quota.bytes_per_minute = 1000  # (rag.ingest_bytes_per_minute_per_tenant, off in this module)
    try:
        doc = {"documents": [{"source": "q.md", "text": "quota " * 100}]}
        assert post(gw, "/v1/collections/q/documents", key=OTHER, json=doc).status_code == 200
        r = post(gw, "/v1/collections/q/documents", key=OTHER, json=doc)
        assert r.status_code == 429 and r.json()["error"]["code"] == "ingest_quota"
        assert int(r.headers["retry-after"]) >= 1
        assert post(gw, "/v1/collections/q/documents", json=doc).status_code == 200  # per tenant
    finally:
        quota.bytes_per_minute = 0
