"""Request-path limits on their own: JSON depth, the Serving guarantee,
linear answer gathering, stream line caps, record truncation."""

from __future__ import annotations

import time

import pytest

from seawall.api.limits import check_depth, depth_exceeds, may_exceed
from seawall.api.wire import decode_json_object
from seawall.config import AdmissionSettings
from seawall.errors import InvalidRequest, SeawallError, UpstreamTooLarge
from seawall.observe.metrics import Metrics
from seawall.pipeline.admission import AdmissionStage
from seawall.pipeline.context import RequestContext
from seawall.pipeline.pipeline import Pipeline
from seawall.pipeline.stages import truncate, truncate_strings
from seawall.providers.anthropic import SSEDecoder
from seawall.providers.base import Gatherer, make_chunk
from seawall.providers.upstream import ResponseLimits


def nested(depth: int) -> str:
    return "[" * depth + "]" * depth


@pytest.mark.parametrize("depth", [1, 2, 63, 64])
def test_depth_at_or_under_the_limit_passes(depth: int) -> None:
    obj = decode_json_object(('{"a":' + nested(depth - 1) + "}").encode()
                             if depth > 1 else b'{"a":1}', 64)
    assert not depth_exceeds(obj, 64)


@pytest.mark.parametrize("depth", [65, 200, 999, 1_000, 5_000, 100_000])
def test_depth_over_the_limit_is_a_400(depth: int) -> None:
    with pytest.raises(InvalidRequest) as e:
        decode_json_object(('{"a":' + nested(depth) + "}").encode(), 64)
    assert e.value.status == 400 and e.value.code == "json_too_deep"


def test_brackets_inside_strings_do_not_count() -> None:
    text = '{"content": "' + "[" * 5_000 + '"}'
    assert may_exceed(text.encode(), 64)  # the cheap bound says "maybe"
    assert decode_json_object(text.encode(), 64)["content"] == "[" * 5_000  # the walk says no


def test_the_vectorised_bound_for_large_bodies_ignores_brackets_in_strings() -> None:
    pad = '"pad":"' + "x" * 70_000 + '"'
    shallow = ('{' + pad + ',"a":"' + "[" * 500 + '","b":[[1]]}').encode()
    assert not may_exceed(shallow, 64)  # decided from the bytes, no walk needed
    # Closers inside a string must not hide real depth after it.
    hidden = ('{' + pad + ',"a":"' + "]" * 500 + '","b":' + nested(100) + "}").encode()
    assert may_exceed(hidden, 64)
    with pytest.raises(InvalidRequest):
        decode_json_object(hidden, 64)
    escaped = ('{' + pad + ',"a":"\\"]]]]","b":' + nested(100) + "}").encode()
    with pytest.raises(InvalidRequest):
        decode_json_object(escaped, 64)


def test_wide_bodies_are_walked_once_per_container() -> None:
    obj = {"messages": [{"role": "user", "content": [{"type": "text", "text": "x"}] * 50}] * 200}
    t0 = time.perf_counter()
    assert not depth_exceeds(obj, 64)
    assert time.perf_counter() - t0 < 1.0  # generous: proves linear, not a timing claim


def test_check_depth_for_decoded_values_names_what() -> None:
    check_depth({"a": {"b": 1}}, 2)
    with pytest.raises(InvalidRequest, match="The filter is nested more than 2"):
        check_depth({"a": {"b": {"c": 1}}}, 2, "The filter")


class Boom:
    """A stage that fails with a bug (not a SeawallError)."""

    name = "boom"
    traced = False

    async def before(self, ctx: RequestContext) -> None:
        raise RuntimeError("a bug")

    async def after(self, ctx: RequestContext) -> None:
        return None


async def test_serving_releases_the_slot_whatever_is_raised() -> None:
    metrics = Metrics()
    admission = AdmissionStage(AdmissionSettings(max_inflight=4, max_inflight_per_tenant=2),
                               metrics)
    pipeline = Pipeline([admission], [Boom()], metrics)
    for exc in (RuntimeError("x"), RecursionError(), InvalidRequest("bad")):
        ctx = RequestContext(endpoint="chat.completions", tenant="t")
        with pytest.raises(SeawallError) as e:
            async with pipeline.serve(ctx):
                assert admission.inflight == 1 and admission.by_tenant == {"t": 1}
                raise exc
        assert ctx.done and ctx.error is e.value
        assert e.value.status == (400 if isinstance(exc, InvalidRequest) else 500)
        assert admission.inflight == 0 and admission.by_tenant == {}
    # A bug inside a stage: the same.
    ctx = RequestContext(endpoint="chat.completions", tenant="t")
    with pytest.raises(SeawallError) as e:
        async with pipeline.serve(ctx):
            await pipeline.open_stream(ctx)
    assert e.value.code == "internal_error" and admission.inflight == 0
    assert metrics.inflight._value.get() == 0


async def test_finish_runs_once() -> None:
    metrics = Metrics()
    admission = AdmissionStage(AdmissionSettings(), metrics)
    pipeline = Pipeline([admission], [], metrics)
    ctx = RequestContext(endpoint="embeddings", tenant="t")
    async with pipeline.serve(ctx):
        await pipeline.finish(ctx)
    await pipeline.finish(ctx)
    assert admission.inflight == 0 and metrics.inflight._value.get() == 0


def test_gathering_a_long_answer_is_linear() -> None:
    g = Gatherer()
    piece = "x" * 10
    t0 = time.perf_counter()
    for _ in range(500_000):  # 5 MB in 10-character deltas
        g.add(make_chunk("c", "m", 0, {"content": piece}))
    assert time.perf_counter() - t0 < 10  # quadratic joining took minutes
    assert len(g.text) == 5_000_000 and g.size == 5_000_000
    assert g.completion()["choices"][0]["message"]["content"] == g.text


def test_gathered_tool_calls_and_refusals_join() -> None:
    g = Gatherer()
    g.add(make_chunk("c", "m", 0, {"tool_calls": [
        {"index": 0, "id": "t1", "function": {"name": "get_", "arguments": '{"a"'}}]}))
    g.add(make_chunk("c", "m", 0, {"tool_calls": [
        {"index": 0, "function": {"name": "weather", "arguments": ": 1}"}}]}))
    g.add(make_chunk("c", "m", 0, {"refusal": "no"}))
    g.add(make_chunk("c", "m", 0, {"refusal": "pe"}, finish_reason="tool_calls"))
    msg = g.completion()["choices"][0]["message"]
    assert msg["tool_calls"] == [{"id": "t1", "type": "function",
                                  "function": {"name": "get_weather", "arguments": '{"a": 1}'}}]
    assert msg["refusal"] == "nope" and msg["content"] is None
    assert g.size == len("get_weather") + len('{"a": 1}') + 4


def test_sse_decoder_refuses_an_over_long_line() -> None:
    d = SSEDecoder(ResponseLimits(sse_line_bytes=100), "provider 'p'")
    assert d.feed(b"event: x\ndata: {}\n\n") == [("x", b"{}")]
    d.feed(b"data: " + b"a" * 60)
    with pytest.raises(UpstreamTooLarge, match="server.max_sse_line_bytes"):
        d.feed(b"a" * 60)
    with pytest.raises(UpstreamTooLarge):
        SSEDecoder(ResponseLimits(sse_line_bytes=100)).feed(b"data: " + b"a" * 200 + b"\n\n")


def test_truncation_is_visible() -> None:
    assert truncate("abc", 10) == "abc"
    assert truncate("abcdef", 2) == "ab…[truncated 4 chars]"
    assert truncate("abcdef", 0) == "abcdef"
    msgs = [{"role": "user", "content": [{"type": "text", "text": "x" * 50}]}]
    cut = truncate_strings(msgs, 10)
    assert cut[0]["content"][0]["text"] == "x" * 10 + "…[truncated 40 chars]"
    assert msgs[0]["content"][0]["text"] == "x" * 50  # the request itself is untouched


def test_metric_labels_come_from_configured_names() -> None:
    m = Metrics(models=["gpt"])
    assert m.model_label("gpt") == "gpt"
    assert m.model_label("x" * 10_000) == "unknown"
    assert m.model_label("") == "unknown"
