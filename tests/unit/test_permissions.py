"""Who may do what (seawall/pipeline/permissions.py) and the key options'
parsing (seawall/keys.py), on real contexts and keys."""

from __future__ import annotations

import time

import pytest

from seawall.errors import NotFound
from seawall.keys import make_key, names, parse_duration, parse_expires
from seawall.pipeline.context import RequestContext
from seawall.pipeline.permissions import (
    ADMIN_SCOPES,
    PermissionDenied,
    PermissionStage,
    admin_tenant,
    confine,
    grantable,
    require_collection,
    role_of,
    scope_for,
)
from seawall.pipeline.stages import MASTER
from seawall.store.base import ApiKey


def _ctx(key: ApiKey | None, endpoint: str = "chat.completions", model: str = "") -> RequestContext:
    ctx = RequestContext(endpoint=endpoint, model=model)
    ctx.key, ctx.tenant = key, key.tenant if key is not None else "anonymous"
    return ctx


def test_durations_and_expiry_dates() -> None:
    assert parse_duration("30d") == 30 * 86400 and parse_duration("1.5h") == 5400
    assert parse_duration("0s") == 0
    for bad in ("", "30", "d", "-1h", "1y", "1h30m"):
        with pytest.raises(ValueError):
            parse_duration(bad)
    now = 1_700_000_000.0
    assert parse_expires("12h", now) == now + 43200
    assert parse_expires("2030-01-31", now) == 1896048000.0  # midnight UTC
    assert parse_expires("2030-01-31T01:00:00+01:00", now) == 1896048000.0
    with pytest.raises(ValueError, match="past"):
        parse_expires("2020-01-01", now)
    with pytest.raises(ValueError, match="neither"):
        parse_expires("next tuesday", now)
    assert names(" a, b,,a ", "x") == ("a", "b")
    with pytest.raises(ValueError):
        names(",".join(str(i) for i in range(101)), "x")


def test_scope_of_each_endpoint() -> None:
    assert scope_for("chat.completions") == "chat" and scope_for("rag.ingest") == "rag:write"
    assert scope_for("admin.keys.create") == "admin:keys"
    assert scope_for("admin.audit") == "admin:audit" and scope_for("models") is None


async def test_the_stage_checks_scope_then_model() -> None:
    stage = PermissionStage()
    key, _ = make_key("k", "acme", scopes=["chat"], models=["echo"])
    await stage.before(_ctx(key, model="echo"))
    with pytest.raises(PermissionDenied, match="'other'"):
        await stage.before(_ctx(key, model="other"))
    with pytest.raises(PermissionDenied, match="'embeddings'") as e:
        await stage.before(_ctx(key, "embeddings", model="echo"))
    assert e.value.status == 403 and e.value.code == "missing_scope"
    await stage.before(_ctx(MASTER, "admin.keys.create"))  # the operator: everything
    await stage.before(_ctx(None, "admin.cache.purge"))  # keyless loopback: the operator
    assert role_of(_ctx(None)) == "operator"


def test_collections_lists() -> None:
    key, _ = make_key("k", "acme", scopes=["rag:read", "rag:write"],
                      collections_read=["a", "b"], collections_write=["a"])
    ctx = _ctx(key)
    require_collection(ctx, "b")
    require_collection(ctx, "a", write=True)
    with pytest.raises(PermissionDenied, match="may not write to the collection 'b'"):
        require_collection(ctx, "b", write=True)
    with pytest.raises(PermissionDenied, match="may not read the collection 'c'"):
        require_collection(ctx, "c")


def test_a_tenant_admin_is_confined_and_grants_only_what_it_holds() -> None:
    boss, _ = make_key("boss", "acme", role="tenant_admin")
    assert set(ADMIN_SCOPES) <= set(boss.scopes or ())
    ctx = _ctx(boss, "admin.keys.list")
    assert admin_tenant(ctx, "admin:keys") == "acme"
    assert admin_tenant(_ctx(MASTER), "admin:keys") is None
    confine(ctx, "admin:keys", "acme", "key")
    with pytest.raises(NotFound):  # another tenant's: as if absent
        confine(ctx, "admin:keys", "globex", "key")
    grantable(ctx, "app", "acme", ["chat", "admin:keys"])
    with pytest.raises(PermissionDenied, match="own tenant"):
        grantable(ctx, "app", "globex", ["chat"])
    with pytest.raises(PermissionDenied, match="role"):
        grantable(_ctx(MASTER), "operator", "acme", [])
    narrow, _ = make_key("narrow", "acme", role="tenant_admin", scopes=["admin:keys"])
    with pytest.raises(PermissionDenied, match="chat"):
        grantable(_ctx(narrow), "app", "acme", ["chat"])
    app, _ = make_key("app", "acme")
    with pytest.raises(PermissionDenied, match="'admin:keys'"):
        admin_tenant(_ctx(app), "admin:keys")


def test_a_new_key_gets_an_id_prefix_and_no_secret_at_rest() -> None:
    key, secret = make_key("svc", "acme", expires_at=time.time() + 60)
    assert secret.startswith("sk-sw-") and key.prefix == secret[:10]
    assert secret not in repr(key) and key.key_hash != secret
    assert not key.expired(time.time()) and key.expired(time.time() + 61)
