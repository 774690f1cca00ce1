"""Limits of the RAG parts on hostile input: filter and metadata nesting,
HTML nesting, and the ingestion quota."""

from __future__ import annotations

import time
from typing import Any

import pytest

from seawall.api.limits import depth_exceeds as nesting_exceeds
from seawall.errors import BodyTooLarge, RateLimited
from seawall.rag.filters import MAX_DEPTH, FilterError, compile_filter
from seawall.rag.loaders import load_bytes
from seawall.rag.loaders.html import MAX_DEPTH as HTML_DEPTH
from seawall.rag.loaders.html import TooDeeplyNested
from seawall.rag.quota import IngestQuota


def _nested(depth: int, leaf: Any = 1) -> Any:
    value = leaf
    for i in range(depth):
        value = {"k": value} if i % 2 else [value]
    return value


def test_nesting_exceeds_counts_objects_and_lists_at_any_depth() -> None:
    assert not nesting_exceeds(_nested(5), 5)
    assert nesting_exceeds(_nested(6), 5)
    assert not nesting_exceeds("flat", 0)
    assert nesting_exceeds(_nested(100_000), 32)  # iterative: no RecursionError


@pytest.mark.parametrize("depth", [MAX_DEPTH + 1, 300, 900, 10_000])
def test_a_filter_nested_too_deep_is_refused(depth: int) -> None:
    spec: dict[str, Any] = {"team": "ops"}
    for _ in range(depth):
        spec = {"$not": spec}
    with pytest.raises(FilterError, match="nests more than"):
        compile_filter(spec)


def test_filters_within_the_limit_still_work() -> None:
    spec: dict[str, Any] = {"team": "ops"}
    for _ in range((MAX_DEPTH - 1) // 2 * 2):  # an even number of $not: the same test
        spec = {"$not": spec}
    predicate = compile_filter(spec)
    assert predicate is not None
    assert predicate({"team": "ops"}) and not predicate({"team": "sales"})
    both = compile_filter({"$or": [{"$and": [{"team": "ops"}, {"year": {"$gte": 2020}}]},
                                   {"$not": None}]})
    assert both is not None and both({"team": "ops", "year": 2021})
    assert not both({"team": "x"})  # $not of an empty filter matches nothing


@pytest.mark.parametrize("depth", [HTML_DEPTH + 5, 500, 4_000])
def test_deep_html_is_read_as_flat_text_below_the_walk_limit(depth: int) -> None:
    page = ("<html><body>" + "<div><span>" * depth + "deep words" + "</span></div>" * depth
            + "<p>after</p></body></html>")
    doc = load_bytes(page.encode(), "deep.html")[0]
    assert "deep words" in doc.text and "after" in doc.text


def test_deep_nested_lists_keep_their_text() -> None:
    page = "<ul>" + "<li>item<ul>" * 300 + "<li>last</li>" + "</ul></li>" * 300 + "</ul>"
    doc = load_bytes(page.encode(), "lists.html")[0]
    assert doc.text.count("item") == 300 and "last" in doc.text


@pytest.mark.parametrize("page", [
    "<div>" * 20_000,  # too deep
    ("<div>" * 9_000 + "</div>" * 9_000) * 5,  # deep nesting, over and over
])
def test_html_too_deep_to_parse_quickly_is_refused_before_parsing(page: str) -> None:
    t0 = time.perf_counter()
    with pytest.raises(TooDeeplyNested):
        load_bytes(page.encode(), "deep.html")
    assert time.perf_counter() - t0 < 5  # the scan is linear (the parse is quadratic)


def test_ordinary_html_passes_the_nesting_scan() -> None:
    row = "<tr><td><p>cell<br><img src=x></td></tr>"
    page = "<html><body><table>" + row * 50_000 + "</table><p>end</p></body></html>"
    assert "end" in load_bytes(page.encode(), "table.html")[0].text


def test_ingest_quota_per_tenant_and_in_all() -> None:
    quota = IngestQuota(per_tenant=1, total=2)
    with quota.tenant_slot("a"):
        with pytest.raises(RateLimited) as e, quota.tenant_slot("a"):
            pass
        assert e.value.code == "ingest_quota" and e.value.headers()["retry-after"]
        with (quota.tenant_slot("b"), quota.work_slot(), quota.work_slot(),
              pytest.raises(RateLimited), quota.work_slot()):
            pass
    assert quota.by_tenant == {} and quota.running == 0
    with pytest.raises(ValueError), quota.tenant_slot("a"), quota.work_slot():
        raise ValueError("released all the same")
    assert quota.by_tenant == {} and quota.running == 0
    unlimited = IngestQuota(per_tenant=0, total=0)
    with unlimited.tenant_slot("a"), unlimited.tenant_slot("a"), unlimited.work_slot():
        assert unlimited.by_tenant == {"a": 2}


def test_ingest_bytes_per_minute_per_tenant() -> None:
    quota = IngestQuota(per_tenant=0, total=0, bytes_per_minute=1000)
    quota.charge("a", 600)
    quota.charge("a", 400)  # a minute's worth may come at once
    with pytest.raises(RateLimited) as e:
        quota.charge("a", 100)
    assert 1 <= float(e.value.headers()["retry-after"]) <= 7  # 100 bytes refill in 6 s
    quota.charge("b", 1000)  # per tenant
    with pytest.raises(BodyTooLarge):
        quota.charge("c", 1001)  # could never pass: not a 429
    IngestQuota(per_tenant=0, total=0).charge("a", 10**12)  # 0: no cap
