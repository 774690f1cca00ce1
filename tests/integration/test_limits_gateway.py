"""Budgets and token limits through the real gateway, with the official SDK:
embedded (per process) and shared through Redis by two gateways."""

from __future__ import annotations

import contextlib
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import openai
import pytest
import yaml

from seawall.pipeline.stages import VIRTUAL_KEY_PREFIX, hash_key
from seawall.store.base import ApiKey
from tests.gateway import Running, run_gateway
from tests.services import RedisServer

MASTER = "sk-master-limits-0001"
SECRET = VIRTUAL_KEY_PREFIX + "budget-test-secret-000000000001"


def config(redis_url: str | None = None) -> dict[str, Any]:
    return {
        "auth": {"master_key": MASTER},
        "observe": {"traces": {"flush_interval_s": 0.01}},
        "providers": {"fake": {"type": "fake"}},
        # $0.001 a prompt token, $0.002 a completion token: each answer below
        # (the fake echoes "a b c d e") costs $0.015.
        "models": {"echo": {"provider": "fake",
                            "price": {"input_per_mtok": 1000, "output_per_mtok": 2000}}},
        # A generous timeout: a loaded test machine must not look like an outage.
        "redis": {"url": redis_url, "timeout_s": 2.0},
    }


def add_key(gw: Running, **limits: Any) -> openai.OpenAI:
    key = ApiKey(id="key_budget", name="budgeted", tenant="acme", key_hash=hash_key(SECRET),
                 prefix=SECRET[:10], rpm=limits.pop("rpm", None), created_at=time.time(),
                 **limits)
    gw.on_server(gw.services.store.create_key(key))
    return openai.OpenAI(base_url=gw.url + "/v1", api_key=SECRET)  # default retries


def ask(client: openai.OpenAI) -> Any:
    return client.chat.completions.create(
        model="echo", max_tokens=10, messages=[{"role": "user", "content": "a b c d e"}])


def spend_until_refused(client: openai.OpenAI) -> tuple[int, openai.RateLimitError]:
    for n in range(20):
        try:
            ask(client)
        except openai.RateLimitError as e:
            return n, e
    raise AssertionError("never refused")


def check_refusal(e: openai.RateLimitError, period: str) -> None:
    err = e.body if isinstance(e.body, dict) else {}
    assert e.code == "budget_exceeded" and err.get("type") == "budget_exceeded"
    assert f"$0.05 per {period} for key 'budgeted'" in err["message"]
    assert "resets at" in err["message"]
    r = e.response
    assert r.headers["x-should-retry"] == "false"
    assert 60 < int(r.headers["retry-after"]) <= (86_400 if period == "day" else 31 * 86_400)


def spent(gw: Running) -> float:
    rows = gw.traces(200)
    return sum(r.get("cost_usd") or 0.0 for r in rows if r.get("key_id") == "key_budget")


def test_a_spent_budget_is_refused_and_the_sdk_does_not_retry(tmp_path: Path) -> None:
    with run_gateway(config(), tmp_path) as gw:
        client = add_key(gw, budget_usd=0.05, budget_period="day")
        allowed, e = spend_until_refused(client)
        assert allowed == 2  # $0.015 each; the third's estimate ($0.031) would pass $0.05
        check_refusal(e, "day")
        assert spent(gw) == pytest.approx(0.03)
        refused = [r for r in gw.traces(200) if r.get("error_code") == "budget_exceeded"]
        assert len(refused) == 1  # x-should-retry: false, so no retries by the SDK
        assert refused[0]["status"] == 429


def test_an_embedded_budget_survives_a_restart(tmp_path: Path) -> None:
    with run_gateway(config(), tmp_path) as gw:
        client = add_key(gw, budget_usd=0.05, budget_period="month")
        spend_until_refused(client)
    f = tmp_path / "seawall.yaml"
    f.write_text(yaml.safe_dump({"data_dir": str(tmp_path / "data"), **config()}))
    shown = subprocess.run([sys.executable, "-m", "seawall.cli", "keys", "spend", "budgeted",
                            "--config", str(f)], capture_output=True, text=True, timeout=60)
    assert shown.returncode == 0, shown.stderr
    assert "key budgeted: $0.0300 of $0.05 spent in " in shown.stdout
    with run_gateway(config(), tmp_path) as gw:  # the same data: the key and its records
        client = openai.OpenAI(base_url=gw.url + "/v1", api_key=SECRET, max_retries=0)
        with pytest.raises(openai.RateLimitError) as e:
            ask(client)
        check_refusal(e.value, "month")
        assert "$0.0300 spent" in str(e.value)


def test_tokens_per_minute_through_the_gateway(tmp_path: Path) -> None:
    with run_gateway(config(), tmp_path) as gw:
        client = add_key(gw, tpm=25)
        ask(client)  # ~11 estimated, 10 real
        ask(client)  # 20 of 25
        with pytest.raises(openai.RateLimitError) as e:
            ask(openai.OpenAI(base_url=gw.url + "/v1", api_key=SECRET, max_retries=0))
        assert e.value.code == "rate_limit_exceeded"
        assert "25 tokens per minute reached for this key" in str(e.value)


def test_two_gateways_share_one_budget_through_redis(tmp_path: Path, redis_url: str) -> None:
    with contextlib.ExitStack() as stack:
        one = stack.enter_context(run_gateway(config(redis_url), tmp_path / "one"))
        two = stack.enter_context(run_gateway(config(redis_url), tmp_path / "two"))
        first, second = (add_key(gw, budget_usd=0.05, budget_period="month")
                         for gw in (one, two))
        ask(first)
        ask(second)  # $0.03 spent in all
        for client in (first, second):
            with pytest.raises(openai.RateLimitError) as e:
                ask(client)
            check_refusal(e.value, "month")
        assert spent(one) + spent(two) == pytest.approx(0.03)
    f = tmp_path / "one" / "seawall.yaml"
    f.write_text(yaml.safe_dump({"data_dir": str(tmp_path / "one" / "data"),
                                 **config(redis_url)}))
    shown = subprocess.run([sys.executable, "-m", "seawall.cli", "keys", "spend", "budgeted",
                            "--config", str(f)], capture_output=True, text=True, timeout=60)
    assert shown.returncode == 0, shown.stderr
    assert "key budgeted: $0.0300 of $0.05 spent in " in shown.stdout
    assert "($0.0000 held by requests in flight)" in shown.stdout


def test_concurrent_requests_on_two_gateways_never_pass_the_budget(
        tmp_path: Path, redis_url: str) -> None:
    """With max_tokens every estimate is above the real cost, so however the
    requests interleave over the replicas, spend stays within the budget."""
    from concurrent.futures import ThreadPoolExecutor

    with contextlib.ExitStack() as stack:
        gws = [stack.enter_context(run_gateway(config(redis_url), tmp_path / name))
               for name in ("one", "two")]
        clients = [add_key(gw, budget_usd=0.1, budget_period="day").with_options(max_retries=0)
                   for gw in gws]

        def one(i: int) -> str:
            try:
                ask(clients[i % 2])
                return "ok"
            except openai.RateLimitError as e:
                return str(e.code)

        with ThreadPoolExecutor(8) as pool:
            outcomes = list(pool.map(one, range(24)))
        assert set(outcomes) == {"ok", "budget_exceeded"}
        assert 3 <= outcomes.count("ok") <= 6  # $0.015 each; the last ones' estimates fit
        total = spent(gws[0]) + spent(gws[1])
        assert total == pytest.approx(0.015 * outcomes.count("ok")) and total <= 0.1


def test_two_gateways_share_one_rate_limit_through_redis(tmp_path: Path,
                                                         redis_url: str) -> None:
    with contextlib.ExitStack() as stack:
        gws = [stack.enter_context(run_gateway(config(redis_url), tmp_path / name))
               for name in ("one", "two")]
        clients = [add_key(gw, rpm=10).with_options(max_retries=0) for gw in gws]
        ok = refused = 0
        for i in range(16):
            try:
                ask(clients[i % 2])
                ok += 1
            except openai.RateLimitError as e:
                assert "10 requests per minute reached for this key" in str(e)
                refused += 1
        assert (ok, refused) == (10, 6)  # one limit, not 10 per gateway


def test_redis_down_with_fail_closed_refuses_limited_requests_with_503(
        tmp_path: Path, redis_server: RedisServer, redis_url: str) -> None:
    cfg = config(redis_url)
    cfg["redis"] = {"url": redis_url, "fail_open": False, "retry_after_s": 0.5}
    with run_gateway(cfg, tmp_path) as gw:
        limited = add_key(gw, rpm=100).with_options(max_retries=0)
        master = openai.OpenAI(base_url=gw.url + "/v1", api_key=MASTER, max_retries=0)
        ask(limited)
        redis_server.stop()
        try:
            with pytest.raises(openai.InternalServerError) as e:
                ask(limited)
            assert e.value.status_code == 503 and e.value.code == "limits_unavailable"
            assert e.value.response.headers["retry-after"] == "1"
            ask(master)  # no limit, no budget: not affected
        finally:
            redis_server.start_again()
        time.sleep(0.6)  # redis.retry_after_s
        ask(limited)


def test_keys_create_and_list_show_limits(tmp_path: Path) -> None:
    f = tmp_path / "seawall.yaml"
    f.write_text(yaml.safe_dump({"data_dir": str(tmp_path / "data"), **config()}))

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "seawall.cli", *args, "--config", str(f)],
                              capture_output=True, text=True, timeout=60)

    made = cli("keys", "create", "--name", "ci", "--tpm", "5000", "--budget-usd", "50",
               "--budget-period", "month")
    assert made.returncode == 0, made.stderr
    assert "5000 tpm" in made.stderr and "budget $50/month" in made.stderr
    listed = cli("keys", "list")
    row = next(line for line in listed.stdout.splitlines() if " ci " in line).split()
    assert row[7:9] == ["5000", "$50/month"]
    bad = cli("keys", "create", "--name", "x", "--budget-period", "week")
    assert bad.returncode != 0 and "week" in bad.stderr
