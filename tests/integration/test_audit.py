"""The audit log end to end: admin actions over HTTP and from the CLI (real
server, real subprocesses, one data directory) each leave one row with who,
from where, before and after; ``GET /admin/audit`` and ``seawall audit``
read them back, newest first; bad query parameters are 400s; a failed audit
write fails the admin request instead of passing unnoticed."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from seawall.pipeline.stages import hash_key
from seawall.store.base import ApiKey
from tests.gateway import Running, run_gateway

pytestmark = pytest.mark.timeout(300)

MASTER = "sk-master-audit-test"
FIXTURES = Path(__file__).parent.parent / "fixtures"


def _config(data_dir: Path, **extra: Any) -> dict[str, Any]:
    return {"data_dir": str(data_dir),
            "auth": {"master_key": MASTER},
            "cache": {"enabled": True},
            "providers": {"f": {"type": "fake"}},
            "models": {"m": {"provider": "f", "model": "fake-1"}},
            **extra}


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """One data directory and its config file, shared by the server and the CLI."""
    tmp = tmp_path_factory.mktemp("audit")
    conf = tmp / "seawall.yaml"
    conf.write_text(json.dumps(_config(tmp / "data")))
    return tmp / "data", conf


@pytest.fixture(scope="module")
def gw(data: tuple[Path, Path]) -> Iterator[Running]:
    with run_gateway(_config(data[0]), data[0].parent) as running:
        yield running


def _key(gw: Running, tenant: str = "team") -> tuple[ApiKey, str]:
    secret = "sk-sw-" + uuid.uuid4().hex
    key = ApiKey(id="key_" + uuid.uuid4().hex[:12], name=f"app-{tenant}", tenant=tenant,
                 key_hash=hash_key(secret), prefix=secret[:10], rpm=None,
                 created_at=time.time())
    gw.on_server(gw.services.store.create_key(key))
    return key, secret


def _auth(key: str = MASTER) -> dict[str, str]:
    return {"authorization": f"Bearer {key}"}


def audit(gw: Running, key: str = MASTER, **params: Any) -> httpx.Response:
    return httpx.get(gw.url + "/admin/audit", params=params, headers=_auth(key), timeout=30)


def rows(gw: Running, **params: Any) -> list[dict[str, Any]]:
    r = audit(gw, **params)
    assert r.status_code == 200, r.text
    data: list[dict[str, Any]] = r.json()["data"]
    return data


def sw(conf: Path, *args: str, ok: bool = True) -> subprocess.CompletedProcess[str]:
    r = subprocess.run([sys.executable, "-m", "seawall.cli", *args, "-c", str(conf)],
                       capture_output=True, text=True, timeout=180)
    if ok:
        assert r.returncode == 0, (args, r.stdout, r.stderr)
    return r


# -- HTTP --

def test_key_revoke_over_http_leaves_one_row(gw: Running) -> None:
    key, _ = _key(gw)
    r = httpx.post(f"{gw.url}/admin/keys/{key.id}/revoke", headers=_auth(), timeout=30)
    assert r.status_code == 200, r.text
    [row] = [x for x in rows(gw, action="key.revoke") if x["target"] == key.id]
    assert row["actor"] == {"id": "master", "name": "master", "role": "operator"}
    assert (row["tenant"], row["source"]) == ("team", "127.0.0.1")
    assert row["request_id"] == r.headers["x-request-id"]
    assert row["before"]["revoked_at"] is None and row["after"]["revoked_at"] > 0
    assert row["after"]["prefix"] == key.prefix and "key_hash" not in row["after"]
    assert key.key_hash not in json.dumps(row)


def test_cache_purge_over_http_leaves_one_row(gw: Running) -> None:
    r = httpx.post(gw.url + "/admin/cache/purge", json={"tenant": "acme", "model": "m"},
                   headers=_auth(), timeout=30)
    assert r.status_code == 200, r.text
    [row] = [x for x in rows(gw, action="cache.purge")
             if x["request_id"] == r.headers["x-request-id"]]
    assert (row["tenant"], row["target"], row["source"]) == ("acme", "tenant=acme model=m",
                                                            "127.0.0.1")
    assert row["after"] == {"tenant": "acme", "model": "m", "prompt_version": None,
                            "entry": None, "all": False, "purged": 0}
    # A refused purge (no filter) changed nothing and is not in the log.
    before = len(rows(gw, action="cache.purge"))
    assert httpx.post(gw.url + "/admin/cache/purge", json={}, headers=_auth(),
                      timeout=30).status_code == 400
    assert len(rows(gw, action="cache.purge")) == before


def test_collection_create_and_delete_over_http(gw: Running) -> None:
    key, secret = _key(gw, tenant="rag-team")
    docs = {"documents": [{"source": "a.md", "text": "# A\n\nSeawall keeps an audit log."}]}
    r = httpx.post(gw.url + "/v1/collections/kb/documents", json=docs, headers=_auth(secret),
                   timeout=120)
    assert r.status_code == 200, r.text
    # A second ingest into the existing collection creates nothing.
    assert httpx.post(gw.url + "/v1/collections/kb/documents", json=docs,
                      headers=_auth(secret), timeout=120).status_code == 200
    [created] = rows(gw, action="collection.create", tenant="rag-team")
    assert created["actor"] == {"id": key.id, "name": key.name, "role": "app"}
    assert created["target"] == "kb" and created["after"]["documents"] == 1
    r = httpx.delete(gw.url + "/v1/collections/kb", headers=_auth(secret), timeout=30)
    assert r.status_code == 200, r.text
    [deleted] = rows(gw, action="collection.delete", tenant="rag-team")
    assert deleted["request_id"] == r.headers["x-request-id"]
    assert deleted["before"]["documents"] == 1 and deleted["after"] is None
    # Deleting what is gone is a 404 and leaves no row.
    assert httpx.delete(gw.url + "/v1/collections/kb", headers=_auth(secret),
                        timeout=30).status_code == 404
    assert len(rows(gw, action="collection.*", tenant="rag-team")) == 2


@pytest.mark.parametrize("params", [
    {"limit": "0"}, {"limit": "1001"}, {"limit": "ten"}, {"limit": "9" * 40},
    {"since": "yesterday"}, {"since": "9" * 50}, {"action": "key.revoke' OR 1=1 --"},
    {"action": "KEY.REVOKE"}, {"action": "a" * 101}, {"tenant": ""}, {"tenant": "t" * 1001},
    {"before_id": "-1"}, {"before_id": "x"}, {"colour": "red"},
])
def test_bad_query_parameters_are_400(gw: Running, params: dict[str, str]) -> None:
    r = audit(gw, **params)
    assert r.status_code == 400, (params, r.text)
    assert r.json()["error"]["type"] == "invalid_request_error"


def test_a_repeated_parameter_is_400(gw: Running) -> None:
    r = httpx.get(gw.url + "/admin/audit?tenant=a&tenant=b", headers=_auth(), timeout=30)
    assert r.status_code == 400


def test_only_the_operator_reads_the_log(gw: Running) -> None:
    _, secret = _key(gw, tenant="nosy")
    denied = audit(gw, key=secret)  # an app key: not its scope
    assert denied.status_code == 403 and "'admin:audit'" in denied.text
    assert audit(gw, key="sk-sw-not-a-key").status_code == 401
    assert httpx.get(gw.url + "/admin/audit", timeout=30).status_code == 401


def test_filters_and_order(gw: Running) -> None:
    every = rows(gw, limit=1000)
    ids = [x["id"] for x in every]
    assert ids == sorted(ids, reverse=True) and len(ids) >= 3
    assert [x["id"] for x in rows(gw, limit=2)] == ids[:2]
    page = audit(gw, limit=1, before_id=ids[0]).json()
    assert [x["id"] for x in page["data"]] == [ids[1]] and page["has_more"] is True
    assert rows(gw, since=str(time.time() + 3600)) == []
    assert len(rows(gw, since="1h")) == len(every)
    assert rows(gw, tenant="nobody") == []


# -- CLI (same data directory, the server running) --

def test_cli_actions_leave_rows_and_seawall_audit_prints_them(gw: Running,
                                                              data: tuple[Path, Path]) -> None:
    _, conf = data
    secret = sw(conf, "keys", "create", "--name", "cli-app", "--tenant", "acme").stdout.strip()
    assert secret.startswith("sk-sw-")
    sw(conf, "keys", "revoke", "cli-app")
    assert "purged 0 entries" in sw(conf, "cache", "purge", "--tenant", "acme").stdout
    sw(conf, "ingest", str(FIXTURES / "rag" / "handbook.md"), "--collection", "notes",
       "--tenant", "acme")
    sw(conf, "collections", "delete", "notes", "--tenant", "acme")
    sw(conf, "prompts", "push", str(FIXTURES / "prompts" / "support-answer.yaml"))
    sw(conf, "prompts", "push", "--label", "staging",
       str(FIXTURES / "prompts" / "support-answer.yaml"))

    out = sw(conf, "audit", "--json", "--limit", "50").stdout.splitlines()
    cli_rows = [json.loads(line) for line in out if json.loads(line)["source"] == "cli"]
    assert [r["action"] for r in cli_rows] == [
        "prompt.label", "prompt.create", "collection.delete", "collection.create",
        "cache.purge", "key.revoke", "key.create"]
    by_action = {r["action"]: r for r in cli_rows}
    for r in cli_rows:
        assert r["actor"]["id"].startswith("cli:") and r["actor"]["role"] == "operator"
    assert secret not in "\n".join(out) and hash_key(secret) not in "\n".join(out)
    created = by_action["key.create"]
    assert created["tenant"] == "acme" and created["after"]["prefix"] == secret[:10]
    assert by_action["key.revoke"]["before"]["revoked_at"] is None
    assert by_action["key.revoke"]["after"]["revoked_at"] > 0
    assert by_action["cache.purge"]["target"] == "tenant=acme"
    assert by_action["collection.delete"]["before"]["documents"] == 1
    assert by_action["prompt.create"]["target"] == "support-answer@1"
    assert by_action["prompt.create"]["after"]["labels"] == {"production": 1}
    assert by_action["prompt.label"]["before"] == {"label": "staging", "version": None}
    assert by_action["prompt.label"]["after"] == {"label": "staging", "version": 1}
    # The server reads the same rows.
    assert [r["id"] for r in rows(gw, tenant="acme", limit=1000)
            if r["source"] == "cli"] == [r["id"] for r in cli_rows if r["tenant"] == "acme"]

    text = sw(conf, "audit", "--tenant", "acme", "--action", "key.*").stdout.splitlines()
    assert len(text) == 2
    assert "key.revoke" in text[0] and "key.create" in text[1]
    assert "by cli:" in text[0] and "from cli" in text[0]
    for bad in (["--limit", "0"], ["--since", "someday"], ["--action", "Key Revoke"]):
        r = sw(conf, "audit", *bad, ok=False)
        assert r.returncode == 2, (bad, r.stderr)


def test_cli_job_actions_are_audited(data: tuple[Path, Path]) -> None:
    _, conf = data
    job_id = sw(conf, "jobs", "enqueue", "sleep", "--payload", '{"seconds": 60}',
                "--tenant", "jobs-t", "--delay-s", "3600").stdout.strip()
    sw(conf, "jobs", "cancel", job_id)
    out = [json.loads(x) for x in sw(conf, "audit", "--json", "--tenant", "jobs-t"
                                     ).stdout.splitlines()]
    assert [(r["action"], r["target"]) for r in out] == [("job.cancel", job_id),
                                                         ("job.enqueue", job_id)]
    assert out[0]["after"]["state"] == "cancelled"


# -- a failed audit write --

def test_an_unrecordable_admin_action_fails_loudly(tmp_path: Path) -> None:
    with run_gateway(_config(tmp_path / "data"), tmp_path) as gw:
        key, _ = _key(gw)
        db = sqlite3.connect(gw.services.settings.db_path)
        db.execute("DROP TABLE audit_log")
        db.commit()
        db.close()
        r = httpx.post(f"{gw.url}/admin/keys/{key.id}/revoke", headers=_auth(), timeout=30)
        assert r.status_code == 500
        err = r.json()["error"]
        assert err["code"] == "audit_write_failed" and "was applied" in err["message"]


# -- the shared store --

def test_http_and_cli_on_postgres_share_one_log(tmp_path: Path, pg_url: str) -> None:
    store = {"store": {"kind": "postgres", "url": pg_url}}
    conf = tmp_path / "seawall.yaml"
    conf.write_text(json.dumps(_config(tmp_path / "data", **store)))
    with run_gateway(_config(tmp_path / "data", **store), tmp_path) as gw:
        key, _ = _key(gw)
        r = httpx.post(f"{gw.url}/admin/keys/{key.id}/revoke", headers=_auth(), timeout=30)
        assert r.status_code == 200, r.text
        sw(conf, "keys", "create", "--name", "pg-app", "--tenant", "team")
        sw(conf, "cache", "purge", "--all")
        got = [(x["action"], x["source"], x["tenant"]) for x in rows(gw)]
        assert got == [("cache.purge", "cli", "*"), ("key.create", "cli", "team"),
                       ("key.revoke", "127.0.0.1", "team"),
                       ("model.config", "startup", "*")]  # the config file's models
        out = [json.loads(x) for x in sw(conf, "audit", "--json").stdout.splitlines()]
        assert [x["id"] for x in out] == [x["id"] for x in rows(gw)]


def test_an_unrecordable_cli_action_fails_and_a_new_key_is_taken_back(tmp_path: Path) -> None:
    conf = tmp_path / "seawall.yaml"
    conf.write_text(json.dumps(_config(tmp_path / "data")))
    sw(conf, "keys", "create", "--name", "first")  # creates seawall.db and the log
    db = sqlite3.connect(tmp_path / "data" / "seawall.db")
    db.execute("CREATE TRIGGER audit_refuses BEFORE INSERT ON audit_log "
               "BEGIN SELECT RAISE(ABORT, 'the disk says no'); END")
    db.commit()
    db.close()
    r = sw(conf, "keys", "create", "--name", "second", ok=False)
    assert r.returncode == 1 and "sk-sw-" not in r.stdout
    assert "was not issued" in r.stderr and "could not be written" in r.stderr
    listed = sw(conf, "keys", "list").stdout
    assert " first " in listed and " second " not in listed  # revoked again
    r = sw(conf, "keys", "revoke", "first", ok=False)
    assert r.returncode == 1 and "key.revoke was applied" in r.stderr
    assert '"action":"key.revoke"' in r.stderr and "audit write failed" in r.stderr


def test_config_file_changes_are_audited_at_start(tmp_path: Path) -> None:
    """Experiments and guardrails change by editing the config file: each start
    records a section that changed since the last recorded one, once."""
    base: dict[str, Any] = {
        "auth": {"master_key": "sk-master-config-audit"},
        "providers": {"fake": {"type": "fake"}},
        "models": {"echo": {"provider": "fake"}, "next": {"provider": "fake"}},
        "experiments": {"ab": {"model": "echo", "variants": [
            {"name": "a", "weight": 90}, {"name": "b", "model": "next", "weight": 10}]}},
    }

    def rows(gw: Running, action: str) -> list[Any]:
        r = httpx.get(gw.url + "/admin/audit", params={"action": action}, timeout=10,
                      headers={"authorization": "Bearer sk-master-config-audit"})
        assert r.status_code == 200, r.text
        return r.json()["data"]

    with run_gateway(base, tmp_path) as gw:
        [first] = rows(gw, "experiment.config")
        assert first["actor"]["id"] == "config-file" and first["source"] == "startup"
        assert first["before"] is None
        assert first["after"]["experiments"]["ab"]["variants"][0]["weight"] == 90
        models = rows(gw, "model.config")
        assert len(models) == 1
        assert rows(gw, "guardrail.config") == []  # still the defaults: nothing recorded
    with run_gateway(base, tmp_path) as gw:  # the same file: nothing new
        assert len(rows(gw, "experiment.config")) == 1
    changed = json.loads(json.dumps(base))
    changed["experiments"]["ab"]["variants"][0]["weight"] = 50
    changed["guardrails"] = {"input": {"email": "block"}}
    with run_gateway(changed, tmp_path) as gw:
        latest, _ = rows(gw, "experiment.config")
        assert latest["before"]["experiments"]["ab"]["variants"][0]["weight"] == 90
        assert latest["after"]["experiments"]["ab"]["variants"][0]["weight"] == 50
        [guard] = rows(gw, "guardrail.config")
        assert guard["after"]["guardrails"]["input"] == {"email": "block"}
        assert len(rows(gw, "model.config")) == 1  # unchanged
