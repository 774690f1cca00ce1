"""Two gateways on one Redis act as one: a key revoked through one (HTTP admin
route or the CLI) is refused by the other within a second or so, an upstream
429's cool-down reaches both, and of two canary deciders only the lease
holder moves the rollout while the other follows its notice."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
import yaml

from seawall.config import parse_settings
from seawall.experiments.service import Assignment, Experiments
from seawall.observe.metrics import Metrics
from seawall.pipeline.context import RequestContext
from seawall.pipeline.stages import hash_key
from seawall.providers.registry import ModelRegistry
from seawall.store.base import ApiKey
from seawall.store.sqlite import SqliteStore
from tests.gateway import Running, run_gateway
from tests.replicas import experiment_replicas
from tests.servers import FakeUpstreamClient

pytestmark = pytest.mark.timeout(120)

MASTER = "sk-master-test"
# Without a notice a replica would honour a revoked key this long: far past the
# bound below, so these tests fail if notices do not arrive.
SLOW_TTL_S = 300.0
BOUND_S = 3.0  # generous on a shared machine; the design bound is 1 s (measured below)


def _config(upstream: FakeUpstreamClient, redis_url: str, data_dir: Path,
            prefix: str) -> dict[str, Any]:
    return {
        "data_dir": str(data_dir),
        "auth": {"master_key": MASTER, "key_cache_ttl_s": SLOW_TTL_S},
        "redis": {"url": redis_url, "prefix": prefix},
        "resilience": {"retries": {"max_attempts": 1}},
        "providers": {"up": {"type": "openai", "base_url": upstream.base_url + "/v1"}},
        "models": {"chat": {"provider": "up", "model": "fake-a"}},
    }


def _ask(gw: Running, key: str) -> int:
    client = openai.OpenAI(base_url=gw.url + "/v1", api_key=key, max_retries=0, timeout=10)
    try:
        return client.chat.completions.with_raw_response.create(
            model="chat", messages=[{"role": "user", "content": "hi"}]).status_code
    except openai.APIStatusError as e:
        return e.status_code


def _make_key(gw: Running) -> tuple[str, str]:
    secret = "sk-sw-" + uuid.uuid4().hex
    key = ApiKey(id="key_" + uuid.uuid4().hex[:12], name="team", tenant="team",
                 key_hash=hash_key(secret), prefix=secret[:10], rpm=None,
                 created_at=time.time())
    gw.on_server(gw.services.store.create_key(key))
    return key.id, secret


def _refused_within(gw: Running, secret: str, bound_s: float) -> float | None:
    """Seconds until ``gw`` refuses ``secret`` (None: not within the bound)."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < bound_s:
        if _ask(gw, secret) == 401:
            return time.monotonic() - t0
        time.sleep(0.02)
    return None


def _pair(upstream: FakeUpstreamClient, redis_url: str,
          tmp_path: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """Two replicas' configs: one Redis, one SQLite database (reads see each other's writes)."""
    prefix = f"t{uuid.uuid4().hex[:8]}:"
    config = _config(upstream, redis_url, tmp_path / "data", prefix)
    return config, dict(config)


def test_a_key_revoked_through_one_replica_is_refused_by_the_other(
        upstream: FakeUpstreamClient, redis_url: str, tmp_path: Path) -> None:
    upstream.script(default={})
    one, two = _pair(upstream, redis_url, tmp_path)
    with run_gateway(one, tmp_path) as gw1, run_gateway(two, tmp_path) as gw2:
        key_id, secret = _make_key(gw1)
        assert _ask(gw1, secret) == 200 and _ask(gw2, secret) == 200  # both cache the key
        r = httpx.post(f"{gw1.url}/admin/keys/{key_id}/revoke",
                       headers={"authorization": f"Bearer {MASTER}"})
        assert r.status_code == 200 and r.json()["id"] == key_id
        assert _ask(gw1, secret) == 401  # the replica that revoked: at once
        took = _refused_within(gw2, secret, BOUND_S)
        assert took is not None, f"replica 2 still honours the key after {BOUND_S}s"
        print(f"replica 2 refused the revoked key after {took * 1000:.0f} ms")
        # An app key may not revoke (403 naming the scope); an unknown key is a 404.
        _, other = _make_key(gw1)
        r = httpx.post(f"{gw1.url}/admin/keys/{key_id}/revoke",
                       headers={"authorization": f"Bearer {other}"})
        assert r.status_code == 403 and "'admin:keys'" in r.text
        r = httpx.post(f"{gw1.url}/admin/keys/{key_id}/revoke",
                       headers={"authorization": f"Bearer {MASTER}"})
        assert r.status_code == 404  # already revoked
        assert _ask(gw2, other) == 200


def test_a_key_revoked_with_the_cli_is_refused_by_every_replica(
        upstream: FakeUpstreamClient, redis_url: str, tmp_path: Path) -> None:
    upstream.script(default={})
    one, two = _pair(upstream, redis_url, tmp_path)
    with run_gateway(one, tmp_path) as gw1, run_gateway(two, tmp_path) as gw2:
        key_id, secret = _make_key(gw1)
        assert _ask(gw1, secret) == 200 and _ask(gw2, secret) == 200
        path = tmp_path / "seawall.yaml"
        path.write_text(yaml.safe_dump(one))
        out = subprocess.run([sys.executable, "-m", "seawall.cli", "keys", "revoke", key_id,
                              "-c", str(path)], capture_output=True, text=True, timeout=60,
                             env={**os.environ, "SEAWALL_CONFIG": ""})
        assert out.returncode == 0, out.stderr
        assert "servers refuse it now" in out.stdout
        for gw in (gw1, gw2):
            assert _refused_within(gw, secret, BOUND_S) is not None


def test_a_key_rotated_through_one_replica_drops_the_old_secret_on_the_other(
        upstream: FakeUpstreamClient, redis_url: str, tmp_path: Path) -> None:
    upstream.script(default={})
    one, two = _pair(upstream, redis_url, tmp_path)
    with run_gateway(one, tmp_path) as gw1, run_gateway(two, tmp_path) as gw2:
        key_id, secret = _make_key(gw1)
        assert _ask(gw1, secret) == 200 and _ask(gw2, secret) == 200  # both cache the key
        r = httpx.post(f"{gw1.url}/admin/keys/{key_id}/rotate", json={"grace": "0s"},
                       headers={"authorization": f"Bearer {MASTER}"})
        assert r.status_code == 200
        assert _ask(gw1, secret) == 401  # the replica that rotated: at once
        assert _refused_within(gw2, secret, BOUND_S) is not None, "old secret still honoured"
        assert _ask(gw2, r.json()["secret"]) == 200


def test_a_tenant_budget_set_with_the_cli_applies_on_every_replica(
        upstream: FakeUpstreamClient, redis_url: str, tmp_path: Path) -> None:
    upstream.script(default={})
    one, two = _pair(upstream, redis_url, tmp_path)
    with run_gateway(one, tmp_path) as gw1, run_gateway(two, tmp_path) as gw2:
        _, secret = _make_key(gw1)  # tenant "team"
        assert _ask(gw1, secret) == 200 and _ask(gw2, secret) == 200
        path = tmp_path / "seawall.yaml"
        path.write_text(yaml.safe_dump(one))
        out = subprocess.run([sys.executable, "-m", "seawall.cli", "tenants", "budget", "team",
                              "--usd", "0", "-c", str(path)], capture_output=True, text=True,
                             timeout=60, env={**os.environ, "SEAWALL_CONFIG": ""})
        assert out.returncode == 0, out.stderr
        assert "servers apply it now" in out.stdout
        for gw in (gw1, gw2):  # a $0 budget: spent from the first request
            t0 = time.monotonic()
            while _ask(gw, secret) != 429 and time.monotonic() - t0 < BOUND_S:
                time.sleep(0.02)
            assert _ask(gw, secret) == 429


def test_an_upstream_429_cools_the_deployment_down_on_every_replica(
        upstream: FakeUpstreamClient, redis_url: str, tmp_path: Path) -> None:
    upstream.script(default={})
    one, two = _pair(upstream, redis_url, tmp_path)
    with run_gateway(one, tmp_path) as gw1, run_gateway(two, tmp_path) as gw2:
        _, secret = _make_key(gw1)
        upstream.script(queue=[{"error_status": 429, "retry_after_s": 30}])
        assert _ask(gw1, secret) == 429
        t0 = time.monotonic()
        while time.monotonic() - t0 < BOUND_S:
            health = gw2.services.registry.health()["up/fake-a"]
            if "cooling_down_s" in health:
                break
            time.sleep(0.02)
        assert 20 < float(health.get("cooling_down_s", 0)) <= 30, health  # type: ignore[arg-type]
        calls = upstream.calls()
        # Replica 2 does not even try: the upstream asked everyone to wait.
        assert _ask(gw2, secret) in (429, 503)
        assert upstream.calls()["calls"] == calls["calls"]
    # A replica started later learns it from Redis.
    with run_gateway(two, tmp_path / "three") as gw3:
        health = gw3.services.registry.health()["up/fake-a"]
        assert float(health.get("cooling_down_s", 0)) > 20, health  # type: ignore[arg-type]


# -- the canary: every replica's outcomes, one decider at a time --

def _outcome(exp: Experiments, arm: int, status: int = 200, ms: float = 100.0) -> None:
    ctx = RequestContext(endpoint="chat.completions", started_ns=0,
                         finished_ns=int(ms * 1e6), status=status)
    ctx.experiment = Assignment("rollout", arm, ("stable", "next")[arm])
    exp.observe(ctx)


async def test_the_lease_holder_judges_every_replicas_outcomes_and_the_other_follows(
        redis_url: str, tmp_path: Path) -> None:
    settings = parse_settings({
        "data_dir": str(tmp_path),
        "providers": {"up": {"type": "openai", "base_url": "http://127.0.0.1:9/v1"}},
        "models": {"chat": {"provider": "up", "model": "a"},
                   "candidate": {"provider": "up", "model": "b"}},
        "experiments": {"rollout": {
            "model": "chat", "kind": "canary",
            "canary": {"steps": [10, 50, 100], "min_requests": 6, "max_p95_ratio": 1.5},
            "variants": [{"name": "stable"}, {"name": "next", "model": "candidate"}]}},
    }, env={})
    async with experiment_replicas(settings, tmp_path / "seawall.db",
                                   redis_url) as (first, second):
        assert first.shared is not None and second.shared is not None
        assert first.lease.held and not second.lease.held
        # Each replica sees half of what a step needs; neither alone could judge.
        for exp in (second, first):
            for arm in (0, 1):
                for _ in range(3):
                    _outcome(exp, arm)
        await second.shared.round()  # hands its counts in; not the holder: no verdict
        assert second.canaries["rollout"].share == 10 and not second._unsaved
        await first.shared.round()
        await first.settle()
        assert first.canaries["rollout"].share == 50 and first.revisions["rollout"] == 1
        judged = first.canaries["rollout"].state.history[-1]
        assert judged["candidate"]["requests"] == 6 and judged["baseline"]["requests"] == 6
        # The other replica follows the notice: same step, same revision.
        follower = second.canaries["rollout"]
        for _ in range(500):
            if follower.share == 50:
                break
            await asyncio.sleep(0.01)
        assert follower.share == 50 and second.revisions["rollout"] == 1
        assert len(follower.state.history) == 1
        # A stale writer (old revision) cannot overwrite: compare-and-set.
        assert await second.store.save_experiment_state("rollout", {}, expect_revision=0) is None
        # The holder leaves (its counts handed in, the lease let go); the other decides now.
        for arm in (0, 1):
            for _ in range(3):
                _outcome(first, arm, ms=100.0 if arm == 0 else 400.0)
        await first.close()
        assert await second.lease.renew()  # type: ignore[attr-defined]
        for arm in (0, 1):
            for _ in range(3):
                _outcome(second, arm, ms=100.0 if arm == 0 else 400.0)
        await second.shared.round()
        await second.settle()
        assert follower.state.status == "rolled_back", follower.state
        assert "p95 latency" in (follower.state.reason or "")
        assert second.revisions["rollout"] == 2
        assert follower.state.history[-1]["candidate"]["requests"] == 6


async def test_a_canary_move_is_stored_once_the_store_is_back(tmp_path: Path) -> None:
    """One process, no Redis: a decision taken while the store is down is
    retried until stored, not lost."""
    settings = parse_settings({
        "data_dir": str(tmp_path),
        "providers": {"up": {"type": "openai", "base_url": "http://127.0.0.1:9/v1"}},
        "models": {"chat": {"provider": "up", "model": "a"},
                   "candidate": {"provider": "up", "model": "b"}},
        "experiments": {"rollout": {
            "model": "chat", "kind": "canary", "canary": {"steps": [10, 50, 100],
                                                          "min_requests": 3},
            "variants": [{"name": "stable"}, {"name": "next", "model": "candidate"}]}},
    }, env={})
    store = SqliteStore(tmp_path / "seawall.db")
    await store.open()
    exp = Experiments(settings, ModelRegistry(settings), store, Metrics())
    await exp.start()
    try:
        await store.close()  # the store goes away
        for arm in (0, 1):
            for _ in range(3):
                _outcome(exp, arm)
        assert exp.canaries["rollout"].share == 50
        await asyncio.sleep(0.2)
        assert exp.revisions["rollout"] == 0 and "rollout" in exp._unsaved
        await store.open()  # back: the retry stores it
        await asyncio.wait_for(exp.settle(), 10)
        assert exp.revisions["rollout"] == 1 and not exp._unsaved
        saved, revision = await store.experiment_state("rollout")
        assert revision == 1 and saved is not None and saved["step"] == 1
    finally:
        await exp.close()
        await store.close()
