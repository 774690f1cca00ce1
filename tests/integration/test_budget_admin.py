"""The spend-management surface end to end: keys and tenants budgets set,
shown and reset with the CLI (`seawall keys ...`, `seawall tenants ...`)
while a real gateway serves the official openai SDK on the same data; the
refused request's 429 says when the budget resets; the 50/80/100% marks are
counted."""

from __future__ import annotations

import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
import yaml

from seawall.keys import make_key
from tests.gateway import Running, run_gateway
from tests.servers import WebhookReceiver

MASTER = "sk-master-budget-admin-01"
TTL_S = 0.2  # how long the gateway caches keys and tenant budgets (changes from the CLI)


def config() -> dict[str, Any]:
    return {
        "auth": {"master_key": MASTER, "key_cache_ttl_s": TTL_S},
        "observe": {"traces": {"flush_interval_s": 0.01}},
        "providers": {"fake": {"type": "fake"}},
        # Each answer below costs $0.015 (tests/integration/test_limits_gateway.py).
        "models": {"echo": {"provider": "fake",
                            "price": {"input_per_mtok": 1000, "output_per_mtok": 2000}}},
    }


@pytest.fixture
def setup(tmp_path: Path) -> Iterator[tuple[Running, Path]]:
    f = tmp_path / "seawall.yaml"
    f.write_text(yaml.safe_dump({"data_dir": str(tmp_path / "data"), **config()}))
    with run_gateway(config(), tmp_path) as gw:
        yield gw, f


def cli(f: Path, *args: str, ok: bool = True) -> subprocess.CompletedProcess[str]:
    done = subprocess.run([sys.executable, "-m", "seawall.cli", *args, "--config", str(f)],
                          capture_output=True, text=True, timeout=60)
    if ok:
        assert done.returncode == 0, done.stderr
    return done


def ask(gw: Running, secret: str) -> Any:
    return openai.OpenAI(base_url=gw.url + "/v1", api_key=secret, max_retries=0)\
        .chat.completions.create(model="echo", max_tokens=10,
                                 messages=[{"role": "user", "content": "a b c d e"}])


def spend_until_refused(gw: Running, secret: str) -> tuple[int, openai.RateLimitError]:
    for n in range(20):
        try:
            ask(gw, secret)
        except openai.RateLimitError as e:
            return n, e
    raise AssertionError("never refused")


def settled(gw: Running, secret: str) -> int:
    """Requests served once the CLI's change reached the gateway (its cache)."""
    time.sleep(TTL_S + 0.1)
    return spend_until_refused(gw, secret)[0]


def test_key_budget_set_shown_reset_and_removed_with_the_cli(
        setup: tuple[Running, Path]) -> None:
    gw, f = setup
    made = cli(f, "keys", "create", "--name", "bot", "--tenant", "acme", "--budget-usd", "0.05",
               "--budget-period", "day")
    secret = made.stdout.strip()
    served, e = spend_until_refused(gw, secret)
    assert served == 2
    err = e.body if isinstance(e.body, dict) else {}
    assert e.status_code == 429 and err["type"] == "budget_exceeded"
    assert "for key 'bot'" in err["message"] and "resets at" in err["message"]
    reset = e.response.headers["x-seawall-budget-reset"]
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT00:00:00Z", reset)  # the next UTC midnight
    assert e.response.headers["x-should-retry"] == "false"
    gw.on_server(gw.services.writer.flush())
    shown = cli(f, "keys", "show", "bot").stdout
    assert "role app" in shown and "scopes: chat, embeddings, rag:read, feedback, jobs" in shown
    assert "key 'bot': $0.0300 of $0.05 per day (60%)" in shown
    # A reset forgives this period's spend: two more answers, then refused again.
    assert "spend counted from now" in cli(f, "keys", "budget", "bot", "--reset").stdout
    assert settled(gw, secret) == 2
    # A higher budget lets more through; removing it lets everything through.
    cli(f, "keys", "budget", "bot", "--usd", "0.08")
    assert settled(gw, secret) == 2  # $0.03 of the new $0.08 already spent since the reset
    assert "no budget" in cli(f, "keys", "budget", "bot", "--none").stdout
    time.sleep(TTL_S + 0.1)
    ask(gw, secret)
    assert "no budget" in cli(f, "keys", "show", "bot").stdout
    assert cli(f, "keys", "budget", "bot", ok=False).returncode == 2  # nothing to change


def test_tenant_budget_overrides_the_config_and_is_shared_by_its_keys(
        setup: tuple[Running, Path]) -> None:
    gw, f = setup
    one = cli(f, "keys", "create", "--name", "one", "--tenant", "globex").stdout.strip()
    two = cli(f, "keys", "create", "--name", "two", "--tenant", "globex").stdout.strip()
    ask(gw, one)
    assert "set with the CLI" not in cli(f, "tenants", "list").stdout
    out = cli(f, "tenants", "budget", "globex", "--usd", "0.05", "--period", "month").stdout
    assert "tenant globex: $0.05 per month" in out
    time.sleep(TTL_S + 0.1)
    ask(gw, two)  # $0.03 of the tenant's $0.05 (the first answer, before the budget, counts)
    with pytest.raises(openai.RateLimitError) as e:
        ask(gw, one)
    assert "for tenant 'globex'" in e.value.message
    gw.on_server(gw.services.writer.flush())
    shown = cli(f, "tenants", "show", "globex").stdout
    assert "2 active keys (one, two)" in shown
    assert "tenant 'globex': $0.0300 of $0.05 per month" in shown
    assert "globex" in cli(f, "tenants", "list").stdout
    cli(f, "tenants", "budget", "globex", "--reset")
    assert settled(gw, one) == 2
    cli(f, "tenants", "budget", "globex", "--none")
    time.sleep(TTL_S + 0.1)
    ask(gw, two)
    assert "no budget" in cli(f, "tenants", "show", "globex").stdout


def test_soft_thresholds_are_counted_and_alerted_once_each(tmp_path: Path) -> None:
    # Estimates below the real cost (a 1-token completion allowance, no
    # max_tokens), so the spend itself reaches the limit: $0.015 an answer.
    hook = WebhookReceiver()
    cheap = {**config(), "limits": {"completion_allowance": 1},
             "alerts": {"backoff_s": 0.05, "webhooks": [
                 {"url": hook.url + "/generic", "format": "generic"}]}}
    with hook, run_gateway(cheap, tmp_path) as gw:
        key, secret = make_key("marks", "acme", budget_usd=0.045, budget_period="month")
        gw.on_server(gw.services.store.create_key(key))
        client = openai.OpenAI(base_url=gw.url + "/v1", api_key=secret, max_retries=0)
        for _ in range(3):  # 33%, 67% (past 50%), 100% (past 80% and 100%)
            client.chat.completions.create(
                model="echo", messages=[{"role": "user", "content": "a b c d e"}])
        with pytest.raises(openai.RateLimitError):
            client.chat.completions.create(
                model="echo", messages=[{"role": "user", "content": "a b c d e"}])
        metrics = httpx.get(gw.url + "/metrics", headers={"authorization": f"Bearer {MASTER}"},
                            timeout=30).text
    counts = dict(re.findall(
        r'^seawall_budget_thresholds_total\{kind="key",threshold="(\d+%)"\} (\S+)$', metrics,
        re.M))
    assert counts == {"50%": "1.0", "80%": "1.0", "100%": "1.0"}
    # The webhook got one alert per crossing: the highest one of each request
    # (the third passed 80% and 100% together), the last one a page.
    deadline = time.monotonic() + 10
    while len(hook.alerts("/generic")) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    got = [b["alert"] for b in hook.alerts("/generic")]
    assert [(a["values"]["threshold"], a["severity"], a["source"]) for a in got] == [
        (0.5, "ticket", "budget"), (1.0, "page", "budget")]
    assert all(a["labels"]["budget"] == f"key:{key.id}" for a in got)
    assert "budget_exceeded" in got[1]["summary"] and secret not in str(got)


def test_rotation_and_scopes_from_the_cli(setup: tuple[Running, Path]) -> None:
    gw, f = setup
    refused = cli(f, "keys", "create", "--name", "default", ok=False)
    assert refused.returncode == 2 and "reserved" in refused.stderr
    first = cli(f, "keys", "create", "--name", "svc", "--tenant", "acme", "--models", "echo",
                "--expires", "30d").stdout.strip()
    assert ask(gw, first)
    rotated = cli(f, "keys", "rotate", "svc", "--grace", "1h")
    second = rotated.stdout.strip()
    assert second.startswith("sk-sw-") and second != first
    assert "the old secret works until" in rotated.stderr
    assert ask(gw, first) and ask(gw, second)
    shown = cli(f, "keys", "show", "svc").stdout
    assert "models: echo" in shown and "previous secret valid until" in shown
    cli(f, "keys", "rotate", "svc", "--grace", "0s")
    time.sleep(TTL_S + 0.1)
    with pytest.raises(openai.AuthenticationError):
        ask(gw, second)
