"""Prompts through the real gateway: the official openai SDK in front, the fake
upstream behind (which shows the body it really received), the CLI in
another process beside the running server, and the cache scoped by the
prompt version.

Written against the proposed wiring (PromptStage after limits, before
retrieve and cache; ``ChatCompletionRequest.prompt``; the
``x-seawall-prompt-version`` response header; ``seawall prompts`` in
seawall.cli); skipped until that wiring lands.
"""

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
from tests.servers import FakeUpstreamClient

pytestmark = pytest.mark.timeout(120)

MASTER = "sk-master-prompts-test"
FIXTURES = Path(__file__).parent.parent / "fixtures" / "prompts"
CLI = [sys.executable, "-m", "seawall.cli", "prompts"]
HEADER = "x-seawall-prompt-version"
ANA = {"customer_name": "Ana", "product": "Seawall"}


def _config(upstream: FakeUpstreamClient, data_dir: Path) -> dict[str, Any]:
    return {
        "data_dir": str(data_dir),
        "auth": {"master_key": MASTER, "allow_anonymous_loopback": False},
        "observe": {"traces": {"flush_interval_s": 0.01}},
        "cache": {"enabled": True, "semantic": {"enabled": False}},
        "providers": {"f": {"type": "openai", "base_url": upstream.base_url + "/v1"}},
        "models": {"m": {"provider": "f", "model": "fake-1"}},
    }


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("prompts") / "data"


@pytest.fixture(scope="module")
def config(upstream: FakeUpstreamClient, data_dir: Path) -> Path:
    path = data_dir.parent / "seawall.yaml"
    path.write_text(yaml.safe_dump(_config(upstream, data_dir)))
    return path


def cli(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """``seawall prompts ...`` in its own process, as an operator would run it."""
    run = subprocess.run([*CLI, *args, "-c", str(config)], capture_output=True, text=True,
                         timeout=120, cwd=config.parent,
                         env={**os.environ, "SEAWALL_CONFIG": "", "SEAWALL_ACTOR": "oncall"})
    assert run.returncode == 0, run.stderr
    return run


@pytest.fixture(scope="module")
def gw(upstream: FakeUpstreamClient, data_dir: Path, config: Path) -> Iterator[Running]:
    cli(config, "push", str(FIXTURES))  # support-answer@1 and ticket-triage@1, production
    with run_gateway(_config(upstream, data_dir), data_dir.parent) as running:
        yield running


@pytest.fixture(autouse=True)
def fresh(upstream: FakeUpstreamClient) -> None:
    upstream.reset()
    upstream.script(default={})  # echo the last user message


def sdk(gw: Running) -> openai.OpenAI:
    return openai.OpenAI(base_url=gw.url + "/v1", api_key=MASTER, max_retries=0, timeout=30)


def ask(gw: Running, question: str, prompt: dict[str, Any], model: str = "m",
        **kw: Any) -> Any:
    """The raw response (headers) of a chat request that names a prompt."""
    return sdk(gw).chat.completions.with_raw_response.create(
        model=model, messages=[{"role": "user", "content": question}],
        extra_body={"prompt": prompt}, **kw)


def sent(upstream: FakeUpstreamClient) -> dict[str, Any]:
    body: dict[str, Any] = upstream.calls()["requests"][-1]
    return body


def settle(gw: Running) -> None:
    gw.on_server(gw.services.cache.settle())


def test_a_request_naming_a_prompt_sends_its_rendered_messages(
        gw: Running, upstream: FakeUpstreamClient) -> None:
    raw = ask(gw, "Where is my order?", {"name": "support-answer", "variables": ANA},
              max_tokens=50)
    assert raw.headers[HEADER] == "support-answer@1"
    assert raw.parse().choices[0].message.content == "Where is my order?"
    body = sent(upstream)
    assert [m["role"] for m in body["messages"]] == ["system", "assistant", "user"]
    system = body["messages"][0]["content"]
    assert system.startswith("You are the support assistant for Seawall.")
    assert "Address the customer as Ana and keep a friendly tone." in system  # a default
    assert body["messages"][1]["content"] == \
        "Hello Ana, how can I help with Seawall today?"
    assert body["temperature"] == 0.2  # the prompt's, the request set none
    assert body["max_tokens"] == 50  # the request's wins over the prompt's 300
    assert "prompt" not in body  # ours: never sent upstream
    record = next(t for t in gw.traces(10) if t["trace_id"] == raw.headers["x-request-id"])
    assert json.loads(record["input"])[0]["content"] == system  # the exact prompt sent
    assert record["prompt_version"] == raw.headers["x-seawall-prompt-version"]
    assert record["prompt_version"].startswith("support-answer@")


def test_a_streamed_request_and_a_markdown_prompt(gw: Running,
                                                  upstream: FakeUpstreamClient) -> None:
    stream = sdk(gw).chat.completions.create(
        model="m", stream=True, messages=[{"role": "user", "content": "My card was charged"}],
        extra_body={"prompt": {"name": "ticket-triage"}})
    assert "".join(c.choices[0].delta.content or "" for c in stream if c.choices) == \
        "My card was charged"
    body = sent(upstream)
    assert body["messages"][0]["content"].splitlines()[1:4] == ["- billing", "- bugs",
                                                                "- other"]
    assert body["temperature"] == 0


def test_model_prompt_uses_the_prompt_versions_model(gw: Running,
                                                     upstream: FakeUpstreamClient) -> None:
    raw = ask(gw, "hello", {"name": "support-answer", "variables": ANA}, model="prompt")
    assert raw.headers[HEADER] == "support-answer@1"
    assert sent(upstream)["model"] == "fake-1"  # model m's deployment


def test_a_cli_rollback_changes_what_the_next_request_uses(
        gw: Running, upstream: FakeUpstreamClient, config: Path, tmp_path: Path) -> None:
    ref = {"name": "support-answer", "variables": ANA}
    first = ask(gw, "Can I get a refund?", ref)
    assert (first.headers[HEADER], first.headers["x-seawall-cache"]) == \
        ("support-answer@1", "miss")
    settle(gw)

    v2 = tmp_path / "support-answer.yaml"
    v2.write_text((FIXTURES / "support-answer.yaml").read_text()
                  .replace("You are the support assistant", "You are the refunds expert"))
    assert "support-answer: v2 new (production → v2)" in \
        cli(config, "push", str(v2), "--label", "production").stdout
    second = ask(gw, "Can I get a refund?", ref)
    assert (second.headers[HEADER], second.headers["x-seawall-cache"]) == \
        ("support-answer@2", "miss")  # a new version never reuses the old one's answers
    assert "refunds expert" in sent(upstream)["messages"][0]["content"]

    assert "production v2 → v1" in cli(config, "rollback", "support-answer").stdout
    third = ask(gw, "Can I get a refund?", ref)
    assert third.headers[HEADER] == "support-answer@1"
    assert third.headers["x-seawall-cache"] == "hit"  # made from v1: still right for v1
    fourth = ask(gw, "Is shipping free?", ref)
    assert (fourth.headers[HEADER], fourth.headers["x-seawall-cache"]) == \
        ("support-answer@1", "miss")
    assert sent(upstream)["messages"][0]["content"].startswith(
        "You are the support assistant for Seawall.")
    history = cli(config, "history", "support-answer").stdout
    assert "rollback" in history and "oncall" in history

    staged = ask(gw, "Is shipping free?", {**ref, "version": 2})
    assert staged.headers[HEADER] == "support-answer@2"


def test_a_missing_variable_is_a_400_naming_it(gw: Running,
                                               upstream: FakeUpstreamClient) -> None:
    with pytest.raises(openai.BadRequestError) as e:
        ask(gw, "hi", {"name": "support-answer", "variables": {"product": "Seawall"}})
    err: dict[str, Any] = e.value.body  # type: ignore[assignment]
    assert err["code"] == "prompt_variable_missing"
    assert "customer_name" in err["message"]
    assert err["param"] == "prompt.variables.customer_name"
    assert upstream.calls()["requests"] == []


def test_unknown_prompts_labels_and_versions_are_404(gw: Running) -> None:
    for ref in ({"name": "nope"}, {"name": "support-answer", "label": "canary"},
                {"name": "support-answer", "version": 99}):
        with pytest.raises(openai.NotFoundError) as e:
            ask(gw, "hi", {**ref, "variables": ANA})
        assert e.value.body["code"] == "prompt_not_found"  # type: ignore[index]
    with pytest.raises(openai.BadRequestError) as bad:
        ask(gw, "hi", {"name": "support-answer", "label": "x", "version": 1})
    assert "not both" in bad.value.body["message"]  # type: ignore[index]
