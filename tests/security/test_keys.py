"""Keys as an attacker sees them: how they are compared (constant time),
what a made-up or revoked key gets, and the names the gateway keeps for
itself (``default``: the master key's tenant; ``anonymous``: keyless
loopback callers)."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from seawall.config import AuthSettings
from seawall.errors import AuthenticationFailed
from seawall.pipeline.context import RequestContext
from seawall.pipeline.stages import AuthStage, hash_key
from seawall.store.base import ApiKey
from tests.gateway import Running, run_gateway
from tests.security.conftest import MASTER, Tenant, config, make_tenant
from tests.servers import FakeUpstreamClient

pytestmark = pytest.mark.timeout(120)


class RecordingKeys:
    """A key store that remembers what it was asked (a test double of the
    KeyStore protocol, not of Seawall code under test)."""

    def __init__(self, keys: dict[str, ApiKey]) -> None:
        self.keys = keys
        self.asked: list[str] = []

    async def key_by_hash(self, key_hash: str) -> ApiKey | None:
        self.asked.append(key_hash)
        return self.keys.get(key_hash)


def test_keys_are_compared_in_constant_time(monkeypatch: pytest.MonkeyPatch) -> None:
    """The master key through ``hmac.compare_digest``; a virtual key is never
    compared at all: its SHA-256 is looked up, so a timing difference can
    only tell the attacker about a hash of a 192-bit secret. (Properties, not
    timings: no clock is read here.)"""
    compared: list[tuple[bytes, bytes]] = []
    real = hmac.compare_digest

    def recording(a: Any, b: Any) -> bool:
        compared.append((a, b))
        return real(a, b)

    monkeypatch.setattr(hmac, "compare_digest", recording)
    secret = "sk-sw-" + "k" * 32
    key = ApiKey(id="k1", name="n", tenant="t", key_hash=hash_key(secret), prefix=secret[:10],
                 rpm=None, created_at=0.0)
    store = RecordingKeys({key.key_hash: key})
    stage = AuthStage(AuthSettings(master_key=MASTER, allow_anonymous_loopback=False),
                      store)  # type: ignore[arg-type]

    def auth(token: str) -> RequestContext:
        ctx = RequestContext(endpoint="chat", authorization=f"Bearer {token}",
                             client_host="203.0.113.9")
        asyncio.run(stage.before(ctx))
        return ctx

    assert auth(MASTER).tenant == "default"
    assert compared == [(MASTER.encode(), MASTER.encode())]
    for near in (MASTER[:-1] + "x", MASTER + "x", "x" * len(MASTER)):
        compared.clear()
        with pytest.raises(AuthenticationFailed):
            auth(near)
        assert compared == [(near.encode(), MASTER.encode())]
    assert auth(secret).tenant == "t"
    assert store.asked[-1] == hashlib.sha256(secret.encode()).hexdigest()
    assert secret not in store.asked  # the raw secret never reaches the store


def test_metrics_compare_the_master_key_in_constant_time(gw: Running, mallory: Tenant,
                                                         monkeypatch: pytest.MonkeyPatch
                                                         ) -> None:
    """``/metrics`` checks the master key itself; an app key is refused."""
    assert mallory.http.get("/metrics").status_code == 401
    assert httpx.get(gw.url + "/metrics").status_code == 401
    r = httpx.get(gw.url + "/metrics", headers={"authorization": f"Bearer {MASTER}"})
    assert r.status_code == 200
    assert mallory.secret not in r.text and MASTER not in r.text


def test_a_revoked_key_is_refused_at_once(gw: Running) -> None:
    t = make_tenant(gw, "revoked")
    assert t.http.get("/v1/collections").status_code == 200  # now cached by the auth stage
    r = httpx.post(f"{gw.url}/admin/keys/{t.key_id}/revoke",
                   headers={"authorization": f"Bearer {MASTER}"})
    assert r.status_code == 200, r.text
    assert t.http.get("/v1/collections").status_code == 401
    r = t.http.post("/v1/chat/completions", json={"model": "m", "messages": [
        {"role": "user", "content": "x"}]})
    assert r.status_code == 401


@pytest.fixture(scope="module")
def anon_gw(upstream: FakeUpstreamClient, tmp_path_factory: pytest.TempPathFactory
            ) -> Iterator[Running]:
    cfg = config(upstream)
    cfg["auth"] = {"master_key": MASTER, "allow_anonymous_loopback": True}
    with run_gateway(cfg, tmp_path_factory.mktemp("anon")) as running:
        yield running


def test_a_garbage_key_is_not_served_as_anonymous(anon_gw: Running) -> None:
    # Keyless from loopback: anonymous (the quickstart), by design.
    assert httpx.get(anon_gw.url + "/v1/collections").status_code == 200
    for garbage in ("garbage", "sk-not-a-seawall-key", MASTER + "x"):
        r = httpx.get(anon_gw.url + "/v1/collections",
                      headers={"authorization": f"Bearer {garbage}"})
        assert r.status_code == 401, garbage


def _cli(conf: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "seawall.cli", "keys", "create", *args,
                           "-c", str(conf)], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "SEAWALL_CONFIG": ""})


def test_reserved_tenant_names_are_refused(upstream: FakeUpstreamClient, tmp_path: Path) -> None:
    conf = tmp_path / "seawall.yaml"
    conf.write_text(yaml.safe_dump({**config(upstream), "data_dir": str(tmp_path / "data")}))
    for args in (("--name", "default"), ("--name", "x", "--tenant", "anonymous"),
                 ("--name", "x", "--tenant", "default")):
        run = _cli(conf, *args)
        assert run.returncode != 0, (args, run.stderr)
