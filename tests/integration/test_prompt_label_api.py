"""``POST /admin/prompts/{name}/label`` without a browser: the operator
moves a label either way, the next request gets that version, the move is
audited; a tenant admin is refused (prompts are shared by every tenant);
bad input is a 4xx naming what is wrong."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import httpx
import pytest

from tests.gateway import Running, run_gateway
from tests.servers import FakeUpstreamClient

MASTER = "sk-master-prompt-label"


@pytest.fixture(scope="module")
def gw(upstream: FakeUpstreamClient, tmp_path_factory: pytest.TempPathFactory
       ) -> Iterator[Running]:
    config = {"auth": {"master_key": MASTER, "allow_anonymous_loopback": False},
              "providers": {"oa": {"type": "openai", "base_url": upstream.base_url + "/v1"}},
              "models": {"gpt-x": {"provider": "oa", "model": "upstream-gpt"}}}
    with run_gateway(config, tmp_path_factory.mktemp("prompt-label")) as running:
        yield running


def _api(gw: Running, key: str = MASTER) -> httpx.Client:
    return httpx.Client(base_url=gw.url, timeout=30, headers={"authorization": f"Bearer {key}"})


def _served(gw: Running, name: str, label: str = "production") -> str:
    r = _api(gw).post("/v1/chat/completions", json={
        "model": "gpt-x", "prompt": {"name": name, "label": label},
        "messages": [{"role": "user", "content": "hello"}]})
    assert r.status_code == 200, r.text
    return r.headers["x-seawall-prompt-version"]


def test_a_label_moves_either_way_and_is_audited(gw: Running) -> None:
    name = "moves-" + uuid.uuid4().hex[:6]
    for text in ("one", "two", "three"):
        gw.services.prompts.push(name, {"messages": [{"role": "system", "content": text}]})
    api = _api(gw)
    assert _served(gw, name) == f"{name}@1"
    r = api.post(f"/admin/prompts/{name}/label", json={"version": 3})
    assert r.status_code == 200, r.text
    body = r.json()
    assert (body["moved"], body["from_version"], body["to_version"]) == (True, 1, 3)
    assert body["action"] == "label" and body["actor"] == "admin-api"
    assert _served(gw, name) == f"{name}@3"
    assert api.post(f"/admin/prompts/{name}/label", json={"version": 2}).json()["moved"]
    assert _served(gw, name) == f"{name}@2"
    # A new label, then the same move again: nothing moves, nothing is recorded.
    assert api.post(f"/admin/prompts/{name}/label",
                    json={"version": 1, "label": "beta"}).json()["from_version"] is None
    assert _served(gw, name, "beta") == f"{name}@1"
    again = api.post(f"/admin/prompts/{name}/label", json={"version": 1, "label": "beta"})
    assert again.status_code == 200 and again.json()["moved"] is False
    audit = api.get("/admin/audit", params={"action": "prompt.label"}).json()["data"]
    mine = [(e["target"], e["before"]["version"], e["after"]["version"])
            for e in audit if e["target"].startswith(name + ":")]
    assert sorted(mine) == sorted([(f"{name}:production", 1, 3),
                                   (f"{name}:production", 3, 2), (f"{name}:beta", None, 1)])


def test_refusals(gw: Running) -> None:
    name = "guarded-" + uuid.uuid4().hex[:6]
    gw.services.prompts.push(name, {"messages": [{"role": "system", "content": "x"}]})
    made = _api(gw).post("/admin/keys", json={"name": "pa-" + uuid.uuid4().hex[:4],
                                              "tenant": "acme", "role": "tenant_admin"})
    admin = made.json()["secret"]
    url = f"/admin/prompts/{name}/label"
    refused = _api(gw, admin).post(url, json={"version": 1, "label": "beta"})
    assert refused.status_code == 403 and refused.json()["error"]["code"] == "operator_only"
    api = _api(gw)
    assert api.post(url, json={"version": 9, "label": "beta"}).status_code == 404
    assert api.post(f"/admin/prompts/nope-{name}/label", json={"version": 1}).status_code == 404
    long = api.post(f"/admin/prompts/{'n' * 3000}/label", json={"version": 1})
    assert long.status_code == 404 and len(long.text) < 1000  # the name is not echoed back
    for bad in ({"version": 1, "label": "latest"}, {"version": 1, "label": "Has Caps"},
                {"version": 0}, {"label": "beta"}, {"version": 1, "extra": True}):
        r = api.post(url, json=bad)
        assert r.status_code == 400, (bad, r.text)
    assert api.post(url, content=b"x" * 5000).status_code in (400, 413)
    assert gw.services.prompts.store.labels(name) == {"production": 1}
