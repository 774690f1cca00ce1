"""Small parts of the newcomer fixes: the 401 hint only where it applies, and
the ``ingest --url`` client's reading of the server's answers."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from seawall.config import AuthSettings
from seawall.errors import AuthenticationFailed
from seawall.pipeline.context import RequestContext
from seawall.pipeline.stages import AuthStage
from seawall.rag.remote import MAX_WAIT_S, _outcomes, documents_url, retry_after_s


def _refusal(settings: AuthSettings, host: str, authorization: str | None = None) -> str:
    stage = AuthStage(settings, keys=None)  # type: ignore[arg-type]  # no virtual key here
    ctx = RequestContext(endpoint="chat.completions", client_host=host,
                         authorization=authorization)
    with pytest.raises(AuthenticationFailed) as e:
        asyncio.run(stage.before(ctx))
    return e.value.message


def test_the_401_says_why_only_to_loopback_callers() -> None:
    locked = AuthSettings(master_key="sk-master-12345")
    assert "auth.master_key set" in _refusal(locked, "127.0.0.1")
    assert "auth.master_key set" in _refusal(locked, "::1", "Bearer unused-on-loopback")
    remote = _refusal(locked, "10.1.2.3")
    assert "loopback" not in remote and remote.startswith("Missing API key. Send")
    assert _refusal(locked, "10.1.2.3", "Bearer nope") == "Incorrect API key provided."
    keyless = _refusal(AuthSettings(), "127.0.0.1")
    assert "auth.allow_anonymous_loopback is false" in keyless


def test_retry_after_prefers_milliseconds_and_is_bounded() -> None:
    assert retry_after_s({"retry-after": "4", "retry-after-ms": "4100"}) == pytest.approx(4.2)
    assert retry_after_s({"retry-after": "3"}) == pytest.approx(3.1)
    assert retry_after_s({"retry-after": "Wed, 21 Oct 2015 07:28:00 GMT"}) == 2.0
    assert retry_after_s({"retry-after": "99999"}) == MAX_WAIT_S
    assert retry_after_s({}) == 2.0


def test_documents_url_takes_the_gateway_with_or_without_v1() -> None:
    for url in ("http://h:8000", "http://h:8000/", "http://h:8000/v1", "http://h:8000/v1/"):
        assert documents_url(url, "kb") == "http://h:8000/v1/collections/kb/documents"


def test_outcomes_group_a_jsonl_files_records() -> None:
    results: list[dict[str, Any]] = [
        {"source": "a/r.jsonl#1", "status": "unchanged", "chunks": 1},
        {"source": "a/r.jsonl#2", "status": "added", "chunks": 2},
        {"source": "b.md", "status": "replaced", "chunks": 3}]
    out = {o.source: o for o in _outcomes([("a/r.jsonl", b""), ("b.md", b""), ("c.md", b"")],
                                          results)}
    assert (out["a/r.jsonl"].status, out["a/r.jsonl"].chunks) == ("added", 3)
    assert out["a/r.jsonl"].documents == {"unchanged": 1, "added": 1}
    assert out["b.md"].status == "replaced" and out["c.md"].documents == {}
