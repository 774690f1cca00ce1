"""Cost-aware routing through the real gateway: a client asks for `auto`, the
fake upstream shows which tier's model it was called with, and the headers,
trace record and model list say what was decided and why."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from seawall.config import ConfigError, parse_settings
from seawall.routing.complexity import RouterModel, RouterModelError, RulesRouter
from seawall.routing.complexity.combined import CombinedRouter
from tests.gateway import Running, run_gateway
from tests.servers import FakeUpstreamClient

pytestmark = pytest.mark.timeout(120)

FIXTURE = Path(__file__).parent.parent / "fixtures" / "router" / "tiny.jsonl"
EASY = "Hi there, thanks for the help!"
HARD = ("Prove that there are infinitely many primes. Derive it step by step and explain "
        "why each step holds: $\\sum_{p} 1/p = \\infty$.")


def _config(upstream: FakeUpstreamClient, **route: Any) -> dict[str, Any]:
    return {
        "auth": {"allow_anonymous_loopback": True},
        "observe": {"traces": {"flush_interval_s": 0.01}},
        "providers": {"f": {"type": "openai", "base_url": upstream.base_url + "/v1"}},
        "models": {"cheap": {"provider": "f", "model": "fake-cheap"},
                   "strong": {"provider": "f", "model": "fake-strong"}},
        "routes": {"auto": {"tiers": ["cheap", "strong"], **route}},
    }


def _ask(gw: Running, text: str) -> Any:
    client = openai.OpenAI(base_url=gw.url + "/v1", api_key="unused-on-loopback",
                           max_retries=0, timeout=10)
    return client.chat.completions.with_raw_response.create(
        model="auto", messages=[{"role": "user", "content": text}])


def test_rules_route_easy_prompts_cheap_and_hard_ones_strong(
        upstream: FakeUpstreamClient, tmp_path: Path) -> None:
    upstream.script(default={})
    with run_gateway(_config(upstream, router="rules"), tmp_path) as gw:
        easy = _ask(gw, EASY)
        assert easy.headers["x-seawall-route"] == "auto"
        assert easy.headers["x-seawall-route-tier"] == "0:cheap"
        assert easy.headers["x-seawall-deployment"] == "f/fake-cheap"
        assert upstream.calls()["requests"][-1]["model"] == "fake-cheap"
        hard = _ask(gw, HARD)
        assert hard.headers["x-seawall-route-tier"] == "1:strong"
        assert upstream.calls()["requests"][-1]["model"] == "fake-strong"
        assert float(hard.headers["x-seawall-route-score"]) < 0.5
        assert "math" in hard.headers["x-seawall-route-reason"]

        record = next(t for t in gw.traces(5)
                      if t["trace_id"] == hard.headers["x-request-id"])
        route = json.loads(record["route"])
        assert route["route"] == "auto" and route["model"] == "strong"
        assert route["router"] == "rules" and route["score"] < 0.5
        assert record["model"] == "strong"
        models = httpx.get(gw.url + "/v1/models").json()["data"]
        assert {"auto", "cheap", "strong"} <= {m["id"] for m in models}


def test_a_learned_router_file_is_a_config_change(upstream: FakeUpstreamClient,
                                                  tmp_path: Path) -> None:
    upstream.script(default={})
    router_file = tmp_path / "router.json"
    trained = subprocess.run(
        [sys.executable, "-m", "seawall.cli", "router", "train", str(FIXTURE),
         "--out", str(router_file)], capture_output=True, text=True, timeout=300,
        env={**os.environ, "SEAWALL_CONFIG": ""})
    assert trained.returncode == 0, trained.stderr
    with run_gateway(_config(upstream, router="learned", model_path=str(router_file)),
                     tmp_path) as gw:
        easy, hard = _ask(gw, "Good morning, thank you so much!"), _ask(gw, HARD)
        assert easy.headers["x-seawall-route-tier"] == "0:cheap"
        assert hard.headers["x-seawall-route-tier"] == "1:strong"
        version = json.loads(router_file.read_text())["version"]
        record = next(t for t in gw.traces(5)
                      if t["trace_id"] == hard.headers["x-request-id"])
        assert json.loads(record["route"])["router"] == f"learned:{version[:12]}"


def test_cost_target_mode_sends_the_target_share_to_the_strong_tier(
        upstream: FakeUpstreamClient, tmp_path: Path) -> None:
    upstream.script(default={})
    prompts = [EASY, "What is 2 + 2?", "Translate 'cat' to French.", HARD,
               "Write a haiku about rain.", "Explain why the sky is blue, step by step.",
               "Summarize: the meeting moved to Tuesday.",
               "Implement a thread-safe LRU cache in Rust and prove its complexity bounds."]
    with run_gateway(_config(upstream, strong_share=0.25, window=40, min_samples=16),
                     tmp_path) as gw:
        tiers = [_ask(gw, prompts[i % len(prompts)]).headers["x-seawall-route-tier"]
                 for i in range(80)]
    strong_share = sum(t == "1:strong" for t in tiers[-40:]) / 40
    assert 0.1 <= strong_share <= 0.4, tiers


def test_route_config_errors_are_clear(upstream: FakeUpstreamClient, tmp_path: Path) -> None:
    from seawall.config import parse_settings

    base = _config(upstream)
    for route, words in [({"tiers": ["cheap", "nope"]}, "tiers.1"),
                         ({"tiers": ["cheap", "strong"], "router": "learned"}, "model_path"),
                         ({"tiers": ["cheap", "strong"], "router": "combined",
                           "model_path": str(tmp_path / "missing.json")}, "model_path"),
                         ({"tiers": ["cheap", "strong"], "thresholds": [0.2, 0.1]}, "thresholds"),
                         ({"tiers": ["cheap", "strong"], "strong_share": 1.5}, "strong_share")]:
        with pytest.raises(ConfigError, match=words):
            parse_settings({**base, "routes": {"auto": route}}, env={})


def test_combined_router_falls_back_to_the_rules_on_unfamiliar_prompts(
        upstream: FakeUpstreamClient, tmp_path: Path) -> None:
    upstream.script(default={})
    router_file = tmp_path / "router.json"
    trained = subprocess.run(
        [sys.executable, "-m", "seawall.cli", "router", "train", str(FIXTURE),
         "--out", str(router_file), "--kind", "logistic", "--ood-centroids", "8"],
        capture_output=True, text=True, timeout=300, env={**os.environ, "SEAWALL_CONFIG": ""})
    assert trained.returncode == 0, trained.stderr
    version = json.loads(router_file.read_text())["version"]
    unfamiliar = ("Liste les ingrédients d'une ratatouille provençale pour six personnes, "
                  "avec les quantités en grammes.")
    with run_gateway(_config(upstream, router="combined", model_path=str(router_file)),
                     tmp_path) as gw:
        familiar = _ask(gw, "Hello there, good morning!")  # a training prompt
        assert familiar.headers["x-seawall-route-tier"] == "0:cheap"
        assert familiar.headers["x-seawall-route-reason"].startswith("learned P(cheap ok)")
        stranger = _ask(gw, unfamiliar)
        reason = stranger.headers["x-seawall-route-reason"]
        assert reason.startswith("rules (unfamiliar, similarity"), reason
        # the rules' own score for it, and the tier it implies
        ruled = RulesRouter().decide([{"role": "user", "content": unfamiliar}])
        assert float(stranger.headers["x-seawall-route-score"]) == pytest.approx(
            ruled.score, abs=1e-4)
        record = next(t for t in gw.traces(5)
                      if t["trace_id"] == stranger.headers["x-request-id"])
        route = json.loads(record["route"])
        assert route["router"] == f"combined:{version[:12]}"
        assert route["reason"].startswith("rules (unfamiliar")

    bare = tmp_path / "bare.json"
    subprocess.run([sys.executable, "-m", "seawall.cli", "router", "train", str(FIXTURE),
                    "--out", str(bare), "--kind", "logistic", "--ood-centroids", "0"],
                   check=True, capture_output=True, timeout=300,
                   env={**os.environ, "SEAWALL_CONFIG": ""})
    settings = parse_settings(_config(upstream, router="combined", model_path=str(bare)),
                              env={})
    assert settings.routes["auto"].router == "combined"
    with pytest.raises(RouterModelError, match="out-of-distribution reference"):
        CombinedRouter(RouterModel.load(bare), RulesRouter())


def test_the_shipped_router_is_the_default_and_routes_through_the_gateway(
        upstream: FakeUpstreamClient, tmp_path: Path) -> None:
    """No router setting, no file: the route uses the router shipped in the
    package (combined: learned on exam-style questions, rules elsewhere)."""
    from seawall.routing.complexity.shipped import load_shipped

    upstream.script(default={})
    exam = ("Which city is the capital of Australia?\nA. Sydney\nB. Canberra\n"
            "C. Melbourne\nD. Perth\nAnswer:")
    version = load_shipped().version
    with run_gateway(_config(upstream), tmp_path) as gw:
        easy = _ask(gw, EASY)
        assert easy.headers["x-seawall-route-tier"] == "0:cheap"
        assert upstream.calls()["requests"][-1]["model"] == "fake-cheap"
        hard = _ask(gw, HARD)
        assert hard.headers["x-seawall-route-tier"] == "1:strong"
        assert upstream.calls()["requests"][-1]["model"] == "fake-strong"
        assert hard.headers["x-seawall-route-reason"].startswith("rules (unfamiliar")
        question = _ask(gw, exam)
        assert question.headers["x-seawall-route-reason"].startswith("learned P(cheap ok)")
        record = next(t for t in gw.traces(5)
                      if t["trace_id"] == hard.headers["x-request-id"])
        route = json.loads(record["route"])
        assert route["router"] == f"combined:{version[:12]}" and route["model"] == "strong"
