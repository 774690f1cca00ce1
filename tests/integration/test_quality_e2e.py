"""The quality loop end to end, nothing injected: a canary's model starts
answering badly, the judge (a job, in the background) scores its answers low,
the judged-quality SLO burns and alerts a webhook with the worst answers as
evidence, and the canary is rolled back to the baseline.

The judge is the in-process fake model echoing its prompt, so its verdict is
the grade each answer carries (``{"score": n, ...}`` at its end): a scripted
judge that scores what it reads, through the real judge path (sampling, job
queue, judge call, verdict parsing, score store, quality loop, SLO evaluator).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from tests.gateway import Running, run_gateway
from tests.servers import FakeUpstreamClient, WebhookReceiver, start_fake_upstream

MASTER = "sk-master-quality-e2e"
GOOD = 'Paris is the capital of France. {"score": 5, "reasoning": "right"}'
BAD = 'I am not sure. {"score": 1, "reasoning": "wrong"}'


@pytest.fixture
def canary_upstream() -> Iterator[FakeUpstreamClient]:
    url, stop = start_fake_upstream(seed=7)
    try:
        yield FakeUpstreamClient(url)
    finally:
        stop()


def _config(base: str, canary: str, hook: str) -> dict[str, Any]:
    return {
        "auth": {"master_key": MASTER, "allow_anonymous_loopback": False},
        "observe": {"traces": {"flush_interval_s": 0.01}},
        "providers": {"good": {"type": "openai", "base_url": base + "/v1"},
                      "next": {"type": "openai", "base_url": canary + "/v1"},
                      "grader": {"type": "fake"}},  # echoes its prompt (see above)
        "models": {"chat": {"provider": "good", "model": "fake-a"},
                   "candidate": {"provider": "next", "model": "fake-new"},
                   "judge": {"provider": "grader"}},
        "experiments": {"rollout": {
            "model": "chat", "kind": "canary", "sticky": "request",
            "canary": {"steps": [50, 100], "min_requests": 1000, "min_judged": 8,
                       "max_quality_drop": 0.2},
            "variants": [{"name": "stable"}, {"name": "next", "model": "candidate"}]}},
        "jobs": {"poll_s": 0.05, "backoff_s": 0.05},
        "quality": {
            "interval_s": 0.2,
            "drift": {"enabled": False},
            "judges": [{"name": "grader", "match": {"experiments": ["rollout"]},
                        "judge_model": "judge", "rubrics": ["helpfulness"],
                        "sample_rate": 1.0}],
            # 0.98: the canary may roll back after its third bad answer (a quality
            # drop of 0.2 over ~13 judged); 2 bad in the 50 judged must already page.
            "slos": [{"name": "judged", "kind": "judge", "objective": 0.98, "period_s": 3600,
                      "threshold": 4,
                      "alerts": [{"severity": "page", "long_s": 300, "short_s": 60,
                                  "burn_rate": 2.0}]}]},
        "alerts": {"backoff_s": 0.05, "webhooks": [{"url": hook + "/generic",
                                                    "format": "generic"}]},
    }


def _wait(what: str, check: Callable[[], Any], until: Callable[[Any], bool] = bool,
          within_s: float = 60) -> Any:
    """``check()`` once ``until`` holds of it."""
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        got = check()
        if until(got):
            return got
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def _ask(gw: Running, n: int, start: int) -> list[str]:
    client = openai.OpenAI(base_url=gw.url + "/v1", api_key=MASTER, max_retries=0, timeout=30)
    ids = []
    for i in range(start, start + n):
        raw = client.chat.completions.with_raw_response.create(
            model="chat", messages=[{"role": "user", "content": f"question {i}: capital?"}])
        ids.append(raw.headers["x-request-id"])
    return ids


def _scores(gw: Running, ids: list[str]) -> dict[str, dict[str, Any]]:
    out = {}
    for rid in ids:
        r = httpx.get(f"{gw.url}/admin/traces/{rid}", timeout=10,
                      headers={"authorization": f"Bearer {MASTER}"})
        if r.status_code == 200 and r.json().get("scores"):
            out[rid] = r.json()["scores"][0] | {"experiment": r.json()["experiment"]}
    return out


def _status(gw: Running) -> dict[str, Any]:
    gw.on_server(gw.services.experiments.settle())
    state: dict[str, Any] = gw.services.experiments.status()[0]
    return state


def test_a_degrading_canary_is_judged_alerted_and_rolled_back(
        upstream: FakeUpstreamClient, canary_upstream: FakeUpstreamClient,
        tmp_path: Path) -> None:
    upstream.script(default={"text": GOOD})
    canary_upstream.script(default={"text": GOOD})
    with WebhookReceiver() as hook, run_gateway(
            _config(upstream.base_url, canary_upstream.base_url, hook.url), tmp_path) as gw:
        # Healthy: both arms answer well, every answer is judged 5/5.
        healthy = _ask(gw, 20, 0)
        scored = _wait("20 judged answers", lambda: _scores(gw, healthy),
                       lambda s: len(s) == 20)
        assert {s["score"] for s in scored.values()} == {5.0}
        assert {s["experiment"] for s in scored.values()} == {"rollout=stable", "rollout=next"}
        assert _status(gw)["status"] == "running"
        assert hook.alerts("/generic") == []

        # The candidate model starts answering badly.
        canary_upstream.script(default={"text": BAD})
        degraded = _ask(gw, 30, 20)
        scored = _wait("30 more judged answers", lambda: _scores(gw, degraded),
                       lambda s: len(s) == 30)
        bad = {rid for rid, s in scored.items() if s["score"] == 1.0}
        assert bad and all(scored[rid]["experiment"] == "rollout=next" for rid in bad)

        state = _wait("the canary rolled back", lambda: _status(gw),
                      lambda s: s["status"] == "rolled_back")
        assert "judged quality" in state["reason"], state["reason"]
        alert = _wait("the SLO page", lambda: [
            b["alert"] for b in hook.alerts("/generic")
            if b["alert"]["key"] == "slo:judged:page" and b["alert"]["status"] == "firing"])[0]
        assert alert["source"] == "slo"
        evidence = {e["trace_id"] for e in alert["evidence"]}
        assert evidence and evidence <= bad  # the worst answers, by id

        # Every request now goes to the baseline, and is judged well again.
        after = _ask(gw, 6, 50)
        records = {r["trace_id"]: r for r in gw.traces(100)}
        assert {records[rid]["experiment"] for rid in after} == {"rollout=stable"}
