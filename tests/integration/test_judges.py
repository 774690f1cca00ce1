"""Judges in the background: the official openai SDK asks a real gateway
(answered by the in-process fake model), and the fake upstream, over a real
socket, plays the judge model -- a good verdict, a malformed one, a hang, or
a closed port. Scores are read where users read them: GET /admin/traces/{id}
and ``seawall traces show``."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
import yaml
from click.testing import CliRunner

from seawall.cli import main as cli
from seawall.quality.judge_call import JUDGE_TENANT
from tests.gateway import Running, run_gateway
from tests.servers import FakeUpstreamClient, closed_port

MASTER = "sk-master-judges"
GOOD = 'Here is my verdict:\n```json\n{"score": 4, "reasoning": "Clear and complete."}\n```'


def _config(judge_url: str, **judge: Any) -> dict[str, Any]:
    return {
        "auth": {"master_key": MASTER, "allow_anonymous_loopback": False},
        "providers": {"fake": {"type": "fake"},
                      "judge": {"type": "openai", "base_url": judge_url}},
        "models": {"chat": {"provider": "fake"}, "other": {"provider": "fake"},
                   "judge": {"provider": "judge", "model": "upstream-judge",
                             "price": {"input_per_mtok": 1000.0, "output_per_mtok": 1000.0}}},
        "jobs": {"backoff_s": 0.05, "backoff_max_s": 0.2, "poll_s": 0.1},
        "resilience": {"retries": {"max_attempts": 1}},
        "quality": {"judges": [{"name": "j1", "match": {"models": ["chat"]},
                                "judge_model": "judge", "rubrics": ["helpfulness"],
                                "sample_rate": 1.0, "max_attempts": 2, "timeout_s": 5.0,
                                **judge}]},
    }


@pytest.fixture
def gateway(upstream: FakeUpstreamClient, tmp_path: Path) -> Iterator[Any]:
    """``gateway(**judge_settings)`` starts a gateway whose judge is the fake upstream."""
    upstream.reset()
    started: list[Any] = []

    def start(judge_url: str | None = None, **judge: Any) -> Running:
        cm = run_gateway(_config(judge_url or upstream.base_url + "/v1", **judge), tmp_path)
        started.append(cm)
        return cm.__enter__()

    yield start
    for cm in reversed(started):
        cm.__exit__(None, None, None)


def _ask(gw: Running, model: str = "chat", text: str = "how tall is the tower") -> str:
    client = openai.OpenAI(base_url=gw.url + "/v1", api_key=MASTER, max_retries=0, timeout=10)
    t0 = time.monotonic()
    raw = client.chat.completions.with_raw_response.create(
        model=model, messages=[{"role": "user", "content": text}])
    assert time.monotonic() - t0 < 5  # answered, whatever the judge does
    assert raw.parse().choices[0].message.content == text  # the fake echoes
    return raw.headers["x-request-id"]


def _scores(gw: Running, rid: str, within_s: float = 30) -> list[dict[str, Any]]:
    """The trace's scores once there are some (or [] after ``within_s``)."""
    deadline = time.monotonic() + within_s
    while True:
        gw.on_server(gw.services.writer.flush())
        r = httpx.get(f"{gw.url}/admin/traces/{rid}",
                      headers={"authorization": f"Bearer {MASTER}"}, timeout=10)
        if r.status_code == 200 and r.json()["scores"] or time.monotonic() > deadline:
            return r.json()["scores"] if r.status_code == 200 else []
        time.sleep(0.1)


def _metric(gw: Running, pattern: str) -> float:
    text = httpx.get(gw.url + "/metrics", headers={"authorization": f"Bearer {MASTER}"},
                     timeout=10).text
    m = re.search(rf"^{pattern} (\S+)$", text, re.M)
    return float(m.group(1)) if m else 0.0


def _job(gw: Running, rid: str) -> Any:
    gw.on_server(gw.services.judges.flush())
    return gw.on_server(gw.services.jobs.get(f"judge_{rid}", JUDGE_TENANT))


def test_a_good_verdict_is_stored_with_its_reasoning_and_cost(
        gateway: Any, upstream: FakeUpstreamClient, tmp_path: Path) -> None:
    upstream.script(default={"text": GOOD})
    gw = gateway()
    rid = _ask(gw)
    [s] = _scores(gw, rid)
    assert (s["judge"], s["rubric"], s["status"], s["score"]) == ("j1", "helpfulness", "ok", 4)
    assert s["reasoning"] == "Clear and complete."
    assert (s["judge_model"], s["rubric_version"], s["model"], s["tenant"]) == (
        "judge", "builtin", "chat", "default")
    assert s["cost_usd"] > 0 and s["scale_max"] == 5
    # The judge saw the answer it scores, not a client key.
    body = upstream.calls()["requests"][-1]
    assert body["model"] == "upstream-judge" and "how tall is the tower" in str(body)
    assert _metric(gw, 'seawall_judge_scores_total{judge="j1",rubric="helpfulness",'
                       'status="ok"}') == 1
    assert _metric(gw, 'seawall_judge_cost_usd_total{judge="j1"}') == pytest.approx(
        s["cost_usd"])
    # The client's own spend is untouched by the judge: one trace, the chat.
    chats = [t for t in gw.traces() if t["trace_id"] == rid]
    assert chats[0]["cost_usd"] == 0
    # And `seawall traces show` prints the same scores.
    conf = tmp_path / "cli.yaml"
    conf.write_text(yaml.safe_dump({"data_dir": str(tmp_path / "data")}))
    out = CliRunner().invoke(cli, ["traces", "show", rid, "-c", str(conf)])
    assert out.exit_code == 0, out.output
    assert '"reasoning": "Clear and complete."' in out.output


def test_malformed_verdict_is_retried_then_stored_failed(
        gateway: Any, upstream: FakeUpstreamClient) -> None:
    upstream.script(default={"text": "The answer looks fine to me, I'd say four."})
    gw = gateway()
    rid = _ask(gw)
    [s] = _scores(gw, rid)
    assert s["status"] == "failed" and s["score"] is None
    assert "malformed verdict" in s["reasoning"] and s["attempts"] == 2
    assert upstream.calls()["calls"] == 2  # once per attempt (max_attempts 2)
    assert _metric(gw, 'seawall_judge_scores_total{judge="j1",rubric="helpfulness",'
                       'status="failed"}') == 1


def test_a_hanging_judge_times_out_and_the_request_path_is_unaffected(
        gateway: Any, upstream: FakeUpstreamClient) -> None:
    upstream.script(default={"hang": True})
    gw = gateway(timeout_s=0.5)
    rid = _ask(gw)
    for _ in range(3):  # more answers while the judge hangs: each answered at once
        _ask(gw, text="and another")
    [s] = _scores(gw, rid)
    assert s["status"] == "failed" and "did not answer within 0.5s" in s["reasoning"]


def test_a_judge_that_is_down_fails_the_score_not_the_worker(gateway: Any) -> None:
    gw = gateway(judge_url=f"http://127.0.0.1:{closed_port()}/v1")
    rids = [_ask(gw), _ask(gw, text="second")]
    for rid in rids:
        [s] = _scores(gw, rid)
        assert s["status"] == "failed" and "failed" in s["reasoning"]
    assert gw.services.job_runner is not None and gw.services.job_runner._loop_task is not None
    assert not gw.services.job_runner._loop_task.done()  # the runner lives on


def test_sample_rate_zero_enqueues_nothing(gateway: Any, upstream: FakeUpstreamClient) -> None:
    upstream.script(default={"text": GOOD})
    gw = gateway(sample_rate=0.0)
    rid = _ask(gw)
    assert _job(gw, rid) is None
    assert upstream.calls()["calls"] == 0


def test_sample_rate_one_enqueues_each_matching_answer_only(
        gateway: Any, upstream: FakeUpstreamClient) -> None:
    upstream.script(default={"text": GOOD})
    gw = gateway()
    matching = [_ask(gw, text=f"q{i}") for i in range(3)]
    other = _ask(gw, model="other")
    client = openai.OpenAI(base_url=gw.url + "/v1", api_key=MASTER, max_retries=0)
    with client.chat.completions.with_streaming_response.create(
            model="chat", messages=[{"role": "user", "content": "q3"}], stream=True) as r:
        streamed = r.headers["x-request-id"]
        assert "q3" in r.text()
    matching.append(streamed)
    for rid in matching:
        job = _job(gw, rid)
        assert job is not None and job.kind == "judge" and job.payload["trace_id"] == rid
        assert job.payload["output"] in ("q0", "q1", "q2", "q3")
    assert _job(gw, other) is None
    assert _metric(gw, 'seawall_judge_sampled_total{judge="j1"}') == 4


def test_the_daily_budget_stops_judging(gateway: Any, upstream: FakeUpstreamClient) -> None:
    upstream.script(default={"text": GOOD})
    gw = gateway(max_usd_per_day=1e-9)  # the first verdict spends more than this
    first = _ask(gw)
    assert [s["status"] for s in _scores(gw, first)] == ["ok"]
    calls = upstream.calls()["calls"]
    second = _ask(gw, text="second")
    assert _scores(gw, second, within_s=3) == []
    assert upstream.calls()["calls"] == calls  # the judge was not asked again
    assert _metric(gw, 'seawall_judge_skipped_total{judge="j1",reason="over_budget"}') >= 1


def test_eval_run_judges_a_dataset_and_past_traces(
        gateway: Any, upstream: FakeUpstreamClient, tmp_path: Path) -> None:
    upstream.script(default={"text": GOOD})
    gw = gateway(sample_rate=0.0)  # nothing judged in the background
    rids = [_ask(gw, text=f"question {i}") for i in range(3)]
    _ask(gw, model="other")
    gw.on_server(gw.services.writer.flush())
    conf = tmp_path / "eval.yaml"
    conf.write_text(yaml.safe_dump({"data_dir": str(tmp_path / "data"),
                                    **_config(upstream.base_url + "/v1")}))
    data = tmp_path / "answers.jsonl"
    data.write_text('{"id": "a", "input": "2+2?", "output": "4", "reference": "4"}\n'
                    '{"id": "b", "input": "Capital of France?", "output": "Paris", '
                    '"sources": ["Paris is the capital of France."]}\n')
    out = CliRunner().invoke(cli, ["eval", "run", "-c", str(conf), "--dataset", str(data),
                                   "--judge-model", "judge", "--rubric", "correctness",
                                   "--rubric", "groundedness"])
    assert out.exit_code == 0, out.output
    lines = {ln.split()[0]: ln.split() for ln in out.output.splitlines() if ln.strip()}
    assert lines["correctness"][1:4] == ["2", "0", "4.00"]
    assert lines["groundedness"][1:4] == ["1", "0", "4.00"]  # row a has no sources
    judged = upstream.calls()["requests"]
    assert any("REFERENCE ANSWER:\\n4" in str(b) or "REFERENCE ANSWER:\n4" in str(b)
               for b in judged)
    # Past traces: only the model asked for, newest first, scores written to the traces.
    out = CliRunner().invoke(cli, ["eval", "run", "-c", str(conf), "--since", "1h",
                                   "--model", "chat", "--judge", "j1", "--write"])
    assert out.exit_code == 0, out.output
    assert re.search(r"^helpfulness\s+3\s+0\s+4\.00", out.output, re.M), out.output
    for rid in rids:
        [s] = _scores(gw, rid, within_s=5)
        assert s["status"] == "ok" and s["judge"] == "j1"
    bad = CliRunner().invoke(cli, ["eval", "run", "-c", str(conf), "--since", "1h",
                                   "--judge", "nope"])
    assert bad.exit_code == 2 and "no judge 'nope'" in bad.output
    bad = CliRunner().invoke(cli, ["eval", "run", "-c", str(conf), "--since", "1h",
                                   "--dataset", str(data)])
    assert bad.exit_code == 2 and "either --dataset" in bad.output


def test_a_registry_rubric_and_the_clients_reference_reach_the_judge(
        gateway: Any, upstream: FakeUpstreamClient) -> None:
    upstream.script(default={"text": '{"score": 9, "reasoning": "polite"}'})
    gw = gateway(rubrics=["correctness", {"prompt": "tone@production", "scale_max": 10}])
    gw.services.prompts.push("tone", {"messages": [{"role": "user", "content": (
        "Rate the tone 1-10 of: {{ output }} (asked: {{ input }}). Reply as JSON.")}]})
    client = openai.OpenAI(base_url=gw.url + "/v1", api_key=MASTER, max_retries=0)
    raw = client.chat.completions.with_raw_response.create(
        model="chat", messages=[{"role": "user", "content": "name a prime"}],
        extra_body={"seawall": {"reference": "7"}})
    rid = raw.headers["x-request-id"]
    deadline = time.monotonic() + 30
    while len(scores := _scores(gw, rid)) < 2 and time.monotonic() < deadline:
        time.sleep(0.1)
    by = {s["rubric"]: s for s in scores}
    assert by["tone"]["score"] == 9 and by["tone"]["rubric_version"] == "tone@1"
    assert by["tone"]["scale_max"] == 10
    assert by["correctness"]["status"] == "failed"  # 9 is off its 1-5 scale
    bodies = [str(b) for b in upstream.calls()["requests"]]
    assert any("Rate the tone 1-10 of: name a prime (asked: user: name a prime)" in b
               for b in bodies)
    assert any("REFERENCE ANSWER:\\n7" in b for b in bodies)
