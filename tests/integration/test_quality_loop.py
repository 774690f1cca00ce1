"""The quality loop closed, through a real gateway: the official openai SDK
in front, the fake upstream behind, httpx for feedback and admin calls.

* A thumbs-down on a cached answer (or a failing judge score) quarantines it:
  the next identical request goes upstream and its record says why, on
  SQLite and on Postgres shared by two gateways.
* A canary whose answers are judged or rated worse than the baseline's is
  rolled back, with the reason and figures in its history.
* The hostile-tenant attack of issue 17 (chosen ``user`` values, long
  prompts) no longer rolls a healthy canary back.
"""

from __future__ import annotations

import re
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
import yaml
from click.testing import CliRunner

from seawall.cli import main as seawall_cli
from seawall.experiments.assign import draw, pick
from seawall.pipeline.stages import hash_key
from seawall.quality.score_store import Score
from seawall.store.base import ApiKey
from tests.gateway import Running, run_gateway
from tests.servers import FakeUpstreamClient

pytestmark = pytest.mark.timeout(180)

MASTER = "sk-master-quality-loop"
QUESTION = "How do I reset my password?"


def _config(upstream: FakeUpstreamClient, **extra: Any) -> dict[str, Any]:
    return {
        "auth": {"master_key": MASTER, "allow_anonymous_loopback": False},
        "observe": {"traces": {"flush_interval_s": 0.01}},
        "cache": {"enabled": True},
        "providers": {"oa": {"type": "openai", "base_url": upstream.base_url + "/v1"}},
        "models": {"gpt-x": {"provider": "oa", "model": "upstream-gpt"}},
        **extra,
    }


def _secret(gw: Running, tenant: str) -> str:
    secret = "sk-sw-" + uuid.uuid4().hex
    gw.on_server(gw.services.store.create_key(ApiKey(
        id="key_" + uuid.uuid4().hex[:8], name=tenant, tenant=tenant,
        key_hash=hash_key(secret), prefix=secret[:10], rpm=None, created_at=time.time())))
    return secret


def _ask(gw: Running, secret: str, text: str = QUESTION, model: str = "gpt-x",
         **kw: Any) -> Any:
    client = openai.OpenAI(base_url=gw.url + "/v1", api_key=secret, max_retries=0, timeout=30)
    raw = client.chat.completions.with_raw_response.create(
        model=model, messages=[{"role": "user", "content": text}], **kw)
    gw.on_server(gw.services.cache.settle())  # the answer stored before the next step
    return raw


def _rate(gw: Running, secret: str, request_id: str, score: float) -> None:
    r = httpx.post(gw.url + "/v1/feedback", json={"request_id": request_id, "score": score},
                   headers={"authorization": f"Bearer {secret}"}, timeout=30)
    assert r.status_code == 200, r.text
    gw.on_server(gw.services.quality_loop.settle())


def _record(gw: Running, request_id: str) -> dict[str, Any]:
    r = httpx.get(f"{gw.url}/admin/traces/{request_id}",
                  headers={"authorization": f"Bearer {MASTER}"}, timeout=30)
    assert r.status_code == 200, r.text
    return r.json()  # type: ignore[no-any-return]


def _metric(gw: Running, name: str, labels: str) -> float:
    text = httpx.get(gw.url + "/metrics", headers={"authorization": f"Bearer {MASTER}"},
                     timeout=30).text
    m = re.search(rf"^{name}{{{labels}}} (\S+)$", text, re.M)
    return float(m.group(1)) if m else 0.0


def _flush(gw: Running) -> None:
    gw.on_server(gw.services.writer.flush())


# -- cache quarantine --

def test_thumbs_down_on_a_cached_answer_quarantines_it(upstream: FakeUpstreamClient,
                                                       tmp_path: Path) -> None:
    upstream.script(default={})
    with run_gateway(_config(upstream), tmp_path) as gw:
        acme, other = _secret(gw, "acme"), _secret(gw, "other")
        first = _ask(gw, acme)
        assert first.headers["x-seawall-cache"] == "miss"
        hit = _ask(gw, acme)
        assert hit.headers["x-seawall-cache"] == "hit"
        assert _ask(gw, other).headers["x-seawall-cache"] == "miss"  # its own entry
        _flush(gw)
        entry = _record(gw, hit.headers["x-request-id"])["cache_entry"]
        _rate(gw, acme, first.headers["x-request-id"], 1)  # a thumbs-up changes nothing
        assert _ask(gw, acme).headers["x-seawall-cache"] == "hit"
        # A thumbs-down on the answer that was stored (a miss): no longer served.
        _rate(gw, acme, first.headers["x-request-id"], -1)
        calls = len(upstream.calls()["requests"])
        again = _ask(gw, acme)
        assert again.headers["x-seawall-cache"] == "quarantined"
        assert len(upstream.calls()["requests"]) == calls + 1  # asked upstream instead
        _flush(gw)
        rec = _record(gw, again.headers["x-request-id"])
        assert rec["cache"] == "quarantined" and rec["cache_entry"] == entry
        assert rec["cache_guard"] == "quarantined: feedback -1"
        # Its fresh answer does not replace the rejected one: still quarantined.
        assert _ask(gw, acme).headers["x-seawall-cache"] == "quarantined"
        assert _ask(gw, other).headers["x-seawall-cache"] == "hit"  # another tenant's entry
        assert _metric(gw, "seawall_cache_quarantined_total", 'reason="feedback"') == 1
        assert _metric(gw, "seawall_cache_requests_total",
                       'model="gpt-x",result="quarantined"') == 2
        # The operator releases it: served again.
        url = f"{gw.url}/admin/cache/entries/{entry}/release"
        assert httpx.post(url, headers={"authorization": f"Bearer {acme}"},
                          timeout=30).status_code == 403  # not for tenants' keys
        r = httpx.post(url, headers={"authorization": f"Bearer {MASTER}"}, timeout=30)
        assert r.status_code == 200 and r.json() == {"entry": entry, "released": True}
        assert httpx.post(url, headers={"authorization": f"Bearer {MASTER}"},
                          timeout=30).status_code == 404  # no longer quarantined
        assert _ask(gw, acme).headers["x-seawall-cache"] == "hit"
        # A thumbs-down on a hit quarantines the entry it was served from.
        hit = _ask(gw, acme)
        _rate(gw, acme, hit.headers["x-request-id"], -1)
        assert _ask(gw, acme).headers["x-seawall-cache"] == "quarantined"


def test_a_near_question_is_not_served_a_quarantined_answer(upstream: FakeUpstreamClient,
                                                            tmp_path: Path) -> None:
    upstream.script(default={})
    config = _config(upstream, cache={"enabled": True, "semantic": {"threshold": 0.8}})
    with run_gateway(config, tmp_path) as gw:
        key = _secret(gw, "acme")
        first = _ask(gw, key)
        assert _ask(gw, key, "how can I reset my password").headers[
            "x-seawall-cache"] == "semantic-hit"
        _rate(gw, key, first.headers["x-request-id"], -1)
        near = _ask(gw, key, "how could I reset my password")
        assert near.headers["x-seawall-cache"] == "quarantined"


def test_a_failing_judge_score_quarantines(upstream: FakeUpstreamClient,
                                           tmp_path: Path) -> None:
    """The judges call ``on_score`` after storing a score (here: called as they do)."""
    upstream.script(default={})
    with run_gateway(_config(upstream), tmp_path) as gw:
        key = _secret(gw, "acme")
        good, bad = _ask(gw, key, "what is two plus two"), _ask(gw, key)
        _flush(gw)
        loop = gw.services.quality_loop

        def score(request_id: str, value: float, tenant: str = "acme") -> list[int]:
            s = Score(trace_id=request_id, judge="helpful", rubric="helpfulness",
                      tenant=tenant, model="gpt-x", score=value, scale_max=5.0)
            return gw.on_server(loop.on_score(s))

        assert score(good.headers["x-request-id"], 4) == []  # 0.8: passes
        assert score(bad.headers["x-request-id"], 2, tenant="other") == []  # not its answer
        assert len(score(bad.headers["x-request-id"], 2)) == 1  # 0.4 < cache_min_score 0.5
        assert _ask(gw, key, "what is two plus two").headers["x-seawall-cache"] == "hit"
        again = _ask(gw, key)
        assert again.headers["x-seawall-cache"] == "quarantined"
        _flush(gw)
        assert _record(gw, again.headers["x-request-id"])["cache_guard"] == \
            "quarantined: judge helpful/helpfulness 2/5"
        assert _metric(gw, "seawall_cache_quarantined_total", 'reason="judge"') == 1
        # The operator releases it with the CLI (beside the running server).
        entry = _record(gw, again.headers["x-request-id"])["cache_entry"]
        path = tmp_path / "seawall.yaml"
        path.write_text(yaml.safe_dump({**_config(upstream), "data_dir": str(tmp_path / "data")}))
        cli = CliRunner()
        result = cli.invoke(seawall_cli, ["cache", "release", str(entry), "-c", str(path)])
        assert result.exit_code == 0 and f"released entry {entry}" in result.output, result.output
        result = cli.invoke(seawall_cli, ["cache", "release", str(entry), "-c", str(path)])
        assert result.exit_code != 0 and f"no quarantined entry {entry}" in result.output
        assert _ask(gw, key).headers["x-seawall-cache"] == "hit"


def test_quarantine_on_postgres_is_seen_by_another_gateway(
        upstream: FakeUpstreamClient, pg_url: str, tmp_path: Path) -> None:
    upstream.script(default={})
    config = _config(upstream, store={"kind": "postgres", "url": pg_url})
    with run_gateway(config, tmp_path / "one") as one, \
            run_gateway(config, tmp_path / "two") as two:
        key = _secret(one, "acme")
        first = _ask(one, key)
        assert _ask(two, key).headers["x-seawall-cache"] == "hit"
        _rate(one, key, first.headers["x-request-id"], -1)
        assert _ask(two, key).headers["x-seawall-cache"] == "quarantined"


# -- canary rollback on quality --

def _canary(upstream: FakeUpstreamClient, flaky: FakeUpstreamClient,
            **canary: Any) -> dict[str, Any]:
    return {
        "auth": {"master_key": MASTER, "allow_anonymous_loopback": False},
        "observe": {"traces": {"flush_interval_s": 0.01}},
        "providers": {"good": {"type": "openai", "base_url": upstream.base_url + "/v1"},
                      "next": {"type": "openai", "base_url": flaky.base_url + "/v1"}},
        "models": {"chat": {"provider": "good", "model": "fake-a"},
                   "candidate": {"provider": "next", "model": "fake-new"}},
        "experiments": {"rollout": {
            "model": "chat", "kind": "canary", "sticky": "request",
            "canary": {"steps": [50, 100], "min_requests": 1000, **canary},
            "variants": [{"name": "stable"}, {"name": "next", "model": "candidate"}]}},
    }


@pytest.fixture
def flaky() -> Any:
    from tests.servers import start_fake_upstream

    url, stop = start_fake_upstream(seed=11)
    try:
        yield FakeUpstreamClient(url)
    finally:
        stop()


def _answers(gw: Running, secret: str, n: int) -> list[tuple[str, str, str]]:
    """(request id, arm, answer) of ``n`` requests (the arm from the record)."""
    out = []
    for i in range(n):
        raw = _ask(gw, secret, f"question {i}: what is the capital of France?", model="chat")
        out.append((raw.headers["x-request-id"], raw.parse().choices[0].message.content))
    records = {r["trace_id"]: r for r in gw.traces(n + 10)}
    return [(rid, records[rid]["experiment"], text) for rid, text in out]


def test_a_canary_judged_worse_than_the_baseline_is_rolled_back(
        upstream: FakeUpstreamClient, flaky: FakeUpstreamClient, tmp_path: Path) -> None:
    upstream.script(default={"text": "Paris is the capital of France."})
    flaky.script(default={"text": "I am not sure."})  # the candidate got worse
    config = _canary(upstream, flaky, min_judged=8, max_quality_drop=0.2)
    with run_gateway(config, tmp_path) as gw:
        key = _secret(gw, "acme")
        answers = _answers(gw, key, 40)
        assert {arm for _, arm, _ in answers} == {"rollout=stable", "rollout=next"}
        loop = gw.services.quality_loop
        for rid, arm, text in answers:  # the judge: correct answers score 5/5, others 1/5
            gw.on_server(loop.on_score(Score(
                trace_id=rid, judge="j", rubric="correctness", tenant="acme", model="chat",
                score=5.0 if "Paris" in text else 1.0, experiment=arm)))
        gw.on_server(gw.services.experiments.settle())
        state = gw.services.experiments.status()[0]
        assert state["status"] == "rolled_back", state
        assert "judged quality 0.20 against the baseline's 1.00" in state["reason"]
        last = state["history"][-1]
        assert last["candidate"]["mean_score"] == 0.2 and last["baseline"]["mean_score"] == 1.0
        assert last["candidate"]["requests"] < 1000  # quality decided, not the request count
        # Every request now goes to the baseline.
        arms = {arm for _, arm, _ in _answers(gw, key, 10)}
        assert arms == {"rollout=stable"}


def test_a_canary_with_more_thumbs_down_is_rolled_back(
        upstream: FakeUpstreamClient, flaky: FakeUpstreamClient, tmp_path: Path) -> None:
    upstream.script(default={"text": "Paris is the capital of France."})
    flaky.script(default={"text": "I am not sure."})
    config = _canary(upstream, flaky, min_judged=0, min_rated=8,
                     max_negative_rate_increase=0.2)
    with run_gateway(config, tmp_path) as gw:
        key = _secret(gw, "acme")
        for rid, _, text in _answers(gw, key, 40):  # users rate through the API
            r = httpx.post(gw.url + "/v1/feedback", headers={"authorization": f"Bearer {key}"},
                           json={"request_id": rid, "score": 1 if "Paris" in text else -1},
                           timeout=30)
            assert r.status_code == 200
        gw.on_server(gw.services.quality_loop.settle())
        gw.on_server(gw.services.experiments.settle())
        state = gw.services.experiments.status()[0]
        assert state["status"] == "rolled_back", state
        assert state["reason"].startswith("thumbs-down rate 100.0% against the baseline's 0.0%")


# -- the steering attack (issue 17) --

LONG = " ".join(["word"] * 600)  # 0.3 s of prefill on the scripted upstream


def _steer_config(upstream: FakeUpstreamClient) -> dict[str, Any]:
    return {
        "auth": {"master_key": MASTER, "allow_anonymous_loopback": False},
        "observe": {"traces": {"flush_interval_s": 0.01}},
        "providers": {"up": {"type": "openai", "base_url": upstream.base_url + "/v1"}},
        # Two deployments of one model: the candidate is exactly as fast as the baseline.
        "models": {"chat": {"deployments": [{"provider": "up", "model": "fake-a"},
                                            {"provider": "up", "model": "fake-b"}]}},
        "experiments": {"rollout": {
            "model": "chat", "kind": "canary",
            "canary": {"steps": [50, 100], "min_requests": 60, "max_p95_ratio": 3},
            "variants": [{"name": "stable", "deployment": "up/fake-a"},
                         {"name": "next", "deployment": "up/fake-b"}]}},
    }


def _chat(gw: Running, secret: str, user: str, text: str = "hi") -> httpx.Response:
    r = httpx.post(gw.url + "/v1/chat/completions", timeout=30,
                   headers={"authorization": f"Bearer {secret}"},
                   json={"model": "chat", "user": user,
                         "messages": [{"role": "user", "content": text}]})
    assert r.status_code == 200, r.text
    return r


def test_users_chosen_offline_land_in_both_arms(upstream: FakeUpstreamClient,
                                               tmp_path: Path) -> None:
    """The attack's first step: pick ``user`` values that hash into the
    candidate. With the secret salt they land in either arm alike, and the
    arm is not named to a tenant."""
    upstream.script(default={"text": "ok"})
    config = _steer_config(upstream)
    config["experiments"]["rollout"]["canary"]["min_requests"] = 1000
    with run_gateway(config, tmp_path) as gw:
        mallory = _secret(gw, "mallory")
        chosen = [u for u in (f"m{i}" for i in range(200))
                  if pick([50, 50], draw("rollout", u)) == 1][:25]
        served = []
        for user in chosen:
            r = _chat(gw, mallory, user)
            assert "x-seawall-experiment" not in r.headers  # for operators only
            served.append(r.headers["x-seawall-deployment"])
        assert 2 <= served.count("up/fake-b") <= 23, served


def test_one_tenants_long_prompts_do_not_roll_back_a_healthy_canary(
        upstream: FakeUpstreamClient, tmp_path: Path) -> None:
    """Issue 17: 25 requests with chosen users and long prompts made the
    candidate's p95 a hundred times the baseline's and rolled it back. Here
    the attacker even finds candidate users by probing (the deployment header
    shows the arm); decisions per tenant keep its requests from deciding."""
    upstream.script(default={"text": "ok", "prefill_tokens_per_s": 2000})
    with run_gateway(_steer_config(upstream), tmp_path) as gw:
        app, mallory = _secret(gw, "app"), _secret(gw, "mallory")
        for i in range(16):  # the tenant the canary is for, in both arms
            _chat(gw, app, f"a{i}")
        candidate_users = [u for u in (f"m{i}" for i in range(50))
                           if _chat(gw, mallory, u).headers["x-seawall-deployment"]
                           == "up/fake-b"]
        assert len(candidate_users) >= 10
        for i in range(25):  # the attack
            _chat(gw, mallory, candidate_users[i % len(candidate_users)], LONG)
        for i in range(16, 200):
            _chat(gw, app, f"a{i}")
            if gw.services.experiments.status()[0]["history"]:
                break
        gw.on_server(gw.services.experiments.settle())
        state = gw.services.experiments.status()[0]
        assert state["status"] == "promoted", state
        judged = state["history"][0]
        # The request-level p95 that decided before: far past the allowed x3.
        assert judged["candidate"]["p95_ms"] > 3 * judged["baseline"]["p95_ms"], judged
        assert judged["candidate"]["tenants"] == 2
