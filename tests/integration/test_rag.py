"""RAG through the real gateway: documents in over HTTP (JSON and multipart)
and the CLI, search, the chat path with the official openai SDK in front and
the fake upstream behind (which shows the prompt it really received), the
trace record, persistence across a restart, and tenant isolation."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
import yaml

from seawall.pipeline.stages import hash_key
from seawall.store.base import ApiKey
from tests.gateway import Running, run_gateway
from tests.servers import FakeUpstreamClient

pytestmark = pytest.mark.timeout(120)

MASTER = "sk-master-rag-test"
FIXTURES = Path(__file__).parent.parent / "fixtures" / "rag"
OTHER_TENANT_KEY = "sk-sw-other-tenant-key-for-rag-tests"

HANDBOOK = """# Operations handbook

## Deploys

Deploys go out every Tuesday at 14:00 UTC. A deploy needs two approvals in the
release channel, and the on-call engineer must be online.

## Rollback

To roll back, run `seawall-deploy rollback --to previous`. The rollback takes
about four minutes and keeps the database schema as it is.

## Holidays

Each employee has 27 days of paid holiday per year, plus public holidays.
"""

PRICING = """# Pricing

The team plan costs 42 euros per seat per month, billed yearly.
"""


def _config(upstream: FakeUpstreamClient, data_dir: Path) -> dict[str, Any]:
    return {
        "data_dir": str(data_dir),
        "auth": {"master_key": MASTER, "allow_anonymous_loopback": False},
        "observe": {"traces": {"flush_interval_s": 0.01}},
        "providers": {"f": {"type": "openai", "base_url": upstream.base_url + "/v1"}},
        "models": {
            "m": {"provider": "f", "model": "fake-1"},
            "handbook-bot": {"provider": "f", "model": "fake-1",
                             "rag": {"collection": "handbook", "top_k": 2}},
        },
    }


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("rag") / "data"


@pytest.fixture(scope="module")
def gw(upstream: FakeUpstreamClient, data_dir: Path) -> Iterator[Running]:
    settings = _config(upstream, data_dir)
    with run_gateway(settings, data_dir.parent) as running:
        running.on_server(running.services.store.create_key(ApiKey(
            id="k-other", name="other", tenant="other", key_hash=hash_key(OTHER_TENANT_KEY),
            prefix=OTHER_TENANT_KEY[:10], rpm=None, created_at=0.0)))
        yield running


def api(gw: Running, method: str, path: str, key: str = MASTER, **kw: Any) -> httpx.Response:
    return httpx.request(method, gw.url + path, headers={"authorization": f"Bearer {key}"},
                         timeout=60, **kw)


def add(gw: Running, collection: str, docs: list[dict[str, Any]], **kw: Any) -> list[dict]:
    r = api(gw, "POST", f"/v1/collections/{collection}/documents", json={"documents": docs},
            **kw)
    assert r.status_code == 200, r.text
    return r.json()["data"]


def search(gw: Running, collection: str, query: str, **body: Any) -> list[dict[str, Any]]:
    r = api(gw, "POST", f"/v1/collections/{collection}/search", json={"query": query, **body})
    assert r.status_code == 200, r.text
    return r.json()["data"]


@pytest.fixture(scope="module")
def handbook(gw: Running) -> None:
    add(gw, "handbook", [
        {"source": "ops/handbook.md", "text": HANDBOOK, "format": "markdown",
         "metadata": {"team": "ops", "year": 2025}},
        {"source": "sales/pricing.md", "text": PRICING, "format": "markdown",
         "metadata": {"team": "sales", "year": 2026}},
    ])


def test_search_finds_the_section_with_heading_path_and_offsets(gw: Running,
                                                                 handbook: None) -> None:
    hits = search(gw, "handbook", "how do I roll back a deploy?", top_k=3)
    best = hits[0]
    assert best["source"] == "ops/handbook.md"
    assert "seawall-deploy rollback" in best["text"]
    assert best["heading_path"][-1] == "Rollback"
    # Offsets point into the Markdown source.
    assert HANDBOOK[best["start"]:best["end"]].strip().endswith(best["text"].strip()[-40:])
    assert set(best["scores"]) >= {"bm25", "dense", "fused"}
    assert hits[0]["rank"] == 1 and [h["rank"] for h in hits] == list(range(1, len(hits) + 1))


def test_filters_restrict_results_and_bad_filters_are_refused(gw: Running,
                                                              handbook: None) -> None:
    hits = search(gw, "handbook", "how much does it cost?", filter={"team": "ops"}, top_k=5)
    assert hits and all(h["source"] == "ops/handbook.md" for h in hits)
    hits = search(gw, "handbook", "how much does it cost?", filter={"year": {"$gte": 2026}})
    assert hits and all(h["source"] == "sales/pricing.md" for h in hits)
    assert search(gw, "handbook", "cost", filter={"team": "nobody"}) == []
    r = api(gw, "POST", "/v1/collections/handbook/search",
            json={"query": "cost", "filter": {"year": {"$near": 3}}})
    assert r.status_code == 400 and "$near" in r.json()["error"]["message"]


def test_reingest_is_idempotent_and_changes_replace_old_chunks(gw: Running) -> None:
    doc = {"source": "faq.md", "text": "# FAQ\n\nThe office opens at 8am.", "format": "markdown"}
    assert [r["status"] for r in add(gw, "faq", [doc])] == ["added"]
    assert [r["status"] for r in add(gw, "faq", [doc])] == ["unchanged"]
    changed = {**doc, "text": "# FAQ\n\nThe office opens at 10am on Mondays."}
    assert [r["status"] for r in add(gw, "faq", [changed])] == ["replaced"]
    texts = [h["text"] for h in search(gw, "faq", "when does the office open?", top_k=10)]
    assert any("10am" in t for t in texts) and not any("8am" in t for t in texts)
    info = api(gw, "GET", "/v1/collections/faq").json()
    assert info["documents"] == 1 and info["chunks"] == 1


def test_list_inspect_and_delete_documents_and_collections(gw: Running) -> None:
    add(gw, "scratch", [{"source": "a.txt", "text": "Alpha paragraph about kittens."},
                        {"source": "b.txt", "text": "Beta paragraph about volcanoes."}])
    names = [c["name"] for c in api(gw, "GET", "/v1/collections").json()["data"]]
    assert "scratch" in names
    docs = api(gw, "GET", "/v1/collections/scratch/documents").json()["data"]
    assert sorted(d["source"] for d in docs) == ["a.txt", "b.txt"]
    b = next(d for d in docs if d["source"] == "b.txt")
    assert api(gw, "GET", f"/v1/collections/scratch/documents/{b['id']}").json()["chunks"] == 1
    assert api(gw, "DELETE", f"/v1/collections/scratch/documents/{b['id']}").status_code == 200
    assert api(gw, "GET", f"/v1/collections/scratch/documents/{b['id']}").status_code == 404
    assert all(h["source"] == "a.txt" for h in search(gw, "scratch", "volcanoes", top_k=5))
    r = api(gw, "POST", "/v1/collections/scratch/documents/delete", json={"sources": ["a.txt"]})
    assert r.json()["deleted"] == 1
    assert search(gw, "scratch", "kittens") == []
    scratch_id = gw.services.rag.store.collection("default", "scratch").id  # type: ignore[union-attr]
    assert (gw.services.rag.index_dir / str(scratch_id)).is_dir()
    assert api(gw, "DELETE", "/v1/collections/scratch").status_code == 200
    assert not (gw.services.rag.index_dir / str(scratch_id)).exists()
    r = api(gw, "POST", "/v1/collections/scratch/search", json={"query": "kittens"})
    assert r.status_code == 404 and r.json()["error"]["code"] == "collection_not_found"


def test_multipart_upload_of_markdown_html_and_pdf(gw: Running) -> None:
    files = [("file", (name, (FIXTURES / name).read_bytes()))
             for name in ("handbook.md", "page.html", "report.pdf")]
    r = api(gw, "POST", "/v1/collections/uploads/documents", files=files,
            data={"metadata": json.dumps({"origin": "upload"})})
    assert r.status_code == 200, r.text
    results = r.json()["data"]
    assert [x["status"] for x in results] == ["added"] * 3
    assert all(x["chunks"] > 0 for x in results)
    docs = api(gw, "GET", "/v1/collections/uploads/documents").json()["data"]
    assert {d["format"] for d in docs} == {"markdown", "html", "pdf"}
    assert all(d["metadata"]["origin"] == "upload" for d in docs)
    hits = search(gw, "uploads", "anything", filter={"origin": "upload"}, top_k=50)
    assert {h["source"] for h in hits} == {"handbook.md", "page.html", "report.pdf"}


def test_bad_input_gets_clear_errors(gw: Running) -> None:
    r = api(gw, "POST", "/v1/collections/bad name/documents",
            json={"documents": [{"source": "x", "text": "y"}]})
    assert r.status_code == 400 and "collection name" in r.json()["error"]["message"]
    r = api(gw, "POST", "/v1/collections/ok/documents", json={"documents": [{"text": "y"}]})
    assert r.status_code == 400 and "source" in r.json()["error"]["message"]
    r = api(gw, "POST", "/v1/collections/ok/documents",
            files=[("file", ("blob.bin", bytes(range(256)) * 4))])
    assert r.status_code == 400
    r = api(gw, "POST", "/v1/collections/ok/documents",
            json={"documents": [{"source": "scan.pdf", "text": "%PDF-1.7"}]})
    assert r.status_code == 400 and "multipart" in r.json()["error"]["message"]
    r = httpx.get(gw.url + "/v1/collections")
    assert r.status_code == 401


def test_json_documents_take_their_format_from_the_source_name(gw: Running) -> None:
    add(gw, "formats", [{"source": "guide.md", "text": "# Guide\n\n## Setup\n\nPlug it in."},
                        {"source": "notes", "text": "# Not a heading in plain text"}])
    hits = {h["source"]: h for h in search(gw, "formats", "plug it in heading", top_k=5)}
    assert hits["guide.md"]["heading_path"] == ["Guide", "Setup"]
    assert hits["notes"]["heading_path"] == []


def test_collections_are_per_tenant(gw: Running, handbook: None) -> None:
    r = api(gw, "POST", "/v1/collections/handbook/search", key=OTHER_TENANT_KEY,
            json={"query": "rollback"})
    assert r.status_code == 404
    assert api(gw, "GET", "/v1/collections", key=OTHER_TENANT_KEY).json()["data"] == []
    add(gw, "handbook", [{"source": "own.txt", "text": "The other tenant's own handbook."}],
        key=OTHER_TENANT_KEY)
    mine = api(gw, "GET", "/v1/collections/handbook", key=OTHER_TENANT_KEY).json()
    assert mine["documents"] == 1
    assert api(gw, "GET", "/v1/collections/handbook").json()["documents"] == 2


def _sdk(gw: Running) -> openai.OpenAI:
    return openai.OpenAI(base_url=gw.url + "/v1", api_key=MASTER, max_retries=0, timeout=30)


def _sent_messages(upstream: FakeUpstreamClient) -> list[dict[str, Any]]:
    body = upstream.calls()["requests"][-1]
    return body["messages"]  # type: ignore[no-any-return]


def test_chat_with_rag_sends_the_right_chunks_and_returns_citations(
        gw: Running, upstream: FakeUpstreamClient, handbook: None) -> None:
    upstream.reset()
    upstream.script(default={"text": "Run the rollback command [1]."})
    resp = _sdk(gw).chat.completions.create(
        model="m", messages=[{"role": "system", "content": "Be brief."},
                             {"role": "user", "content": "How do I roll back a deploy?"}],
        extra_body={"rag": {"collection": "handbook", "top_k": 2}})
    sent = _sent_messages(upstream)
    assert [m["role"] for m in sent] == ["system", "system", "user"]
    assert sent[0]["content"] == "Be brief."
    context = sent[1]["content"]
    assert "seawall-deploy rollback --to previous" in context
    assert context.index("[1]") < context.index("seawall-deploy rollback")
    assert "rag" not in upstream.calls()["requests"][-1]  # our option never goes upstream
    citations = resp.model_extra["citations"]  # type: ignore[index]
    assert citations[0]["index"] == 1 and citations[0]["source"] == "ops/handbook.md"
    assert citations[0]["heading_path"][-1] == "Rollback" and citations[0]["cited"] is True
    assert all(c["cited"] is False for c in citations[1:])

    record = next(t for t in gw.traces(5) if t["trace_id"] == resp._request_id
                  or t["endpoint"] == "chat.completions")
    rag = json.loads(record["rag"])
    assert rag["collection"] == "handbook" and rag["query"] == "How do I roll back a deploy?"
    assert "seawall-deploy rollback" in rag["chunks"][0]["text"]
    assert rag["system"] == context
    assert json.loads(record["input"])[1]["content"] == context  # the exact prompt sent


def test_streamed_rag_answer_carries_citations_on_its_first_chunk(
        gw: Running, upstream: FakeUpstreamClient, handbook: None) -> None:
    upstream.script(default={"text": "Twenty-seven days [1]."})
    stream = _sdk(gw).chat.completions.create(
        model="m", stream=True, messages=[{"role": "user", "content": "How many holiday days?"}],
        extra_body={"rag": {"collection": "handbook", "top_k": 1}})
    chunks = list(stream)
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == \
        "Twenty-seven days [1]."
    first = chunks[0].model_extra["citations"]  # type: ignore[index]
    assert [c["heading_path"][-1] for c in first] == ["Holidays"]
    assert all("citations" not in (c.model_extra or {}) for c in chunks[1:])
    assert "27 days of paid holiday" in _sent_messages(upstream)[0]["content"]


def test_a_model_configured_with_a_collection_always_retrieves(
        gw: Running, upstream: FakeUpstreamClient, handbook: None) -> None:
    upstream.script(default={})
    resp = _sdk(gw).chat.completions.create(
        model="handbook-bot",
        messages=[{"role": "user", "content": "What does the team plan cost?"}])
    sent = _sent_messages(upstream)
    assert sent[0]["role"] == "system" and "42 euros per seat" in sent[0]["content"]
    assert len(resp.model_extra["citations"]) <= 2  # type: ignore[index]


def test_chat_with_an_unknown_collection_is_a_404(gw: Running) -> None:
    with pytest.raises(openai.NotFoundError) as e:
        _sdk(gw).chat.completions.create(
            model="m", messages=[{"role": "user", "content": "hi"}],
            extra_body={"rag": {"collection": "nope"}})
    assert e.value.body["code"] == "collection_not_found"  # type: ignore[index]


def test_context_respects_the_token_budget(gw: Running, upstream: FakeUpstreamClient,
                                           handbook: None) -> None:
    def context(budget: int) -> str:
        _sdk(gw).chat.completions.create(
            model="m", messages=[{"role": "user", "content": "deploys rollback holidays pricing"}],
            extra_body={"rag": {"collection": "handbook", "top_k": 10, "context_tokens": budget}})
        return _sent_messages(upstream)[0]["content"].split("Sources:\n\n", 1)[1]

    roomy, tight = context(4000), context(64)
    assert roomy.count("\n[") + 1 == 4  # every chunk fits
    assert 1 <= tight.count("\n[") + 1 < 4
    assert gw.services.tokens.count(tight) <= 64


def _cli(args: list[str], config: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "seawall.cli", *args, "-c", str(config)],
                          capture_output=True, text=True, timeout=300,
                          cwd=config.parent, env={**os.environ, "SEAWALL_CONFIG": ""})


def test_cli_ingest_is_resumable_idempotent_and_prunes_while_the_server_serves(
        gw: Running, upstream: FakeUpstreamClient, data_dir: Path, tmp_path: Path) -> None:
    config = tmp_path / "seawall.yaml"
    config.write_text(yaml.safe_dump(_config(upstream, data_dir)))
    docs = tmp_path / "docs"
    (docs / "sub").mkdir(parents=True)
    (docs / "one.md").write_text("# One\n\nZebras sleep standing up in the savanna.")
    (docs / "sub" / "two.txt").write_text("Penguins cannot fly but swim very well.")
    (docs / ".hidden.md").write_text("never ingested")
    run = _cli(["ingest", "docs", "--collection", "cli", "-m", "kind=note"], config)
    assert run.returncode == 0, run.stderr
    assert "2 added" in run.stderr
    hits = search(gw, "cli", "which animal sleeps standing?")  # the server sees the CLI's rows
    assert hits[0]["source"] == "docs/one.md" and hits[0]["metadata"]["kind"] == "note"

    again = _cli(["ingest", "docs", "--collection", "cli", "-m", "kind=note"], config)
    assert "0 added, 0 replaced, 2 unchanged" in again.stderr

    (docs / "one.md").write_text("# One\n\nZebras sleep lying down when they feel safe.")
    (docs / "sub" / "two.txt").unlink()
    pruned = _cli(["ingest", "docs", "--collection", "cli", "-m", "kind=note", "--prune"],
                  config)
    assert "1 replaced" in pruned.stderr and "1 pruned" in pruned.stderr, pruned.stderr
    hits = search(gw, "cli", "penguins swim", top_k=5)
    assert [h["source"] for h in hits] == ["docs/one.md"]
    assert "lying down" in hits[0]["text"]

    listed = _cli(["collections", "list"], config)
    assert "cli" in listed.stdout


def test_collections_and_indexes_survive_a_restart(upstream: FakeUpstreamClient,
                                                   tmp_path: Path) -> None:
    data = tmp_path / "data"
    with run_gateway(_config(upstream, data), tmp_path) as first:
        add(first, "kept", [{"source": "k.md", "format": "markdown",
                             "text": "# Kept\n\nThe archive room is on the third floor."}])
        before = search(first, "kept", "where is the archive?")
    assert (data / "rag").is_dir()  # the saved index
    with run_gateway(_config(upstream, data), tmp_path) as second:
        after = search(second, "kept", "where is the archive?")
    assert [h["chunk_id"] for h in after] == [h["chunk_id"] for h in before]
    assert after[0]["text"] == before[0]["text"]


def test_search_with_an_http_reranker_reorders_by_its_scores(upstream: FakeUpstreamClient,
                                                             tmp_path: Path) -> None:
    """The TEI-format re-rank API of the fake upstream scores by word overlap,
    which a test can predict; the re-ranker's order must win over fusion's."""
    config = _config(upstream, tmp_path / "data")
    config["rag"] = {"retrieval": {"rerank": {"kind": "http", "url": upstream.base_url,
                                              "api": "tei", "depth": 10}}}
    with run_gateway(config, tmp_path) as g:
        add(g, "rr", [
            {"source": "1.txt", "text": "Backups run nightly. Restores need a ticket."},
            {"source": "2.txt", "text": "The nightly restore drill checks backups restores."},
            {"source": "3.txt", "text": "Lunch is served at noon."},
        ])
        upstream.reset()
        hits = search(g, "rr", "nightly backups restores drill", top_k=3)
        assert [h["source"] for h in hits][:2] == ["2.txt", "1.txt"]
        assert hits[0]["scores"]["rerank"] == pytest.approx(1.0)
        assert hits[1]["scores"]["rerank"] == pytest.approx(0.75)
        assert upstream.calls()["paths"][-1] == "/rerank"
        plain = search(g, "rr", "nightly backups restores drill", top_k=3, rerank=False)
        assert all("rerank" not in h["scores"] for h in plain)

        # The re-rank API failing keeps the fused order instead of failing the search.
        upstream.script(default={"error_status": 503})
        r = api(g, "POST", "/v1/collections/rr/search",
                json={"query": "nightly backups restores drill", "top_k": 3})
        assert r.status_code == 200 and "503" in r.json()["rerank_error"]
        assert [h["chunk_id"] for h in r.json()["data"]] == [h["chunk_id"] for h in plain]
        upstream.script(default={})
