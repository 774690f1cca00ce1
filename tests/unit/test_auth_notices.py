"""The key cache of AuthStage and change notices, on a real SQLite key store:
a ``key_revoked`` notice drops that key at once (even with the store down, it
is not honoured again), a resync looks every key up again but keeps the stale
fallback for a store that is down."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from seawall.config import AuthSettings
from seawall.errors import ServiceUnavailable
from seawall.pipeline.stages import AuthStage, hash_key
from seawall.store.base import ApiKey
from seawall.store.sqlite import SqliteStore


async def _setup(tmp_path: Path) -> tuple[SqliteStore, AuthStage, dict[str, str]]:
    store = SqliteStore(tmp_path / "seawall.db")
    await store.open()
    secrets = {}
    for name in ("a", "b"):
        secret = f"sk-sw-{name}-secret"
        secrets[name] = secret
        await store.create_key(ApiKey(id=f"key_{name}", name=name, tenant=name,
                                      key_hash=hash_key(secret), prefix=secret[:10], rpm=None,
                                      created_at=time.time()))
    auth = AuthStage(AuthSettings(key_cache_ttl_s=300, stale_key_s=300), store)
    return store, auth, secrets


async def test_a_revocation_notice_drops_that_key_only(tmp_path: Path) -> None:
    store, auth, secrets = await _setup(tmp_path)
    try:
        assert (await auth._lookup(secrets["a"])).id == "key_a"  # type: ignore[union-attr]
        assert (await auth._lookup(secrets["b"])).id == "key_b"  # type: ignore[union-attr]
        await store.revoke_key("key_a")
        assert await auth._lookup(secrets["a"]) is not None  # cached for 300 s ...
        auth.key_revoked({"kind": "key_revoked", "id": "key_a"})
        assert await auth._lookup(secrets["a"]) is None  # ... until the notice
        await store.close()  # the store goes down: b is honoured from its cache
        assert (await auth._lookup(secrets["b"])).id == "key_b"  # type: ignore[union-attr]
    finally:
        await store.close()


async def test_a_revoked_key_is_not_honoured_from_a_stale_entry(tmp_path: Path) -> None:
    store, auth, secrets = await _setup(tmp_path)
    try:
        await auth._lookup(secrets["a"])
        auth.key_revoked({"kind": "key_revoked", "id": "key_a"})
        await store.close()  # the store is down when the key comes back: 503, not honoured
        with pytest.raises(ServiceUnavailable):
            await auth._lookup(secrets["a"])
    finally:
        await store.close()


async def test_resync_looks_keys_up_again_keeping_the_stale_fallback(tmp_path: Path) -> None:
    store, auth, secrets = await _setup(tmp_path)
    try:
        await auth._lookup(secrets["a"])
        await auth._lookup(secrets["b"])
        await store.revoke_key("key_a")  # its notice was missed (Redis was away)
        auth.forget_keys()
        assert await auth._lookup(secrets["a"]) is None
        auth.forget_keys()
        await store.close()  # store down at resync: b still works for stale_key_s
        assert (await auth._lookup(secrets["b"])).id == "key_b"  # type: ignore[union-attr]
    finally:
        await store.close()
