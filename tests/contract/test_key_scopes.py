"""The key store's roles, scopes, expiry, rotation and budgets, on both backends."""

from __future__ import annotations

import time

import pytest

from seawall.keys import make_key, rotated_secret
from seawall.pipeline.permissions import DEFAULT_APP_SCOPES, key_usable
from seawall.pipeline.stages import hash_key
from seawall.store.base import ApiKey, TenantBudget
from seawall.store.factory import Stores


def _key(n: int, tenant: str = "acme", **kw: object) -> ApiKey:
    fields: dict[str, object] = dict(id=f"k{n}", name=f"key{n}", tenant=tenant,
                                     key_hash=f"h{n}", prefix="sk-sw-ab", rpm=None,
                                     created_at=1000.0 + n)
    fields.update(kw)
    return ApiKey(**fields)  # type: ignore[arg-type]


async def test_scoped_key_round_trips_every_new_field(stores: Stores) -> None:
    key = _key(1, role="tenant_admin", scopes=("chat", "admin:keys"), models=("echo", "auto"),
               collections_read=("handbook",), collections_write=(), expires_at=2e9,
               budget_usd=3.5, budget_period="day", budget_reset_at=1500.0)
    await stores.main.create_key(key)
    assert await stores.keys.key_by_hash("h1") == key
    assert await stores.main.find_key("key1") == key
    assert await stores.main.find_key("k1") == key


async def test_a_key_made_before_scopes_reads_back_as_legacy(stores: Stores) -> None:
    await stores.main.create_key(_key(1))
    got = await stores.keys.key_by_hash("h1")
    assert got is not None and got.role == "app" and got.scopes is None and got.models is None


async def test_names_with_sql_metacharacters_are_data(stores: Stores) -> None:
    name = "x' OR '1'='1"
    await stores.main.create_key(_key(1, name=name, tenant="acme"))
    await stores.main.create_key(_key(2, name="other", tenant="acme"))
    found = await stores.main.find_key(name)
    assert found is not None and found.id == "k1"
    assert await stores.main.find_key("' OR 1=1 --") is None
    assert await stores.main.revoke_key("' OR 1=1 --") is None
    assert await stores.main.list_keys(tenant="acme' OR '1'='1") == []
    assert len(await stores.main.list_keys()) == 2


async def test_list_find_and_revoke_are_confined_to_a_tenant(stores: Stores) -> None:
    await stores.main.create_key(_key(1, tenant="acme", name="bot"))
    await stores.main.create_key(_key(2, tenant="globex", name="bot"))
    assert [k.id for k in await stores.main.list_keys(tenant="globex")] == ["k2"]
    assert [k.id for k in await stores.main.list_keys()] == ["k1", "k2"]
    with pytest.raises(ValueError, match="2 active keys are named 'bot'"):
        await stores.main.find_key("bot")
    found = await stores.main.find_key("bot", tenant="acme")
    assert found is not None and found.id == "k1"
    # Another tenant's key, by id or name, is not found for a confined caller.
    assert await stores.main.find_key("k2", tenant="acme") is None
    assert await stores.main.revoke_key("k2", tenant="acme") is None
    revoked = await stores.main.revoke_key("bot", tenant="globex")
    assert revoked is not None and revoked.id == "k2"
    assert await stores.main.find_key("bot") is not None  # only acme's is active now
    assert (await stores.main.find_key("k2", include_revoked=True)) is not None


async def test_rotation_keeps_the_old_secret_for_the_grace_then_only_the_new(
        stores: Stores) -> None:
    key, old = make_key("svc", "acme")
    await stores.main.create_key(key)
    secret, new_hash, prefix = rotated_secret()
    until = time.time() + 3600
    rotated = await stores.main.rotate_key(key.id, new_hash, prefix, until)
    assert rotated is not None and rotated.prefix == prefix and rotated.prev_expires_at == until
    by_old = await stores.keys.key_by_hash(hash_key(old))
    by_new = await stores.keys.key_by_hash(new_hash)
    assert by_old is not None and by_new is not None and by_old.id == by_new.id == key.id
    assert key_usable(by_old, hash_key(old)) is None  # within the grace
    assert key_usable(by_new, new_hash) is None
    assert key_usable(by_old, hash_key(old), now=until + 1) == "rotated"
    assert key_usable(by_new, new_hash, now=until + 1) is None
    # A second rotation drops the first secret altogether.
    _, third, p3 = rotated_secret()
    await stores.main.rotate_key(key.id, third, p3, time.time() + 60)
    assert await stores.keys.key_by_hash(hash_key(old)) is None
    await stores.main.revoke_key(key.id)
    assert await stores.main.rotate_key(key.id, "x", "y", 0.0) is None  # revoked: refused


async def test_update_key_changes_only_the_allowed_fields(stores: Stores) -> None:
    key, _ = make_key("svc", "acme")
    assert key.scopes == DEFAULT_APP_SCOPES
    await stores.main.create_key(key)
    got = await stores.main.update_key(key.id, budget_usd=2.0, budget_period="day",
                                       budget_reset_at=123.0, models=("echo",))
    assert got is not None and got.budget_usd == 2.0 and got.budget_period == "day"
    assert got.budget_reset_at == 123.0 and got.models == ("echo",)
    assert got.scopes == DEFAULT_APP_SCOPES and got.key_hash == key.key_hash
    with pytest.raises(ValueError, match="cannot change"):
        await stores.main.update_key(key.id, tenant="default")
    assert await stores.main.update_key("missing", budget_usd=1.0) is None


async def test_tenant_budgets_upsert_and_list(stores: Stores) -> None:
    assert await stores.main.tenant_budget("acme") is None
    b = TenantBudget("acme", 10.0, "month", None, 1000.0)
    await stores.main.set_tenant_budget(b)
    assert await stores.main.tenant_budget("acme") == b
    b2 = TenantBudget("acme", None, "day", 1500.0, 2000.0)
    await stores.main.set_tenant_budget(b2)
    await stores.main.set_tenant_budget(TenantBudget("a'; DROP TABLE api_keys; --", 1.0, "day",
                                                     None, 1.0))
    assert [t.tenant for t in await stores.main.tenant_budgets()] == [
        "a'; DROP TABLE api_keys; --", "acme"]
    assert await stores.main.tenant_budget("acme") == b2


def test_reserved_tenants_are_refused_at_creation() -> None:
    for name in ("default", "anonymous", "Default", "seawall-internal", "_x"):
        with pytest.raises(ValueError, match="reserved"):
            make_key(name)
    with pytest.raises(ValueError, match="reserved"):
        make_key("ok", "anonymous")
    key, _ = make_key("default", "acme")  # the name itself is fine with a real tenant
    assert key.tenant == "acme"
    with pytest.raises(ValueError, match="need --role tenant_admin"):
        make_key("x", "acme", scopes=["admin:keys"])
    with pytest.raises(ValueError, match="unknown scope"):
        make_key("x", "acme", scopes=["root"])
    with pytest.raises(ValueError, match="role"):
        make_key("x", "acme", role="operator")
