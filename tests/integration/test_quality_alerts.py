"""Quality SLO alerts end to end: a real gateway in front of the fake
upstream, the official openai SDK for answers, ``POST /v1/feedback`` for
ratings and judge scores written to the score store; the evaluator fires an
alert with its evidence to loopback webhook receivers (generic and Slack
format; one answers 503 first, so delivery is retried), and resolves it
after recovery, each change sent once."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import openai
import pytest
from click.testing import CliRunner

from seawall.cli import main as cli
from seawall.quality.score_store import Score, SqliteScoreStore
from tests.gateway import Running, run_gateway
from tests.servers import FakeUpstreamClient
from tests.servers import WebhookReceiver as Receiver

MASTER = "sk-master-quality"


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.close()


def _wait(what: str, check: Callable[[], Any], within_s: float = 30) -> Any:
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        got = check()
        if got:
            return got
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def _config(upstream: FakeUpstreamClient, receiver: Receiver) -> dict[str, Any]:
    def rule(rate: float) -> list[dict[str, Any]]:
        return [{"severity": "page", "long_s": 300, "short_s": 60, "burn_rate": rate}]

    return {
        "auth": {"master_key": MASTER, "allow_anonymous_loopback": False},
        "providers": {"oa": {"type": "openai", "base_url": upstream.base_url + "/v1"}},
        "models": {"gpt-x": {"provider": "oa", "model": "upstream-gpt"}},
        "quality": {
            "interval_s": 0.2,
            "drift": {"enabled": False},
            "slos": [
                {"name": "thumbs", "kind": "feedback", "objective": 0.9, "period_s": 3600,
                 "model": "gpt-x", "alerts": rule(6)},  # fires at 4 of 6 bad, not 3
                {"name": "judged", "kind": "judge", "objective": 0.8, "period_s": 3600,
                 "threshold": 4, "alerts": rule(2.4)},  # fires at 4 of 8 bad, not 3 of 7
            ]},
        "alerts": {"backoff_s": 0.05, "webhooks": [
            {"url": receiver.url + "/generic", "format": "generic"},
            {"url": receiver.url + "/flaky", "format": "slack"}]},
    }


def _answers(gw: Running, n: int) -> list[str]:
    client = openai.OpenAI(base_url=gw.url + "/v1", api_key=MASTER, max_retries=0)
    ids = []
    for i in range(n):
        raw = client.chat.completions.with_raw_response.create(
            model="gpt-x", messages=[{"role": "user", "content": f"question {i}"}])
        ids.append(raw.headers["x-request-id"])
    return ids


def _rate(gw: Running, request_id: str, score: int) -> None:
    r = httpx.post(gw.url + "/v1/feedback", timeout=30,
                   json={"request_id": request_id, "score": score, "user": "u1",
                         "comment": "bad answer" if score < 0 else None},
                   headers={"authorization": f"Bearer {MASTER}"})
    assert r.status_code == 200, r.text


def _firing(receiver: Receiver, path: str, key: str, status: str = "firing") -> list[Any]:
    out = []
    for body in receiver.alerts(path):
        if path == "/generic" and body["alert"]["key"] == key and (
                body["alert"]["status"] == status):
            out.append(body["alert"])
        elif path == "/flaky" and key in json.dumps(body["blocks"]) and (
                body["text"].startswith("[RESOLVED]") == (status == "resolved")):
            out.append(body)
    return out


def _metric(gw: Running, name: str) -> str:
    text = httpx.get(gw.url + "/metrics", headers={"authorization": f"Bearer {MASTER}"},
                     timeout=30).text
    return "\n".join(line for line in text.splitlines() if line.startswith(name))


def test_thumbs_down_burn_fires_an_alert_with_evidence_and_recovery_resolves_it(
        upstream: FakeUpstreamClient, receiver: Receiver, tmp_path: Any) -> None:
    with run_gateway(_config(upstream, receiver), tmp_path) as gw:
        ids = _answers(gw, 6)
        for i in ids:
            _rate(gw, i, 1)
        # The evaluator has seen the six good ratings (and stays quiet).
        _wait("six good ratings counted",
              lambda: 'seawall_slo_events{slo="thumbs",verdict="good"} 6.0'
              in _metric(gw, "seawall_slo_events"))
        assert 'seawall_slo_error_budget_remaining{slo="thumbs"} 1.0' in _metric(
            gw, "seawall_slo_error_budget_remaining")
        assert receiver.alerts("/generic") == []

        # Degradation: users turn four answers down (4/6 bad: burn 6.7 > 6).
        bad = ids[:4]
        for i in bad:
            _rate(gw, i, -1)
        alert = _wait("the firing alert", lambda: _firing(receiver, "/generic",
                                                          "slo:thumbs:page"))[0]
        assert alert["severity"] == "page" and alert["source"] == "slo"
        assert alert["values"]["bad"] == 4 and alert["values"]["events"] == 6
        assert alert["values"]["burn_5m"] == pytest.approx(4 / 6 / 0.1, rel=1e-3)
        evidence = {e["trace_id"] for e in alert["evidence"]}
        assert evidence == set(bad)  # the thumbs-down answers, with their ids
        assert all(e["comment"] == "bad answer" for e in alert["evidence"])
        # The Slack webhook answered 503 once: retried, then delivered.
        slack = _wait("the Slack alert", lambda: _firing(receiver, "/flaky",
                                                         "slo:thumbs:page"))[0]
        assert slack["text"].startswith("[FIRING PAGE]")
        assert bad[0] in json.dumps(slack["blocks"])
        assert 'burn_rate{slo="thumbs",window="5m"} 6.66' in _metric(gw, "seawall_slo_burn")

        # Recovery: the same users change their minds (a rating replaces the last).
        for i in bad:
            _rate(gw, i, 1)
        resolved = _wait("the resolution", lambda: _firing(
            receiver, "/generic", "slo:thumbs:page", "resolved"))[0]
        assert resolved["evidence"] == []
        _wait("the Slack resolution", lambda: _firing(receiver, "/flaky", "slo:thumbs:page",
                                                      "resolved"))
        # Many evaluations ran meanwhile; each change was sent once.
        time.sleep(1.0)
        assert len(_firing(receiver, "/generic", "slo:thumbs:page")) == 1
        assert len(_firing(receiver, "/generic", "slo:thumbs:page", "resolved")) == 1
        sent = _metric(gw, "seawall_alert_deliveries_total")
        assert 'outcome="retried"} 1.0' in sent and 'outcome="sent"} 4.0' in sent


def test_failing_judge_scores_fire_and_a_restart_does_not_fire_again(
        upstream: FakeUpstreamClient, receiver: Receiver, tmp_path: Any) -> None:
    def put_scores(gw: Running, scores: list[float]) -> list[str]:
        async def go() -> list[str]:
            store = SqliteScoreStore(gw.services.settings.db_path)
            await store.open()
            ids = []
            try:
                for s in scores:
                    tid = uuid.uuid4().hex
                    ids.append(tid)
                    await store.put(Score(trace_id=tid, judge="helpful", rubric="helpfulness",
                                          tenant="default", model="gpt-x", score=s,
                                          reasoning=f"scored {s}", created_at=time.time()))
            finally:
                await store.close()
            return ids
        return gw.on_server(go())

    with run_gateway(_config(upstream, receiver), tmp_path) as gw:
        put_scores(gw, [5, 5, 4, 5])
        low = put_scores(gw, [1, 2])  # 2/6 bad: 0.33 / 0.2 = burn 1.67 < 2.4: quiet
        _wait("six scores counted", lambda: 'slo="judged",verdict="bad"} 2.0'
              in _metric(gw, "seawall_slo_events"))
        assert _firing(receiver, "/generic", "slo:judged:page") == []
        low += put_scores(gw, [1, 3])  # 4/8 bad: burn 2.5 (3/7 on the way: 2.14)
        alert = _wait("the judge alert", lambda: _firing(receiver, "/generic",
                                                         "slo:judged:page"))[0]
        # Worst first: the two 1/5 scores, then the 2 and the 3.
        assert {e["trace_id"] for e in alert["evidence"][:2]} == {low[0], low[2]}
        assert {e["trace_id"] for e in alert["evidence"]} == set(low)
        assert alert["evidence"][0]["reasoning"] == "scored 1"

    # A restart on the same data finds the alert firing: nothing sent again.
    with run_gateway(_config(upstream, receiver), tmp_path) as gw:
        _wait("an evaluation after the restart",
              lambda: 'slo="judged",verdict="bad"} 4.0' in _metric(gw, "seawall_slo_events"))
        time.sleep(0.6)
        assert len(_firing(receiver, "/generic", "slo:judged:page")) == 1

    # The CLI shows the SLO, its burn rates and the alert state.
    conf = tmp_path / "cli.yaml"
    import yaml

    conf.write_text(yaml.safe_dump({"data_dir": str(tmp_path / "data"),
                                    **_config(upstream, receiver)}))
    r = CliRunner().invoke(cli, ["quality", "--json", "-c", str(conf)])
    assert r.exit_code == 0, r.output
    out = json.loads(r.stdout)
    judged = next(s for s in out["slos"] if s["name"] == "judged")
    assert judged["events"] == 8 and judged["bad"] == 4
    assert judged["budget_remaining"] == pytest.approx(1 - 0.5 / 0.2)
    assert {a["key"]: a["status"] for a in out["alerts"]}["slo:judged:page"] == "firing"
    text = CliRunner().invoke(cli, ["quality", "-c", str(conf)])
    assert text.exit_code == 0 and "judged" in text.stdout and "FIRING" in text.stdout


def test_two_replicas_on_postgres_and_redis_send_each_change_once(
        upstream: FakeUpstreamClient, receiver: Receiver, pg_url: str, redis_url: str,
        tmp_path: Any) -> None:
    shared = {"store": {"kind": "postgres", "url": pg_url}, "redis": {"url": redis_url}}
    config = {**_config(upstream, receiver), **shared}
    with run_gateway(config, tmp_path / "a") as a, run_gateway(config, tmp_path / "b") as b:
        # One replica holds the quality lease; both export the SLO figures.
        assert sorted([a.services.quality.deciding,  # type: ignore[union-attr]
                       b.services.quality.deciding]) == [False, True]  # type: ignore[union-attr]
        ids = _answers(a, 3) + _answers(b, 3)
        for i in ids:
            _rate(a, i, 1)
        for i in ids[2:]:
            _rate(b, i, -1)  # 4 of 6 bad (3 of 6 is below the rule's burn rate)
        alert = _wait("the firing alert", lambda: _firing(receiver, "/generic",
                                                          "slo:thumbs:page"))[0]
        assert {e["trace_id"] for e in alert["evidence"]} == set(ids[2:])
        for gw in (a, b):
            _wait("the figures on each replica", lambda gw=gw: 'seawall_slo_events{slo="thumbs",'
                  'verdict="bad"} 4.0' in _metric(gw, "seawall_slo_events"))
        time.sleep(1.0)  # many evaluations on both replicas
        assert len(_firing(receiver, "/generic", "slo:thumbs:page")) == 1


def test_a_failing_evaluation_is_counted_and_the_evaluator_keeps_going(
        upstream: FakeUpstreamClient, receiver: Receiver, tmp_path: Any) -> None:
    with run_gateway(_config(upstream, receiver), tmp_path) as gw:
        store = gw.services.slo_store
        gw.on_server(store.close())  # every query now fails
        _wait("a failed round counted", lambda: 'seawall_background_restarts_total'
              '{task="quality"}' in _metric(gw, "seawall_background_restarts_total"))
        # Requests are served meanwhile.
        ids = _answers(gw, 1)
        gw.on_server(store.open())
        _rate(gw, ids[0], -1)  # 1 of 1 bad: burn 10 > 6
        _wait("the alert after recovery (the retry backs off: 5 s, then 10 s)",
              lambda: _firing(receiver, "/generic", "slo:thumbs:page"), within_s=60)


def test_drift_in_the_gateway_alerts_through_the_webhook(
        upstream: FakeUpstreamClient, receiver: Receiver, tmp_path: Any) -> None:
    """Short questions, then (after the recent window's length) long ones: the
    fake echoes them, so input and output lengths shift; the evaluator's
    drift loop tests the stored traffic and alerts."""
    config = _config(upstream, receiver)
    config["quality"] = {"slos": [], "drift": {
        "interval_s": 0.5, "recent_s": 15, "reference_s": 120, "min_samples": 10,
        "embeddings": False, "consecutive": 1}}
    with run_gateway(config, tmp_path) as gw:
        client = openai.OpenAI(base_url=gw.url + "/v1", api_key=MASTER, max_retries=0)

        def ask(text: str) -> None:
            client.chat.completions.create(model="gpt-x",
                                           messages=[{"role": "user", "content": text}])

        for i in range(12):
            ask(f"hi {i}")
        time.sleep(16)  # these are now the reference window
        assert receiver.alerts("/generic") == []
        for i in range(12):
            ask(f"please explain in detail, step by step, topic number {i} " * 8)
        alert = _wait("the drift alert", lambda: _firing(receiver, "/generic",
                                                         "drift:gpt-x:-"), within_s=30)[0]
        assert alert["source"] == "drift" and alert["labels"]["model"] == "gpt-x"
        assert "length" in alert["summary"]
        assert 'seawall_drift_alarm{model="gpt-x"} 1.0' in _metric(gw, "seawall_drift_alarm")
