"""The admin endpoints behind the console's Experiments and Jobs pages, over
HTTP: a canary rolled back or promoted by hand (the next requests follow,
the move is saved where the CLI and a restart read it, and audited), the
refusals, and the job and batch lists paged by cursor."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from seawall.config import parse_settings
from seawall.experiments.service import OverrideRefused
from seawall.pipeline.stages import hash_key
from seawall.store.base import ApiKey
from tests.gateway import Running, run_gateway
from tests.replicas import experiment_replicas
from tests.servers import FakeUpstreamClient

MASTER = "sk-master-console-pages"
pytestmark = pytest.mark.timeout(120)


def _config(upstream: FakeUpstreamClient, tmp_path: Path) -> dict[str, Any]:
    canary = {"steps": [50, 100], "min_requests": 100_000}
    return {
        "data_dir": str(tmp_path / "data"),
        "auth": {"master_key": MASTER, "allow_anonymous_loopback": False},
        "providers": {"oa": {"type": "openai", "base_url": upstream.base_url + "/v1"}},
        "models": {m: {"provider": "oa", "model": "up-" + m} for m in ("a", "a2", "b", "b2")},
        "experiments": {
            "back": {"model": "a", "kind": "canary", "sticky": "request", "canary": canary,
                     "variants": [{"name": "old"}, {"name": "new", "model": "a2"}]},
            "forth": {"model": "b", "kind": "canary", "sticky": "request", "canary": canary,
                      "variants": [{"name": "old"}, {"name": "new", "model": "b2"}]},
            "split": {"model": "a2", "variants": [{"name": "x", "weight": 3},
                                                  {"name": "y", "weight": 1}]}},
    }


@pytest.fixture
def gw(upstream: FakeUpstreamClient, tmp_path: Path) -> Iterator[Running]:
    with run_gateway(_config(upstream, tmp_path), tmp_path) as running:
        yield running


def _client(gw: Running, secret: str = MASTER) -> httpx.Client:
    return httpx.Client(base_url=gw.url, headers={"authorization": f"Bearer {secret}"},
                        timeout=30)


def _arms(api: httpx.Client, model: str, n: int) -> set[str]:
    out = set()
    for _ in range(n):
        r = api.post("/v1/chat/completions", json={
            "model": model, "messages": [{"role": "user", "content": "hi"}]})
        assert r.status_code == 200, r.text
        out.add(r.headers["x-seawall-experiment"])
    return out


def test_rollback_and_promote_by_hand(gw: Running) -> None:
    api = _client(gw)
    listed = {e["name"]: e for e in api.get("/admin/experiments").json()["data"]}
    assert listed["back"]["status"] == "running"
    assert listed["back"]["weights"] == {"old": 50.0, "new": 50.0}
    assert listed["split"]["weights"] == {"x": 75.0, "y": 25.0}
    assert _arms(api, "a", 30) == {"back=old", "back=new"}

    r = api.post("/admin/experiments/back/rollback", json={"reason": "pager went off"})
    assert r.status_code == 200, r.text
    assert r.json()["before"]["share"] == 50 and r.json()["after"]["share"] == 0
    assert _arms(api, "a", 20) == {"back=old"}
    r = api.post("/admin/experiments/forth/promote")
    assert r.status_code == 200, r.text
    assert _arms(api, "b", 20) == {"forth=new"}

    listed = {e["name"]: e for e in api.get("/admin/experiments").json()["data"]}
    last = listed["back"]["history"][-1]
    assert last["status"] == "rolled_back" and last["by"] == "master"
    assert last["reason"] == "rolled back by hand (master): pager went off"
    assert last["baseline"]["requests"] + last["candidate"]["requests"] == 30  # the figures
    # Saved where a restart (and every other replica) reads it.
    saved, _ = gw.on_server(gw.services.store.experiment_state("back"))
    assert saved is not None and saved["status"] == "rolled_back"
    events = api.get("/admin/audit", params={"action": "experiment.*"}).json()["data"]
    assert {(e["action"], e["target"]) for e in events
            if e["action"] != "experiment.config"} == {
        ("experiment.rollback", "back"), ("experiment.promote", "forth")}

    # Refusals: nothing to move, an A/B split, an unknown name, a bad body.
    assert api.post("/admin/experiments/back/promote").status_code == 400
    assert api.post("/admin/experiments/back/rollback").status_code == 400
    assert api.post("/admin/experiments/split/rollback").status_code == 400
    assert api.post("/admin/experiments/nope/rollback").status_code == 404
    assert api.post("/admin/experiments/forth/rollback",
                    json={"reason": "x" * 501}).status_code == 400
    assert api.post("/admin/experiments/forth/rollback", json={"why": 1}).status_code == 400
    # A promoted canary may still be rolled back.
    assert api.post("/admin/experiments/forth/rollback").status_code == 200
    assert _arms(api, "b", 10) == {"forth=old"}


def test_a_restart_keeps_a_hand_rollback(upstream: FakeUpstreamClient, tmp_path: Path) -> None:
    config = _config(upstream, tmp_path)
    with run_gateway(config, tmp_path) as gw:
        assert _client(gw).post("/admin/experiments/back/rollback").status_code == 200
    with run_gateway(config, tmp_path) as gw:
        assert _arms(_client(gw), "a", 10) == {"back=old"}


def test_only_the_operator_may_move_experiments_or_list_jobs(gw: Running) -> None:
    secret = "sk-sw-" + uuid.uuid4().hex
    for role in ("app", "tenant_admin"):
        key = ApiKey(id="key_" + uuid.uuid4().hex[:8], name=role, tenant="acme",
                     key_hash=hash_key(secret + role), prefix=secret[:10], rpm=None,
                     created_at=time.time(), role=role)
        gw.on_server(gw.services.store.create_key(key))
        api = _client(gw, secret + role)
        assert api.post("/admin/experiments/back/rollback").status_code == 403
        assert api.get("/admin/experiments").status_code == 403
        assert api.get("/admin/jobs").status_code == 403
        assert api.get("/admin/batches").status_code == 403
    assert httpx.get(gw.url + "/admin/jobs", timeout=30).status_code == 401


def test_job_list_pages_by_cursor(gw: Running) -> None:
    later = time.time() + 3600
    made = [gw.on_server(gw.services.jobs.enqueue("sleep", {"seconds": 1}, tenant="acme",
                                                  run_after=later)) for _ in range(5)]
    api = _client(gw)
    seen: list[str] = []
    cursor = None
    while True:
        params: dict[str, Any] = {"limit": 2, "tenant": "acme"}
        if cursor:
            params["cursor"] = cursor
        page = api.get("/admin/jobs", params=params).json()
        assert len(page["data"]) <= 2
        assert all("payload" not in j for j in page["data"])
        seen += [j["id"] for j in page["data"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert sorted(seen) == sorted(j.id for j in made) and len(set(seen)) == 5
    assert [j["id"] for j in api.get("/admin/jobs", params={"state": "queued"}).json()[
        "data"]][:5] == seen  # newest first
    for bad in ({"limit": "0"}, {"limit": "101"}, {"state": "asleep"}, {"cursor": "x"},
                {"cursor": "1.5"}, {"tenant": "t" * 201}):
        assert api.get("/admin/jobs", params=bad).status_code == 400, bad
    batches = api.get("/admin/batches", params={"limit": 5}).json()
    assert batches["data"] == [] and batches["has_more"] is False


async def test_a_hand_rollback_on_one_replica_reaches_the_other(redis_url: str,
                                                               tmp_path: Path) -> None:
    """Made on the replica that does not hold the lease: saved with
    compare-and-set, announced, and the other replica (the decider) follows."""
    settings = parse_settings({
        "data_dir": str(tmp_path),
        "providers": {"up": {"type": "openai", "base_url": "http://127.0.0.1:9/v1"}},
        "models": {"chat": {"provider": "up", "model": "a"},
                   "candidate": {"provider": "up", "model": "b"}},
        "experiments": {"rollout": {
            "model": "chat", "kind": "canary", "canary": {"steps": [10, 50, 100]},
            "variants": [{"name": "stable"}, {"name": "next", "model": "candidate"}]}},
    }, env={})
    async with experiment_replicas(settings, tmp_path / "seawall.db",
                                   redis_url) as (first, second):
        assert first.lease.held and not second.lease.held
        moved = await second.override("rollout", "rolled_back", "by hand", "master")
        assert moved["before"]["share"] == 10 and moved["after"]["share"] == 0
        for _ in range(500):
            if first.canaries["rollout"].share == 0:
                break
            await asyncio.sleep(0.01)
        assert first.canaries["rollout"].state.status == "rolled_back"
        assert first.revisions["rollout"] == second.revisions["rollout"] == 1
        with pytest.raises(OverrideRefused, match="already rolled back"):
            await first.override("rollout", "promoted", "by hand", "master")
