"""The chaos suite: the real gateway in front of real fake upstreams (HTTP
servers on loopback) scripted to fail in every way production does, driven
by the official openai SDK and raw SSE.

For every scenario it checks what the client saw, which deployments were
tried (the trace record's ``attempts``), how many calls each upstream got
(no retry storm), the breaker's moves, and that every request left a trace
record (nothing lost).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from typing import Any

import httpx
import openai
import orjson
import pytest

from seawall.routing.router import RESUME_PROMPT
from tests.gateway import Running, run_gateway
from tests.servers import FakeUpstreamClient, blackhole_listener, closed_port, start_fake_upstream

pytestmark = pytest.mark.timeout(60)

MSG = [{"role": "user", "content": "alpha beta gamma delta"}]
ANSWER = "alpha beta gamma delta"
LONG = " ".join(f"w{i}" for i in range(12))


@pytest.fixture(scope="module")
def fakes() -> Iterator[dict[str, FakeUpstreamClient]]:
    """Three independent upstreams: primary, secondary, and a fallback model's."""
    stops = []
    out = {}
    for name in ("p", "s", "f"):
        url, stop = start_fake_upstream()
        stops.append(stop)
        out[name] = FakeUpstreamClient(url)
    yield out
    for stop in stops:
        stop()


def _config(fakes: dict[str, FakeUpstreamClient], *, providers: dict[str, Any] | None = None,
            resilience: dict[str, Any] | None = None, admission: dict[str, Any] | None = None,
            guardrails: dict[str, Any] | None = None) -> dict[str, Any]:
    prov: dict[str, Any] = {n: {"type": "openai", "base_url": f.base_url + "/v1"}
                            for n, f in fakes.items()}
    prov["pa"] = {"type": "anthropic", "base_url": fakes["p"].base_url, "api_key": "k"}
    prov.update(providers or {})
    res: dict[str, Any] = {
        "timeouts": {"connect_s": 0.3, "first_token_s": 0.5, "idle_s": 0.3, "total_s": 3},
        "retries": {"max_attempts": 3, "base_delay_s": 0.01, "max_delay_s": 0.05,
                    "max_retry_after_s": 1},
        "breaker": {"consecutive_failures": 3, "open_s": 0.3, "max_open_s": 1,
                    "min_requests": 1000},
    }
    for k, v in (resilience or {}).items():
        res[k] = {**res[k], **v} if isinstance(v, dict) else v

    def pair(name: str, **p_extra: Any) -> dict[str, Any]:
        # "weighted" with lopsided weights: p is (all but surely) tried first.
        return {"strategy": "weighted", "deployments": [
            {"provider": "p", "model": f"{name}-p", "weight": 1000, **p_extra},
            {"provider": "s", "model": f"{name}-s", "weight": 0.001}]}

    return {
        "auth": {"allow_anonymous_loopback": True},
        "observe": {"traces": {"flush_interval_s": 0.01}},
        "resilience": res,
        "admission": admission or {},
        "guardrails": guardrails or {},
        "providers": prov,
        "models": {
            "pair": pair("pair"),
            "hedged": pair("hedged", hedge_after_s=0.1),
            "capped": pair("capped", max_concurrency=1),
            "claude-pair": {"strategy": "weighted", "deployments": [
                {"provider": "pa", "model": "claude-p", "weight": 1000},
                {"provider": "s", "model": "claude-s", "weight": 0.001}]},
            "chain": {"provider": "p", "model": "chain-p", "fallbacks": ["backup"]},
            "backup": {"provider": "f", "model": "backup-f"},
            "solo": {"provider": "p", "model": "solo-p"},
            "emb": {"kind": "embedding", "strategy": "weighted", "deployments": [
                {"provider": "p", "model": "emb-p", "weight": 1000},
                {"provider": "s", "model": "emb-s", "weight": 0.001}]},
            "kind": {"provider": "p", "model": "kind-p", "degraded": {
                "answer": "We are busy; try again in a minute.",
                "rules": [{"match": r"\brefund", "answer": "Refunds: see /help/refunds."}]}},
        },
    }


@pytest.fixture
def gateway(fakes: dict[str, FakeUpstreamClient], tmp_path: Any
            ) -> Iterator[Callable[..., Running]]:
    """Start a gateway (fresh breakers and budgets) with config overrides."""
    for f in fakes.values():
        f.reset()
    with ExitStack() as stack:
        def start(**overrides: Any) -> Running:
            return stack.enter_context(run_gateway(_config(fakes, **overrides), tmp_path))
        yield start


def sdk(gw: Running) -> openai.OpenAI:
    return openai.OpenAI(base_url=gw.url + "/v1", api_key="unused-on-loopback",
                         max_retries=0, timeout=10)


def calls(f: FakeUpstreamClient) -> int:
    return int(f.calls()["calls"])


def ask(gw: Running, model: str, **kw: Any) -> Any:
    return sdk(gw).chat.completions.with_raw_response.create(model=model, messages=MSG, **kw)


def sse(gw: Running, model: str, messages: list[dict[str, Any]] | None = None
        ) -> tuple[int, dict[str, str], list[Any]]:
    """A raw streaming request: (status, headers, events); "[DONE]" stays a string."""
    with httpx.Client(timeout=10) as h, h.stream(
            "POST", gw.url + "/v1/chat/completions",
            json={"model": model, "stream": True, "messages": messages or MSG}) as r:
        events: list[Any] = []
        for line in r.iter_lines():
            if line.startswith("data: "):
                data = line[6:]
                events.append(data if data == "[DONE]" else orjson.loads(data))
        if r.status_code != 200:
            r.read()
        return r.status_code, dict(r.headers), events


def text_of(events: list[Any]) -> str:
    return "".join((e["choices"][0]["delta"].get("content") or "") for e in events
                   if isinstance(e, dict) and e.get("choices"))


def traces(gw: Running, n: int) -> list[dict[str, Any]]:
    """The last ``n`` trace records, oldest first, with attempts decoded; and
    proof that every request sent was recorded (nothing lost)."""
    recs = gw.traces(1000)
    chat = [r for r in recs if r["endpoint"] == "chat.completions"]
    assert len(chat) == n, f"{n} requests sent, {len(chat)} trace records"
    for r in chat:
        r["attempts"] = orjson.loads(r["attempts"]) if r["attempts"] else []
    return chat


def outcomes(rec: dict[str, Any]) -> list[tuple[str, str]]:
    return [(a["deployment"], a["outcome"]) for a in rec["attempts"]]


def metric(gw: Running, name: str, **labels: str) -> float:
    """One sample of the gateway's /metrics (0 if absent)."""
    body = httpx.get(gw.url + "/metrics").text
    want = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    for line in body.splitlines():
        if line.startswith(name + "{") or line.startswith(name + " "):
            series, _, value = line.rpartition(" ")
            got = series[len(name):].strip("{}")
            if ",".join(sorted(got.split(","))) == want or (not labels and not got):
                return float(value)
    return 0.0


# -- failures before any output: invisible to the client ---------------------


def test_429_with_retry_after_moves_to_the_other_deployment(
        gateway: Callable[..., Running], fakes: dict[str, FakeUpstreamClient]) -> None:
    gw = gateway()
    fakes["p"].script(default={"error_status": 429, "retry_after_s": 0.5})
    first = ask(gw, "pair")
    assert first.parse().choices[0].message.content == ANSWER
    assert first.headers["x-seawall-deployment"] == "s/pair-s"
    assert first.headers["x-seawall-attempts"] == "2"
    # p asked for 0.5 s of quiet: the next requests skip it without calling it.
    for _ in range(3):
        assert ask(gw, "pair").headers["x-seawall-deployment"] == "s/pair-s"
    assert calls(fakes["p"]) == 1 and calls(fakes["s"]) == 4
    fakes["p"].script(default={})
    time.sleep(0.55)
    assert ask(gw, "pair").headers["x-seawall-deployment"] == "p/pair-p"
    recs = traces(gw, 5)
    assert outcomes(recs[0]) == [("p/pair-p", "upstream_rate_limited"), ("s/pair-s", "ok")]
    assert all(r["status"] == 200 for r in recs)


def test_rate_limit_headers_at_zero_cool_the_deployment_down(
        gateway: Callable[..., Running], fakes: dict[str, FakeUpstreamClient]) -> None:
    gw = gateway()
    fakes["p"].script(queue=[{"headers": {"x-ratelimit-remaining-requests": "0",
                                          "x-ratelimit-reset-requests": "400ms",
                                          "x-ratelimit-limit-requests": "500"}}])
    assert ask(gw, "pair").headers["x-seawall-deployment"] == "p/pair-p"  # it answered...
    ready = httpx.get(gw.url + "/ready").json()["deployments"]["p/pair-p"]
    assert ready["cooldown_reason"] == "upstream rate limit exhausted"
    assert ready["upstream_limits"] == {"remaining_requests": 0, "limit_requests": 500}
    # ...but said it has no requests left for 400 ms: the next one goes elsewhere.
    assert ask(gw, "pair").headers["x-seawall-deployment"] == "s/pair-s"
    assert calls(fakes["p"]) == 1
    time.sleep(0.45)
    assert ask(gw, "pair").headers["x-seawall-deployment"] == "p/pair-p"
    traces(gw, 3)


@pytest.mark.parametrize("status", [500, 502, 503])
def test_5xx_burst_opens_the_breaker_which_probes_and_closes(
        gateway: Callable[..., Running], fakes: dict[str, FakeUpstreamClient],
        status: int) -> None:
    # open_s long enough that six requests fit in it even on a loaded machine.
    gw = gateway(resilience={"breaker": {"open_s": 2, "max_open_s": 4}})
    fakes["p"].script(default={"error_status": status})
    for _ in range(6):
        assert ask(gw, "pair").parse().choices[0].message.content == ANSWER
    # consecutive_failures=3: three failures opened it, then p was left alone.
    assert calls(fakes["p"]) == 3 and calls(fakes["s"]) == 6
    assert metric(gw, "seawall_circuit_state", deployment="p/pair-p") == 1
    ready = httpx.get(gw.url + "/ready")
    assert ready.status_code == 200  # an open breaker is not an unready process
    assert ready.json()["deployments"]["p/pair-p"]["circuit"] == "open"
    fakes["p"].script(default={})
    time.sleep(2.05)  # open_s: the next request is a half-open probe of p
    assert ask(gw, "pair").headers["x-seawall-deployment"] == "p/pair-p"
    assert metric(gw, "seawall_circuit_state", deployment="p/pair-p") == 0
    for state in ("open", "half_open", "closed"):
        assert metric(gw, "seawall_circuit_transitions_total", deployment="p/pair-p",
                      state=state) == 1
    recs = traces(gw, 7)
    code = "upstream_error"
    assert [outcomes(r) for r in recs[:3]] == [[("p/pair-p", code), ("s/pair-s", "ok")]] * 3
    assert [outcomes(r) for r in recs[3:6]] == [[("s/pair-s", "ok")]] * 3


def test_a_failed_probe_reopens_for_longer(
        gateway: Callable[..., Running], fakes: dict[str, FakeUpstreamClient]) -> None:
    gw = gateway()
    fakes["p"].script(default={"error_status": 503})
    for _ in range(3):
        ask(gw, "pair")
    time.sleep(0.35)
    ask(gw, "pair")  # the probe fails: open again, cool-down doubled (0.6 s)
    assert calls(fakes["p"]) == 4
    time.sleep(0.35)
    ask(gw, "pair")
    assert calls(fakes["p"]) == 4  # still open at 0.35 s of 0.6
    time.sleep(0.3)
    fakes["p"].script(default={})
    assert ask(gw, "pair").headers["x-seawall-deployment"] == "p/pair-p"
    traces(gw, 6)


def test_connection_refused_falls_over_at_once(
        gateway: Callable[..., Running], fakes: dict[str, FakeUpstreamClient]) -> None:
    port = closed_port()
    gw = gateway(providers={"p": {"type": "openai", "base_url": f"http://127.0.0.1:{port}/v1"}})
    t0 = time.monotonic()
    assert ask(gw, "pair").parse().choices[0].message.content == ANSWER
    assert time.monotonic() - t0 < 1
    assert outcomes(traces(gw, 1)[0]) == [("p/pair-p", "upstream_unreachable"),
                                          ("s/pair-s", "ok")]


def test_connect_timeout_has_its_own_code(
        gateway: Callable[..., Running], fakes: dict[str, FakeUpstreamClient]) -> None:
    with blackhole_listener() as (host, port):
        gw = gateway(providers={"p": {"type": "openai", "base_url": f"http://{host}:{port}/v1"}})
        t0 = time.monotonic()
        assert ask(gw, "pair").parse().choices[0].message.content == ANSWER
        took = time.monotonic() - t0
        rec = traces(gw, 1)[0]
    assert 0.25 < took < 1.5  # connect_s = 0.3, then s answers
    assert outcomes(rec) == [("p/pair-p", "upstream_connect_timeout"), ("s/pair-s", "ok")]


@pytest.mark.parametrize("stream", [True, False])
def test_a_hang_with_no_bytes_times_out_and_falls_over(
        gateway: Callable[..., Running], fakes: dict[str, FakeUpstreamClient],
        stream: bool) -> None:
    gw = gateway(resilience={"timeouts": {"total_s": 1}})
    fakes["p"].script(default={"hang": True})
    t0 = time.monotonic()
    if stream:
        status, _, events = sse(gw, "pair")
        assert status == 200 and text_of(events) == ANSWER and events[-1] == "[DONE]"
    else:
        assert ask(gw, "pair").parse().choices[0].message.content == ANSWER
    took = time.monotonic() - t0
    # Streams: first_token_s (0.5); a non-streaming answer comes whole: total_s (1).
    code = "upstream_first_token_timeout" if stream else "upstream_total_timeout"
    assert (0.45 if stream else 0.95) < took < (1.0 if stream else 1.6)
    assert outcomes(traces(gw, 1)[0]) == [("p/pair-p", code), ("s/pair-s", "ok")]
    # The abandoned upstream call was closed, not left running.
    fakes["p"].script(default={})
    assert asyncio.run(fakes["p"].wait_for(lambda c: c["cancelled"] == 1))["cancelled"] == 1


def test_slow_first_token_is_hedged_and_the_loser_cancelled(
        gateway: Callable[..., Running], fakes: dict[str, FakeUpstreamClient]) -> None:
    gw = gateway()
    fakes["p"].script(default={"ttft_s": 0.4})
    t0 = time.monotonic()
    status, headers, events = sse(gw, "hedged")
    took = time.monotonic() - t0
    assert status == 200 and text_of(events) == ANSWER
    assert headers["x-seawall-deployment"] == "s/hedged-s"
    assert took < 0.35  # hedged after 0.1 s instead of waiting 0.4 s
    rec = traces(gw, 1)[0]
    assert sorted(outcomes(rec)) == [("p/hedged-p", "hedge_lost"), ("s/hedged-s", "ok")]
    assert [a.get("hedge", False) for a in rec["attempts"]].count(True) == 1
    c = asyncio.run(fakes["p"].wait_for(lambda c: c["cancelled"] == 1))
    assert c["cancelled"] == 1 and c["completed"] == 0


def test_connection_cut_before_any_content_falls_over_transparently(
        gateway: Callable[..., Running], fakes: dict[str, FakeUpstreamClient]) -> None:
    gw = gateway()
    fakes["p"].script(default={"disconnect_after_chunks": 0})  # after the role chunk only
    status, headers, events = sse(gw, "pair")
    assert status == 200 and text_of(events) == ANSWER and events[-1] == "[DONE]"
    assert headers["x-seawall-attempts"] == "2" and headers["x-seawall-deployment"] == "s/pair-s"
    assert [e for e in events if isinstance(e, dict) and "error" in e] == []
    assert outcomes(traces(gw, 1)[0]) == [("p/pair-p", "upstream_disconnected"),
                                          ("s/pair-s", "ok")]


@pytest.mark.parametrize("stream", [True, False])
def test_malformed_answers_before_content_fall_over(
        gateway: Callable[..., Running], fakes: dict[str, FakeUpstreamClient],
        stream: bool) -> None:
    gw = gateway()
    fakes["p"].script(default={"malformed_after_chunks": 0})
    if stream:
        status, _, events = sse(gw, "pair")
        assert status == 200 and text_of(events) == ANSWER and events[-1] == "[DONE]"
    else:
        assert ask(gw, "pair").parse().choices[0].message.content == ANSWER
    assert outcomes(traces(gw, 1)[0]) == [("p/pair-p", "upstream_bad_response"),
                                          ("s/pair-s", "ok")]


# -- failures after output started: never a silent truncation ------------------


@pytest.mark.parametrize("fault,code", [
    ({"disconnect_after_chunks": 3}, "upstream_disconnected"),
    ({"stall_after_chunks": 3}, "upstream_idle_timeout"),
    ({"malformed_after_chunks": 3}, "upstream_bad_response"),
])
def test_failure_after_content_ends_the_stream_with_an_explicit_error(
        gateway: Callable[..., Running], fakes: dict[str, FakeUpstreamClient],
        fault: dict[str, Any], code: str) -> None:
    gw = gateway()
    fakes["p"].script(default={"text": LONG, **fault})
    status, _, events = sse(gw, "pair")
    assert status == 200  # headers went out with the first token
    assert text_of(events) == "w0 w1 w2"
    assert "[DONE]" not in events  # never looks complete
    cut, err = events[-2], events[-1]
    assert cut["choices"][0]["finish_reason"] == "error"
    assert err["error"]["code"] == code and "cut" in err["error"]["message"]
    # The SDK raises instead of returning a short answer.
    with pytest.raises(openai.APIError):
        for _ in sdk(gw).chat.completions.create(model="pair", messages=[
                {"role": "user", "content": LONG}], stream=True):
            pass
    recs = traces(gw, 2)
    assert recs[0]["status"] == 502 and recs[0]["error_code"] == code
    assert recs[0]["finish_reason"] == "error" and recs[0]["output"] == "w0 w1 w2"
    assert outcomes(recs[0]) == [("p/pair-p", code)]
    assert calls(fakes["s"]) == 0  # a started answer is not silently restarted elsewhere


def test_resume_streams_continues_on_another_deployment(
        gateway: Callable[..., Running], fakes: dict[str, FakeUpstreamClient]) -> None:
    gw = gateway(resilience={"resume_streams": True})
    fakes["p"].script(default={"text": LONG, "disconnect_after_chunks": 3})
    fakes["s"].script(default={"text": " w3 w4"})
    status, _, events = sse(gw, "pair")
    assert status == 200 and events[-1] == "[DONE]"
    assert text_of(events) == "w0 w1 w2 w3 w4"
    assert len({e["id"] for e in events if isinstance(e, dict)}) == 1  # one completion id
    sent = fakes["s"].calls()["requests"][-1]["messages"]
    assert sent[-2] == {"role": "assistant", "content": "w0 w1 w2"}
    assert sent[-1] == {"role": "user", "content": RESUME_PROMPT}
    rec = traces(gw, 1)[0]
    assert rec["status"] == 200 and rec["finish_reason"] == "stop"
    assert outcomes(rec) == [("p/pair-p", "upstream_disconnected"), ("s/pair-s", "ok")]


def test_resumed_stream_keeps_masked_values_from_the_next_upstream(
        gateway: Callable[..., Running], fakes: dict[str, FakeUpstreamClient]) -> None:
    """The partial answer sent back on resumption is the client's (values
    restored): the guardrails put the placeholders back before it goes."""
    gw = gateway(resilience={"resume_streams": True},
                 guardrails={"input": {"email": "mask"}})
    fakes["p"].script(default={"disconnect_after_chunks": 2})  # echoes the masked prompt
    fakes["s"].script(default={"text": " now"})
    prompt = [{"role": "user", "content": "mail ana@example.com now"}]
    status, _, events = sse(gw, "pair", prompt)
    assert status == 200 and text_of(events) == "mail ana@example.com now"
    sent = fakes["s"].calls()["requests"][-1]["messages"]
    assert sent[-2] == {"role": "assistant", "content": "mail <EMAIL_1>"}
    assert "ana@example.com" not in str(sent)


# -- fallbacks, degraded answers, honest errors --------------------------------


def test_fallback_model_after_the_primary_fails(
        gateway: Callable[..., Running], fakes: dict[str, FakeUpstreamClient]) -> None:
    gw = gateway()
    fakes["p"].script(default={"error_status": 502})
    resp = ask(gw, "chain")
    assert resp.parse().choices[0].message.content == ANSWER
    assert resp.headers["x-seawall-deployment"] == "f/backup-f"
    rec = traces(gw, 1)[0]
    assert rec["model"] == "chain" and rec["deployment"] == "f/backup-f"
    assert outcomes(rec) == [("p/chain-p", "upstream_error"), ("f/backup-f", "ok")]


def test_everything_down_gives_rule_then_static_answers_marked_degraded(
        gateway: Callable[..., Running], fakes: dict[str, FakeUpstreamClient]) -> None:
    gw = gateway()
    fakes["p"].script(default={"error_status": 503})
    busy = ask(gw, "kind")
    assert busy.parse().choices[0].message.content == "We are busy; try again in a minute."
    assert busy.headers["x-seawall-degraded"] == "static"
    refund = sdk(gw).chat.completions.with_raw_response.create(
        model="kind", messages=[{"role": "user", "content": "I want a refund"}])
    assert refund.parse().choices[0].message.content == "Refunds: see /help/refunds."
    assert refund.headers["x-seawall-degraded"] == "rule"
    status, headers, events = sse(gw, "kind")
    assert status == 200 and headers["x-seawall-degraded"] == "static"
    assert text_of(events) == "We are busy; try again in a minute." and events[-1] == "[DONE]"
    recs = traces(gw, 3)
    assert [r["degraded"] for r in recs] == ["static", "rule", "static"]
    assert metric(gw, "seawall_degraded_total", model="kind", mode="static") == 2


def test_everything_down_without_degraded_answer_is_a_structured_503(
        gateway: Callable[..., Running], fakes: dict[str, FakeUpstreamClient]) -> None:
    gw = gateway()
    fakes["p"].script(default={"error_status": 503})
    fakes["s"].script(default={"hang": True})
    with pytest.raises(openai.APIStatusError) as e:
        sdk(gw).chat.completions.create(model="pair", messages=MSG, stream=True)
    err = e.value
    assert err.status_code == 503 and err.response.headers["retry-after"]
    body: Any = err.body
    assert body["code"] == "all_deployments_failed"
    assert "p/pair-p: upstream_error" in body["message"]
    assert "s/pair-s: upstream_first_token_timeout" in body["message"]
    # max_attempts = 3: p, s, then p again after backoff.
    assert calls(fakes["p"]) == 2 and calls(fakes["s"]) == 1
    rec = traces(gw, 1)[0]
    assert rec["status"] == 503 and len(rec["attempts"]) == 3


def test_single_deployment_retries_with_backoff_then_succeeds(
        gateway: Callable[..., Running], fakes: dict[str, FakeUpstreamClient]) -> None:
    gw = gateway()
    fakes["p"].script(queue=[{"error_status": 503}, {"error_status": 500}])
    assert ask(gw, "solo").parse().choices[0].message.content == ANSWER
    assert calls(fakes["p"]) == 3
    assert outcomes(traces(gw, 1)[0]) == [("p/solo-p", "upstream_error")] * 2 + [
        ("p/solo-p", "ok")]


def test_a_client_error_is_returned_at_once_and_never_retried(
        gateway: Callable[..., Running], fakes: dict[str, FakeUpstreamClient]) -> None:
    gw = gateway()
    fakes["p"].script(default={"error_status": 400})
    with pytest.raises(openai.BadRequestError):
        ask(gw, "pair")
    assert calls(fakes["p"]) == 1 and calls(fakes["s"]) == 0
    assert metric(gw, "seawall_circuit_state", deployment="p/pair-p") == 0
    traces(gw, 1)


def test_outage_causes_no_retry_storm(
        gateway: Callable[..., Running], fakes: dict[str, FakeUpstreamClient]) -> None:
    gw = gateway()
    for f in (fakes["p"], fakes["s"]):
        f.script(default={"error_status": 503})

    async def burst(n: int) -> list[int]:
        async with httpx.AsyncClient(timeout=10) as h:
            rs = await asyncio.gather(*(h.post(gw.url + "/v1/chat/completions", json={
                "model": "pair", "messages": MSG}) for _ in range(n)))
        return [r.status_code for r in rs]

    first = asyncio.run(burst(30))
    # 502 upstream_error when every attempt failed alike; 503 once both breakers are open.
    assert set(first) <= {502, 503}
    upstream_calls = calls(fakes["p"]) + calls(fakes["s"])
    assert upstream_calls <= 30 * 3
    # Both breakers are open now: the next burst fails fast without one upstream call.
    t0 = time.monotonic()
    second = asyncio.run(burst(30))
    assert set(second) == {503} and time.monotonic() - t0 < 2
    assert calls(fakes["p"]) + calls(fakes["s"]) == upstream_calls
    recs = traces(gw, 60)
    assert {r["error_code"] for r in recs[30:]} == {"no_healthy_deployment"}


def test_retry_budget_caps_retries_process_wide(
        gateway: Callable[..., Running], fakes: dict[str, FakeUpstreamClient]) -> None:
    gw = gateway(resilience={"retries": {"budget_ratio": 0.5, "budget_min_per_s": 0.1,
                                         "budget_window_s": 10},
                             "breaker": {"consecutive_failures": 1000}})
    fakes["p"].script(default={"error_status": 503})
    fakes["s"].script(default={"error_status": 503})
    for _ in range(10):
        with pytest.raises(openai.APIStatusError):
            ask(gw, "pair")
    # Budget over 10 s: 0.5 x 10 requests + 0.1/s x 10 s = 6 retries, not 10 x 2.
    total = calls(fakes["p"]) + calls(fakes["s"])
    assert total == 10 + 6
    assert metric(gw, "seawall_retry_budget_refused_total") >= 4
    traces(gw, 10)


def test_flapping_deployment_is_contained_by_the_error_rate(
        gateway: Callable[..., Running], fakes: dict[str, FakeUpstreamClient]) -> None:
    gw = gateway(resilience={"breaker": {"error_rate": 0.5, "min_requests": 6,
                                         "window_s": 10, "open_s": 0.2}})
    fakes["p"].script(queue=[{"error_status": 503}, {}] * 30)  # fails every other call
    statuses = []
    for _ in range(24):
        statuses.append(ask(gw, "pair").http_response.status_code)
        time.sleep(0.02)
    assert statuses == [200] * 24  # the client never noticed
    p_calls = calls(fakes["p"])
    p_failed = fakes["p"].calls()["failed"]
    assert calls(fakes["s"]) == 24 - (p_calls - p_failed)  # s served exactly p's misses
    assert p_calls < 24  # the breaker kept some traffic off the flapping deployment
    assert metric(gw, "seawall_circuit_transitions_total", deployment="p/pair-p",
                  state="open") >= 1
    traces(gw, 24)


def test_concurrency_cap_spills_over_to_the_other_deployment(
        gateway: Callable[..., Running], fakes: dict[str, FakeUpstreamClient]) -> None:
    gw = gateway()
    fakes["p"].script(default={"ttft_s": 0.3})

    async def two() -> list[str]:
        async with httpx.AsyncClient(timeout=10) as h:
            first = asyncio.create_task(h.post(gw.url + "/v1/chat/completions", json={
                "model": "capped", "messages": MSG}))
            await asyncio.sleep(0.1)
            second = await h.post(gw.url + "/v1/chat/completions",
                                  json={"model": "capped", "messages": MSG})
            return [(await first).headers["x-seawall-deployment"],
                    second.headers["x-seawall-deployment"]]

    assert asyncio.run(two()) == ["p/capped-p", "s/capped-s"]
    traces(gw, 2)


# -- admission control ---------------------------------------------------------


def test_admission_refuses_beyond_the_in_flight_cap_at_once(
        gateway: Callable[..., Running], fakes: dict[str, FakeUpstreamClient]) -> None:
    gw = gateway(admission={"max_inflight": 2})
    fakes["p"].script(default={"ttft_s": 0.5})

    async def three() -> list[httpx.Response]:
        async with httpx.AsyncClient(timeout=10) as h:
            slow = [asyncio.create_task(h.post(gw.url + "/v1/chat/completions", json={
                "model": "solo", "messages": MSG})) for _ in range(2)]
            await asyncio.sleep(0.15)
            t0 = time.monotonic()
            third = await h.post(gw.url + "/v1/chat/completions",
                                 json={"model": "solo", "messages": MSG})
            assert time.monotonic() - t0 < 0.2  # refused at once, not queued
            return [*(await asyncio.gather(*slow)), third]

    a, b, c = asyncio.run(three())
    assert (a.status_code, b.status_code, c.status_code) == (200, 200, 429)
    assert c.json()["error"]["code"] == "gateway_overloaded" and c.headers["retry-after"]
    assert calls(fakes["p"]) == 2
    assert metric(gw, "seawall_rate_limited_total", limit="inflight") == 1
    assert sorted(r["status"] for r in traces(gw, 3)) == [200, 200, 429]


def test_admission_queue_serves_higher_priority_keys_first(
        gateway: Callable[..., Running], fakes: dict[str, FakeUpstreamClient]) -> None:
    from seawall.pipeline.stages import hash_key
    from seawall.store.base import ApiKey

    gw = gateway(admission={"max_inflight": 1, "queue_size": 4, "queue_timeout_s": 5})
    for name, prio in (("low", 50), ("high", 1)):
        gw.on_server(gw.services.store.create_key(ApiKey(
            id=name, name=name, tenant=name, key_hash=hash_key(f"sk-sw-{name}"),
            prefix=name, rpm=None, created_at=0.0, priority=prio)))
    fakes["p"].script(queue=[{"ttft_s": 0.3}])

    async def run() -> list[str]:
        order: list[str] = []
        async with httpx.AsyncClient(timeout=10) as h:
            async def go(key: str, delay: float) -> None:
                await asyncio.sleep(delay)
                r = await h.post(gw.url + "/v1/chat/completions",
                                 headers={"authorization": f"Bearer sk-sw-{key}"},
                                 json={"model": "solo", "messages": [
                                     {"role": "user", "content": key}]})
                assert r.status_code == 200
                order.append(key)
            await asyncio.gather(go("low", 0), go("low", 0.1), go("high", 0.15))
        return order

    order = asyncio.run(run())
    sent = [r["messages"][0]["content"] for r in fakes["p"].calls()["requests"]]
    assert sent == ["low", "high", "low"]  # the later high-priority request jumped the queue
    assert len(order) == 3
    traces(gw, 3)


def test_per_tenant_cap_refuses_only_that_tenant(
        gateway: Callable[..., Running], fakes: dict[str, FakeUpstreamClient]) -> None:
    gw = gateway(admission={"max_inflight_per_tenant": 1})
    fakes["p"].script(default={"ttft_s": 0.4})

    async def run() -> tuple[int, int]:
        async with httpx.AsyncClient(timeout=10) as h:
            slow = asyncio.create_task(h.post(gw.url + "/v1/chat/completions", json={
                "model": "solo", "messages": MSG}))
            await asyncio.sleep(0.1)
            again = await h.post(gw.url + "/v1/chat/completions",
                                 json={"model": "solo", "messages": MSG})
            return (await slow).status_code, again.status_code

    assert asyncio.run(run()) == (200, 429)
    traces(gw, 2)


def test_draining_turns_ready_503_and_refuses_new_work(
        gateway: Callable[..., Running], fakes: dict[str, FakeUpstreamClient]) -> None:
    gw = gateway()
    assert httpx.get(gw.url + "/ready").status_code == 200
    gw.services.begin_drain()  # what SIGTERM does first (tests/chaos/test_shutdown.py)
    ready = httpx.get(gw.url + "/ready")
    assert ready.status_code == 503 and ready.json()["status"] == "draining"
    with pytest.raises(openai.APIStatusError) as e:
        ask(gw, "pair")
    assert e.value.status_code == 503 and e.value.body["code"] == "shutting_down"  # type: ignore[index]
    assert calls(fakes["p"]) == 0
    traces(gw, 1)


def test_embeddings_fall_over_too(gateway: Callable[..., Running],
                                  fakes: dict[str, FakeUpstreamClient]) -> None:
    gw = gateway(resilience={"timeouts": {"total_s": 0.5}})
    fakes["p"].script(default={"hang": True})
    t0 = time.monotonic()
    resp = sdk(gw).embeddings.with_raw_response.create(model="emb", input=["a", "b"])
    assert len(resp.parse().data) == 2 and resp.headers["x-seawall-deployment"] == "s/emb-s"
    assert 0.45 < time.monotonic() - t0 < 1.2
    recs = [r for r in gw.traces(10) if r["endpoint"] == "embeddings"]
    assert len(recs) == 1 and [(a["deployment"], a["outcome"]) for a in orjson.loads(
        recs[0]["attempts"])] == [("p/emb-p", "upstream_total_timeout"), ("s/emb-s", "ok")]


def test_long_successes_count_at_their_first_token_not_at_their_end(
        gateway: Callable[..., Running], fakes: dict[str, FakeUpstreamClient]) -> None:
    """Fast failures must not overtake slow successes still streaming and look
    like "3 failures in a row" (found by bench/replay.py)."""
    import threading

    gw = gateway()
    slow = {"text": LONG, "tokens_per_s": 10}  # 12 words: about 1.1 s of streaming
    fakes["p"].script(queue=[slow, {"error_status": 503}, {"error_status": 503},
                             slow, {"error_status": 503}, {"error_status": 503}])
    streams = []

    def stream_in_background() -> None:
        t = threading.Thread(target=sse, args=(gw, "pair"))
        t.start()
        streams.append(t)
        deadline = time.monotonic() + 3
        while calls(fakes["p"]) < 1 + 3 * (len(streams) - 1) and time.monotonic() < deadline:
            time.sleep(0.01)
        time.sleep(0.15)  # its first token is out

    stream_in_background()
    ask(gw, "pair")
    ask(gw, "pair")
    stream_in_background()
    ask(gw, "pair")
    ask(gw, "pair")
    # Verdicts in first-token order: ok, fail, fail, ok, fail, fail: never 3 in a row.
    assert metric(gw, "seawall_circuit_state", deployment="p/pair-p") == 0
    assert calls(fakes["p"]) == 6
    for t in streams:
        t.join(5)
    traces(gw, 6)


@pytest.mark.parametrize("fault,code", [
    ({"hang": True}, "upstream_first_token_timeout"),
    ({"error_status": 529}, "upstream_error"),
    ({"disconnect_after_chunks": 0}, "upstream_disconnected"),
])
def test_an_anthropic_deployment_falls_over_to_an_openai_one(
        gateway: Callable[..., Running], fakes: dict[str, FakeUpstreamClient],
        fault: dict[str, Any], code: str) -> None:
    gw = gateway()
    fakes["p"].script(default=fault)
    status, headers, events = sse(gw, "claude-pair")
    assert status == 200 and text_of(events) == ANSWER and events[-1] == "[DONE]"
    assert headers["x-seawall-deployment"] == "s/claude-s"
    assert fakes["p"].calls()["paths"][-1] == "/v1/messages"
    assert outcomes(traces(gw, 1)[0]) == [("pa/claude-p", code), ("s/claude-s", "ok")]


def test_an_upstream_404_is_a_deployment_problem_not_the_clients(
        gateway: Callable[..., Running], fakes: dict[str, FakeUpstreamClient]) -> None:
    gw = gateway()
    fakes["p"].script(default={"error_status": 404})
    assert ask(gw, "pair").headers["x-seawall-deployment"] == "s/pair-s"
    assert outcomes(traces(gw, 1)[0]) == [("p/pair-p", "upstream_not_found"), ("s/pair-s", "ok")]


def test_embeddings_connect_timeout_is_the_deployments(
        gateway: Callable[..., Running], fakes: dict[str, FakeUpstreamClient]) -> None:
    with blackhole_listener() as (host, port):
        gw = gateway(providers={"p": {"type": "openai", "base_url": f"http://{host}:{port}/v1"}})
        t0 = time.monotonic()
        resp = sdk(gw).embeddings.with_raw_response.create(model="emb", input=["a"])
        took = time.monotonic() - t0
    assert resp.headers["x-seawall-deployment"] == "s/emb-s"
    assert 0.25 < took < 1.5  # connect_s = 0.3, not the provider default of 10 s
    rec = [r for r in gw.traces(10) if r["endpoint"] == "embeddings"][0]
    assert [a["outcome"] for a in orjson.loads(rec["attempts"])] == [
        "upstream_connect_timeout", "ok"]
