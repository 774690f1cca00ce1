"""``seawall router train --from-traces``: the cost router learns from the
gateway's own answers of the cheap model that users rated (POST
/v1/feedback through a real gateway, answers from the fake upstream via the
openai SDK) or judges scored (rows in the score store)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
import yaml
from click.testing import CliRunner

from seawall.quality.score_store import Score, SqliteScoreStore
from seawall.routing.complexity.cli import router as router_cli
from tests.gateway import run_gateway
from tests.servers import FakeUpstreamClient

pytestmark = pytest.mark.timeout(240)

EASY = ["Say hello to {}.", "Translate 'good morning, {}' to French.", "Thank {} politely."]
HARD = ["Prove that there are infinitely many primes, then generalise it for {}.",
        "Derive step by step the closed form of the sum of k^3, as {} would.",
        "Write a Python function that solves the knapsack problem for {}."]
NAMES = ["Ada", "Bob", "Cy", "Dee", "Eve", "Fay"]


def _config(upstream: FakeUpstreamClient, tmp_path: Path) -> dict[str, Any]:
    return {
        "data_dir": str(tmp_path / "data"),
        "auth": {"allow_anonymous_loopback": True},
        "observe": {"traces": {"flush_interval_s": 0.01}},
        "providers": {"oa": {"type": "openai", "base_url": upstream.base_url + "/v1"}},
        "models": {"small": {"provider": "oa", "model": "fake-small"},
                   "big": {"provider": "oa", "model": "fake-big"}},
        "routes": {"auto": {"tiers": ["small", "big"]}},
    }


def test_router_trains_on_rated_and_judged_answers_of_the_cheap_model(
        upstream: FakeUpstreamClient, tmp_path: Path) -> None:
    upstream.script(default={})
    config = _config(upstream, tmp_path)
    prompts = [(t.format(n), 1 if t in EASY else -1) for t in EASY + HARD for n in NAMES]
    with run_gateway(config, tmp_path) as gw:
        client = openai.OpenAI(base_url=gw.url + "/v1", api_key="unused-on-loopback", max_retries=0)
        answered = []
        for text, rating in prompts:
            raw = client.chat.completions.with_raw_response.create(
                model="small", messages=[{"role": "user", "content": text}])
            answered.append((raw.headers["x-request-id"], rating))
        client.chat.completions.create(model="big", messages=[{"role": "user",
                                                               "content": "not the cheap one"}])
        gw.on_server(gw.services.writer.flush())
        for rid, rating in answered[:-6]:  # users rate most answers ...
            r = httpx.post(gw.url + "/v1/feedback", timeout=30,
                           json={"request_id": rid, "score": rating})
            assert r.status_code == 200, r.text

    async def judge() -> None:  # ... and a judge scores the rest (a score wins)
        store = SqliteScoreStore(tmp_path / "data" / "seawall.db")
        await store.open()
        try:
            for rid, rating in answered[-6:]:
                await store.put(Score(trace_id=rid, judge="j", rubric="correctness",
                                      tenant="anonymous", model="small",
                                      score=5.0 if rating > 0 else 1.0))
        finally:
            await store.close()

    asyncio.run(judge())
    path = tmp_path / "seawall.yaml"
    path.write_text(yaml.safe_dump(config))
    out = tmp_path / "router.json"
    runner = CliRunner()
    base = ["train", "--from-traces", "--route", "auto", "--kind", "logistic",
            "--out", str(out), "-c", str(path)]
    result = runner.invoke(router_cli, [*base, "--min-examples", "100"])
    assert result.exit_code != 0
    assert "only 36 labelled answers of small in the last 30 days (need --min-examples 100)" \
        in result.output
    assert not out.exists()
    result = runner.invoke(router_cli, [*base, "--min-examples", "20"])
    assert result.exit_code == 0, result.output
    assert "records read, 36 answers of small with their input, 6 judged, 30 rated" \
        in result.output
    assert "trained logistic router on 36 examples (cheap ok 50.0%)" in result.output
    training = json.loads(out.read_text())["training"]
    assert training["sources"] == {"traces": 36} and training["data"] == "traces"
    # Neither files nor --from-traces; --from-traces without a cheap model.
    assert runner.invoke(router_cli, ["train", "--out", str(out)]).exit_code != 0
    result = runner.invoke(router_cli, ["train", "--from-traces", "--out", str(out),
                                        "-c", str(path)])
    assert result.exit_code != 0 and "--cheap MODEL or --route NAME" in result.output
