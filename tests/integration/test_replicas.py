"""Three real ``seawall serve`` replicas on one Postgres and one Redis.

The distributed deployment as an operator runs it: separate processes, each
with its own data_dir (journal), the same shared store and Redis, the fake
upstream, and the official ``openai`` SDK as the client. Each test checks one
promise of docs/scaling.md: what one replica does, every replica sees.
"""

from __future__ import annotations

import concurrent.futures
import json
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import openai
import psycopg
import pytest

from tests.servers import FakeUpstreamClient, serve_process
from tests.services import PostgresServer, RedisServer, create_database

MASTER = "sk-master-replicas"
REPLICAS = 3


@dataclass
class Cluster:
    db_url: str
    redis_url: str
    root: Path
    upstream: FakeUpstreamClient
    urls: list[str] = field(default_factory=lambda: [""] * REPLICAS)
    procs: list[Any] = field(default_factory=lambda: [None] * REPLICAS)
    confs: list[Path] = field(default_factory=lambda: [Path()] * REPLICAS)

    def config(self) -> dict[str, Any]:
        return {
            "store": {"kind": "postgres", "url": self.db_url},
            "redis": {"url": self.redis_url, "timeout_s": 0.5, "retry_after_s": 0.5},
            "auth": {"master_key": MASTER, "allow_anonymous_loopback": False,
                     "stale_key_s": 600},
            # Every record on disk as its request finishes: a kill -9 loses none (g).
            "observe": {"traces": {"flush_interval_s": 0.2, "journal_each_record": True}},
            "cache": {"enabled": True, "semantic": {"threshold": 0.8}},
            "models": {"m": {"provider": "up", "model": "fake-1",
                             # $0.001 a prompt token, $0.002 a completion token
                             "price": {"input_per_mtok": 1000, "output_per_mtok": 2000}},
                       "nocache": {"provider": "up", "model": "fake-1",
                                   "cache": {"enabled": False},
                                   "price": {"input_per_mtok": 1000,
                                             "output_per_mtok": 2000}}},
        }

    def start(self, i: int) -> None:
        url, proc, conf = serve_process(self.root / f"r{i}", self.upstream, **self.config())
        self.urls[i], self.procs[i], self.confs[i] = url, proc, conf

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "seawall.cli", *args, "--config",
                               str(self.confs[0])], capture_output=True, text=True, timeout=60)

    def new_key(self, name: str, *opts: str) -> str:
        r = self.cli("keys", "create", "--name", name, *opts)
        assert r.returncode == 0, r.stderr
        return r.stdout.strip()

    def client(self, i: int, key: str, **kw: Any) -> openai.OpenAI:
        return openai.OpenAI(base_url=self.urls[i] + "/v1", api_key=key, max_retries=0, **kw)

    def journals(self) -> dict[str, int]:
        """What each replica still holds locally (for a failure message)."""
        return {str(p.relative_to(self.root)): p.stat().st_size
                for p in self.root.glob("r*/data/traces.*")}

    def ready(self) -> list[Any]:
        out = []
        for url in self.urls:
            try:
                out.append(httpx.get(url + "/ready", timeout=5).json())
            except (httpx.HTTPError, ValueError) as e:
                out.append(repr(e))
        return out

    def stored(self, ids: set[str]) -> set[str]:
        with psycopg.connect(self.db_url, autocommit=True) as c:
            rows = c.execute("SELECT trace_id FROM traces WHERE trace_id = ANY(%s)",
                             (list(ids),)).fetchall()
        return {r[0] for r in rows}


@pytest.fixture(scope="module")
def cluster(pg_server: PostgresServer, pg_template: str, redis_server: RedisServer,
            upstream: FakeUpstreamClient, tmp_path_factory: pytest.TempPathFactory
            ) -> Iterator[Cluster]:
    import redis

    with redis.Redis.from_url(redis_server.url(7)) as r:
        r.flushdb()
    c = Cluster(create_database(pg_server, template=pg_template), redis_server.url(7),
                tmp_path_factory.mktemp("replicas"), upstream)
    try:
        with concurrent.futures.ThreadPoolExecutor(REPLICAS) as pool:
            for i in range(REPLICAS):
                (c.root / f"r{i}").mkdir()
            # Start one first: the others then find its config-independent state ready.
            c.start(0)
            list(pool.map(c.start, range(1, REPLICAS)))
        yield c
    finally:
        for p in c.procs:
            if p is not None and p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in c.procs:
            if p is None:
                continue
            try:
                p.wait(30)
            except subprocess.TimeoutExpired:
                p.kill()


def _ask(client: openai.OpenAI, text: str, model: str = "nocache", **kw: Any) -> str:
    raw = client.chat.completions.with_raw_response.create(
        model=model, messages=[{"role": "user", "content": text}], **kw)
    return raw.headers["x-request-id"]


def _raw(client: openai.OpenAI, text: str, model: str = "m", **kw: Any) -> Any:
    return client.chat.completions.with_raw_response.create(
        model=model, messages=[{"role": "user", "content": text}], **kw)


def _until(check: Any, within_s: float, what: str) -> float:
    """Poll ``check()`` until true; returns how long it took (fails past ``within_s``)."""
    t0 = time.monotonic()
    while not check():
        if time.monotonic() - t0 > within_s:
            raise AssertionError(f"{what}: not within {within_s}s")
        time.sleep(0.02)
    return time.monotonic() - t0


def test_a_key_limit_is_one_limit_across_replicas(cluster: Cluster) -> None:
    """(a) 60 rpm: a burst spread over the three replicas gets 60 answers in
    all (plus what refilled while the burst ran: one a second)."""
    cluster.upstream.reset()
    key = cluster.new_key("limited", "--rpm", "60")
    clients = [cluster.client(i, key) for i in range(REPLICAS)]

    def one(n: int) -> int:
        try:
            _ask(clients[n % REPLICAS], f"burst {n}")
            return 200
        except openai.RateLimitError:
            return 429

    t0 = time.monotonic()
    with concurrent.futures.ThreadPoolExecutor(12) as pool:
        codes = list(pool.map(one, range(90)))
    elapsed = time.monotonic() - t0
    ok = codes.count(200)
    assert codes.count(429) == 90 - ok
    assert 60 <= ok <= 61 + int(elapsed), (ok, elapsed)
    per_replica = [codes[i::REPLICAS].count(200) for i in range(REPLICAS)]
    assert all(n > 0 for n in per_replica), per_replica


def test_a_budget_is_one_budget_across_replicas(cluster: Cluster) -> None:
    """(b) A key with a small budget is refused on every replica once spent;
    what it overspends is at most one request per replica in flight."""
    cluster.upstream.reset()
    cluster.upstream.script(default={"text": "a b c d e"})
    key = cluster.new_key("budgeted", "--budget-usd", "0.1", "--budget-period", "day")
    clients = [cluster.client(i, key) for i in range(REPLICAS)]
    answered = 0
    refused: set[int] = set()
    for n in range(60):
        i = n % REPLICAS
        try:
            _ask(clients[i], "spend", max_tokens=5)
            answered += 1
        except openai.RateLimitError as e:
            assert e.code == "budget_exceeded", e.body
            refused.add(i)
        if refused == set(range(REPLICAS)):
            break
    assert refused == set(range(REPLICAS))  # spent: refused everywhere
    assert answered > 0
    with psycopg.connect(cluster.db_url, autocommit=True) as c:
        row = c.execute("SELECT SUM(t.cost_usd) FROM traces t JOIN api_keys k ON "
                        "k.id = t.key_id WHERE k.name = 'budgeted' AND t.status = 200"
                        ).fetchone()
    spent = float(row[0] or 0) if row else 0.0
    one_request = spent / answered
    assert answered >= 3  # ~$0.02 each: the budget was not refused early either
    assert spent <= 0.1 + REPLICAS * one_request + 1e-9, (spent, answered)


def test_an_answer_cached_on_one_replica_hits_on_another(cluster: Cluster) -> None:
    """(c) Exact and semantic hits through replica 2 for an answer cached
    through replica 1."""
    cluster.upstream.reset()
    key = cluster.new_key("cached")
    first = _raw(cluster.client(0, key), "How do I reset my password?")
    assert first.headers["x-seawall-cache"] == "miss"
    other = cluster.client(1, key)
    exact = _raw(other, "How do I reset my password?")
    assert exact.headers["x-seawall-cache"] == "hit"  # at once: one shared table
    # Semantic: replicas learn of scopes stored elsewhere within a second (a
    # hint that spares most misses an embedding); then the near question hits.
    time.sleep(1.5)
    near = _raw(other, "how can I reset my password")
    assert near.headers["x-seawall-cache"] == "semantic-hit"
    assert near.parse().choices[0].message.content == \
        first.parse().choices[0].message.content
    assert len(cluster.upstream.calls()["requests"]) == 1


def test_a_document_ingested_through_one_replica_is_found_through_another(
        cluster: Cluster) -> None:
    """(d) Within 2 s."""
    headers = {"authorization": f"Bearer {MASTER}"}
    # The collection exists (and is indexed) on replica 3 before the document comes.
    httpx.post(cluster.urls[0] + "/v1/collections/handbook/documents", headers=headers,
               json={"documents": [{"source": "intro.md", "text": "# Intro\nWelcome."}]},
               timeout=60).raise_for_status()
    httpx.post(cluster.urls[2] + "/v1/collections/handbook/search", headers=headers,
               json={"query": "welcome"}, timeout=60).raise_for_status()
    r = httpx.post(cluster.urls[0] + "/v1/collections/handbook/documents", headers=headers,
                   json={"documents": [{"source": "vpn.md", "text": "# VPN\nThe office "
                                        "VPN uses WireGuard on port 51820."}]}, timeout=60)
    r.raise_for_status()

    def found() -> bool:
        hits = httpx.post(cluster.urls[2] + "/v1/collections/handbook/search",
                          headers=headers, json={"query": "WireGuard VPN port"},
                          timeout=10).json()["data"]
        return any(h["source"] == "vpn.md" for h in hits)

    assert _until(found, 2.0, "document visible on replica 3") <= 2.0


def test_a_prompt_rollback_from_the_cli_reaches_every_replica(cluster: Cluster) -> None:
    """(e) The next request on every replica uses the rolled-back version."""
    cluster.upstream.reset()
    key = cluster.new_key("prompted")
    spec = {"name": "greeter", "model": "nocache",
            "messages": [{"role": "system", "content": "Version one."}]}
    f = cluster.root / "greeter.yaml"
    f.write_text(json.dumps(spec))
    assert cluster.cli("prompts", "push", str(f)).returncode == 0
    spec["messages"][0]["content"] = "Version two."
    f.write_text(json.dumps(spec))
    assert cluster.cli("prompts", "push", str(f), "--label", "production").returncode == 0

    def version(i: int) -> str:
        raw = _raw(cluster.client(i, key), "hi", model="nocache",
                   extra_body={"prompt": {"name": "greeter"}})
        return str(raw.headers["x-seawall-prompt-version"])

    assert {version(i) for i in range(REPLICAS)} == {"greeter@2"}
    r = cluster.cli("prompts", "rollback", "greeter")
    assert r.returncode == 0, r.stderr
    t0 = time.monotonic()
    for i in range(REPLICAS):
        _until(lambda i=i: version(i) == "greeter@1", 1.0 - (time.monotonic() - t0) + 0.5,
               f"rollback on replica {i}")


def test_a_revoked_key_fails_on_every_replica_within_a_second(cluster: Cluster) -> None:
    """(f) Revoked from the CLI; every replica refuses it within 1 s."""
    key = cluster.new_key("revoked")
    clients = [cluster.client(i, key) for i in range(REPLICAS)]
    for c in clients:  # each replica has the key in its lookup cache
        _ask(c, "before")
    r = cluster.cli("keys", "revoke", "revoked")
    assert r.returncode == 0, r.stderr
    t0 = time.monotonic()

    def refused(c: openai.OpenAI) -> bool:
        try:
            _ask(c, "after")
            return False
        except openai.AuthenticationError:
            return True

    for i, c in enumerate(clients):
        _until(lambda c=c: refused(c), 1.0, f"revocation on replica {i}")
    assert time.monotonic() - t0 < 1.5


def test_every_replica_serves_and_records_into_one_database(cluster: Cluster) -> None:
    cluster.upstream.reset()
    key = cluster.new_key("everyone")
    ids = {_ask(cluster.client(i, key), f"hello {i}") for i in range(REPLICAS)}
    deadline = time.monotonic() + 10
    while cluster.stored(ids) != ids and time.monotonic() < deadline:
        time.sleep(0.2)
    assert cluster.stored(ids) == ids
    # The CLI reads the same records from any machine with the same config.
    r = cluster.cli("traces", "tail", "-n", "50", "--json")
    assert r.returncode == 0, r.stderr
    assert ids <= {json.loads(line)["trace_id"] for line in r.stdout.splitlines()}


def test_kill_9_of_one_replica_under_load_keeps_every_finished_record(
        cluster: Cluster) -> None:
    """(g) kill -9 under load: every request the replica finished has its
    record in Postgres once it is back on its data_dir (journal_each_record)."""
    cluster.upstream.reset()
    cluster.upstream.script(default={"text": "one two three", "tokens_per_s": 200})
    key = cluster.new_key("killed")
    victim = REPLICAS - 1
    done: list[tuple[str, float]] = []
    stop = threading.Event()

    def load() -> None:
        client = cluster.client(victim, key, timeout=5)
        while not stop.is_set():
            try:
                done.append((_ask(client, "load"), time.monotonic()))
            except (openai.APIError, httpx.HTTPError):
                return

    threads = [threading.Thread(target=load) for _ in range(6)]
    for t in threads:
        t.start()
    time.sleep(3)
    cluster.procs[victim].kill()
    killed_at = time.monotonic()
    cluster.procs[victim].wait(10)
    stop.set()
    for t in threads:
        t.join(10)
    finished = {rid for rid, t in done if t <= killed_at}
    assert len(finished) > 20
    cluster.start(victim)  # back on the same data_dir: what the kill left is replayed
    deadline = time.monotonic() + 20
    while cluster.stored(finished) != finished and time.monotonic() < deadline:
        time.sleep(0.2)
    assert finished - cluster.stored(finished) == set(), cluster.journals()


def test_redis_then_postgres_restarted_under_load_no_5xx_no_lost_records(
        cluster: Cluster, redis_server: RedisServer, pg_server: PostgresServer) -> None:
    """(h) Redis, then Postgres, stopped and started again under load on every
    replica: no 5xx, and every answer's record reaches Postgres afterwards."""
    cluster.upstream.reset()
    key = cluster.new_key("faults")
    for i in range(REPLICAS):  # every replica has seen the key (auth.stale_key_s)
        _ask(cluster.client(i, key), "warm")
    ok: list[str] = []
    failures: list[str] = []
    stop = threading.Event()

    def load(i: int) -> None:
        client = cluster.client(i, key, timeout=10)
        while not stop.is_set():
            try:
                ok.append(_ask(client, "under fault"))
            except openai.APIStatusError as e:
                failures.append(f"{e.status_code} {e.body}")
            except (openai.APIError, httpx.HTTPError) as e:
                failures.append(f"transport {e!r}")
            time.sleep(0.02)

    threads = [threading.Thread(target=load, args=(i % REPLICAS,)) for i in range(6)]
    for t in threads:
        t.start()
    try:
        time.sleep(1)
        redis_server.stop()
        time.sleep(2)
        redis_server.start_again()
        time.sleep(2)
        pg_server.stop()
        time.sleep(3)
        pg_server.start_again()
        time.sleep(2)
    finally:
        stop.set()
        for t in threads:
            t.join(15)
    assert not [f for f in failures if f.startswith("5") or f.startswith("transport")], failures
    assert len(ok) > 50
    ids = set(ok)
    deadline = time.monotonic() + 40  # the writers' backoff (up to 30 s) then replay
    while cluster.stored(ids) != ids and time.monotonic() < deadline:
        time.sleep(0.5)
    missing = ids - cluster.stored(ids)
    assert not missing, (len(missing), len(ids), cluster.journals(), cluster.ready())


def test_ready_says_when_redis_is_unreachable_but_keeps_serving(
        cluster: Cluster, redis_server: RedisServer) -> None:
    """fail_open: /ready stays 200 with the reason; a request still gets its answer."""
    key = cluster.new_key("redis-ready")
    redis_server.stop()
    try:
        r = httpx.get(cluster.urls[0] + "/ready", timeout=10)
        assert r.status_code == 200
        check = r.json()["checks"]["redis"]
        assert check["reachable"] is False and "redis.fail_open" in check["detail"]
        _ask(cluster.client(0, key, timeout=10), "still served")
    finally:
        redis_server.start_again()
    _until(lambda: "reachable" not in httpx.get(cluster.urls[0] + "/ready", timeout=10
                                                ).json()["checks"]["redis"], 10, "redis back")
