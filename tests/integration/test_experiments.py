"""A/B splits and canary rollouts through the real gateway: the openai SDK in
front, fake upstreams behind (one scripted to fail for the rollback), the
state the CLI reads, and the trace records."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openai
import pytest
import yaml

from tests.gateway import Running, run_gateway
from tests.servers import FakeUpstreamClient, start_fake_upstream

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="module")
def flaky() -> Iterator[FakeUpstreamClient]:
    """A second upstream, for the arm that is scripted to fail."""
    url, stop = start_fake_upstream(seed=7)
    try:
        yield FakeUpstreamClient(url)
    finally:
        stop()


def _config(upstream: FakeUpstreamClient, flaky: FakeUpstreamClient,
            experiments: dict[str, Any]) -> dict[str, Any]:
    return {
        "auth": {"allow_anonymous_loopback": True},
        "observe": {"traces": {"flush_interval_s": 0.01}},
        # One attempt: the canary must see the candidate's failures, not retries hiding them.
        "resilience": {"retries": {"max_attempts": 1}},
        "providers": {"good": {"type": "openai", "base_url": upstream.base_url + "/v1"},
                      "flaky": {"type": "openai", "base_url": flaky.base_url + "/v1"}},
        "models": {
            "chat": {"deployments": [{"provider": "good", "model": "fake-a"},
                                     {"provider": "good", "model": "fake-b"}]},
            "candidate": {"provider": "flaky", "model": "fake-new"},
        },
        "experiments": experiments,
    }


def _ask(gw: Running, user: str | None = None) -> tuple[int, dict[str, str]]:
    client = openai.OpenAI(base_url=gw.url + "/v1", api_key="unused-on-loopback",
                           max_retries=0, timeout=10)
    kw: dict[str, Any] = {"user": user} if user else {}
    try:
        raw = client.chat.completions.with_raw_response.create(
            model="chat", messages=[{"role": "user", "content": "hello"}], **kw)
        return raw.status_code, dict(raw.headers)
    except openai.APIStatusError as e:
        return e.status_code, dict(e.response.headers)


def test_ab_split_is_sticky_per_user_and_recorded(upstream: FakeUpstreamClient,
                                                  flaky: FakeUpstreamClient,
                                                  tmp_path: Path) -> None:
    upstream.script(default={})
    experiments = {"deploys": {"model": "chat", "variants": [
        {"name": "a", "weight": 1, "deployment": "good/fake-a"},
        {"name": "b", "weight": 1, "deployment": "good/fake-b"}]}}
    with run_gateway(_config(upstream, flaky, experiments), tmp_path) as gw:
        seen: dict[str, set[str]] = {}
        for _ in range(3):
            for i in range(12):
                status, headers = _ask(gw, user=f"user-{i}")
                assert status == 200
                arm = headers["x-seawall-experiment"]
                # The arm decides the deployment.
                assert headers["x-seawall-deployment"] == (
                    "good/fake-a" if arm == "deploys=a" else "good/fake-b")
                seen.setdefault(f"user-{i}", set()).add(arm)
        assert all(len(arms) == 1 for arms in seen.values())  # sticky
        assert {a for arms in seen.values() for a in arms} == {"deploys=a", "deploys=b"}
        records = gw.traces(50)
        assert {r["experiment"] for r in records} == {"deploys=a", "deploys=b"}


def _status(config: dict[str, Any], tmp_path: Path) -> dict[str, Any]:
    path = tmp_path / "seawall.yaml"
    path.write_text(yaml.safe_dump(config))
    out = subprocess.run([sys.executable, "-m", "seawall.cli", "experiments", "status", "--json",
                          "-c", str(path)], capture_output=True, text=True, timeout=60,
                         env={**os.environ, "SEAWALL_CONFIG": ""})
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.splitlines()[0])  # type: ignore[no-any-return]


def _canary_config(upstream: FakeUpstreamClient, flaky: FakeUpstreamClient,
                   tmp_path: Path) -> dict[str, Any]:
    config = _config(upstream, flaky, {"rollout": {
        "model": "chat", "kind": "canary", "sticky": "request",
        "canary": {"steps": [30, 60, 100], "min_requests": 15,
                   "max_error_rate_increase": 0.05, "max_p95_ratio": 20},
        "variants": [{"name": "stable"}, {"name": "next", "model": "candidate"}]}})
    config["data_dir"] = str(tmp_path / "data")
    return config


def test_canary_rolls_back_a_failing_candidate_and_says_why(
        upstream: FakeUpstreamClient, flaky: FakeUpstreamClient, tmp_path: Path) -> None:
    upstream.script(default={})
    flaky.script(default={"error_status": 500, "error_probability": 0.5})
    config = _canary_config(upstream, flaky, tmp_path)
    with run_gateway(config, tmp_path) as gw:
        outcomes = [_ask(gw) for _ in range(200)]
        gw.on_server(gw.services.experiments.settle())
        state = gw.services.experiments.status()[0]
        assert state["status"] == "rolled_back", state
        assert "error rate" in state["reason"]
        # After the rollback every request goes to the baseline.
        after = [_ask(gw) for _ in range(10)]
        assert all(h["x-seawall-experiment"] == "rollout=stable" and s == 200
                   for s, h in after)
    assert any(h["x-seawall-experiment"] == "rollout=next" and s >= 500 for s, h in outcomes)
    shown = _status(config, tmp_path)  # the CLI reads what the server saved
    assert shown["status"] == "rolled_back" and shown["share"] == 0
    assert shown["history"][-1]["candidate"]["errors"] > 0
    # A restart keeps the verdict.
    with run_gateway(config, tmp_path) as gw:
        assert {_ask(gw)[1]["x-seawall-experiment"] for _ in range(10)} == {"rollout=stable"}


def test_canary_promotes_a_healthy_candidate(upstream: FakeUpstreamClient,
                                            flaky: FakeUpstreamClient, tmp_path: Path) -> None:
    upstream.script(default={})
    flaky.script(default={})
    config = _canary_config(upstream, flaky, tmp_path)
    with run_gateway(config, tmp_path) as gw:
        for _ in range(300):
            assert _ask(gw)[0] == 200
            if gw.services.experiments.status()[0]["status"] == "promoted":
                break
        state = gw.services.experiments.status()[0]
        assert state["status"] == "promoted" and state["share"] == 100, state
        assert [h["status"] for h in state["history"]] == ["running", "promoted"]
        assert {_ask(gw)[1]["x-seawall-experiment"] for _ in range(10)} == {"rollout=next"}
        gw.on_server(gw.services.experiments.settle())
    assert _status(config, tmp_path)["status"] == "promoted"


def test_prompt_version_arms(upstream: FakeUpstreamClient, flaky: FakeUpstreamClient,
                             tmp_path: Path) -> None:
    """An arm can give requests that name a prompt another label's version."""
    upstream.script(default={})
    experiments = {"tone": {"model": "chat", "variants": [
        {"name": "prod", "weight": 1}, {"name": "staged", "weight": 1,
                                        "prompt_label": "staging"}]}}
    with run_gateway(_config(upstream, flaky, experiments), tmp_path) as gw:
        prompts = gw.services.prompts
        prompts.push("greet", {"template": "Be brief."})
        prompts.push("greet", {"template": "Be warm and brief."}, labels=["staging"])
        client = openai.OpenAI(base_url=gw.url + "/v1", api_key="unused-on-loopback", max_retries=0)
        seen = {}
        for i in range(16):
            raw = client.chat.completions.with_raw_response.create(
                model="chat", user=f"u{i}", messages=[{"role": "user", "content": "hi"}],
                extra_body={"prompt": {"name": "greet"}})
            arm = raw.headers["x-seawall-experiment"]
            sent = upstream.calls()["requests"][-1]["messages"][0]["content"]
            seen[arm] = (raw.headers["x-seawall-prompt-version"], sent)
        assert seen == {"tone=prod": ("greet@1", "Be brief."),
                        "tone=staged": ("greet@2", "Be warm and brief.")}


# -- error rates per tenant: one tenant cannot steer a canary by failing requests --

def _tenant_key(gw: Running, tenant: str) -> str:
    import time
    import uuid

    from seawall.pipeline.stages import hash_key
    from seawall.store.base import ApiKey

    secret = "sk-sw-" + uuid.uuid4().hex
    gw.on_server(gw.services.store.create_key(ApiKey(
        id="key_" + uuid.uuid4().hex[:8], name=tenant, tenant=tenant,
        key_hash=hash_key(secret), prefix=secret[:10], rpm=None, created_at=time.time())))
    return secret


def _ask_as(gw: Running, secret: str, user: str) -> tuple[int, dict[str, str]]:
    client = openai.OpenAI(base_url=gw.url + "/v1", api_key=secret, max_retries=0, timeout=10)
    try:
        raw = client.chat.completions.with_raw_response.create(
            model="chat", user=user, messages=[{"role": "user", "content": "hello"}])
        return raw.status_code, dict(raw.headers)
    except openai.APIStatusError as e:
        return e.status_code, dict(e.response.headers)


def _tenants_config(upstream: FakeUpstreamClient, flaky: FakeUpstreamClient
                    ) -> dict[str, Any]:
    return _config(upstream, flaky, {"rollout": {
        "model": "chat", "kind": "canary",  # sticky per user (the default)
        # A shared gateway: no single tenant decides (docs/experiments.md).
        "canary": {"steps": [50, 100], "min_requests": 40, "min_tenants": 2,
                   "max_error_rate_increase": 0.05, "max_p95_ratio": 20},
        "variants": [{"name": "stable"}, {"name": "next", "model": "candidate"}]}})


def _until_judged(gw: Running, secrets: list[str]) -> dict[str, Any]:
    import time

    deadline = time.monotonic() + 60  # the breaker lets a probe through within seconds
    for i in range(2000):
        if time.monotonic() > deadline:
            break
        _ask_as(gw, secrets[i % len(secrets)], f"u{i}")
        if gw.services.experiments.status()[0]["history"]:
            break
    gw.on_server(gw.services.experiments.settle())
    return gw.services.experiments.status()[0]  # type: ignore[no-any-return]


def test_one_tenants_failing_requests_do_not_roll_back_a_healthy_canary(
        upstream: FakeUpstreamClient, flaky: FakeUpstreamClient, tmp_path: Path) -> None:
    """Mallory finds users that land on the candidate (the deployment header
    shows it) and sends requests that make it fail: by the request-level
    error rate of old that rolled the canary back; per tenant it is one of
    three tenants, and the canary goes on. Its failures also open the
    candidate's circuit breaker, so the others' requests are refused for a
    while: refused before reaching the candidate, they do not count as theirs,
    and the step waits until two tenants' requests reach it again."""
    upstream.script(default={})
    flaky.script(default={})
    with run_gateway(_tenants_config(upstream, flaky), tmp_path) as gw:
        app, ops, mallory = (_tenant_key(gw, t) for t in ("app", "ops", "mallory"))
        on_candidate = [u for u in (f"m{i}" for i in range(30))
                        if _ask_as(gw, mallory, u)[1].get("x-seawall-deployment")
                        == "flaky/fake-new"]
        assert len(on_candidate) >= 5
        for i in range(30):  # each one fails on the candidate (or meets its open breaker)
            flaky.script(default={}, queue=[{"error_status": 500}])
            assert _ask_as(gw, mallory, on_candidate[i % len(on_candidate)])[0] >= 500
        flaky.script(default={}, queue=[])  # a leftover the breaker kept from its request
        state = _until_judged(gw, [app, ops])
        assert state["status"] == "promoted", state
        judged = state["history"][0]
        assert judged["candidate"]["errors"] >= 30
        assert judged["candidate"]["error_rate"] > judged["baseline"]["error_rate"] + 0.05


def test_a_candidate_failing_for_every_tenant_is_rolled_back(
        upstream: FakeUpstreamClient, flaky: FakeUpstreamClient, tmp_path: Path) -> None:
    upstream.script(default={})
    flaky.script(default={"error_status": 500, "error_probability": 0.5})
    with run_gateway(_tenants_config(upstream, flaky), tmp_path) as gw:
        state = _until_judged(gw, [_tenant_key(gw, "app"), _tenant_key(gw, "ops")])
        assert state["status"] == "rolled_back", state
        assert state["reason"].startswith("error rate") and "of 2 tenants" in state["reason"]
