"""The audit log's query parameters and who may look across tenants."""

from __future__ import annotations

import pytest

from seawall.api.audit_routes import Forbidden, tenant_filter
from seawall.audit.query import build_query, parse_since
from seawall.pipeline.context import RequestContext
from seawall.pipeline.stages import MASTER
from seawall.store.base import ApiKey


@pytest.mark.parametrize("text,want", [
    ("30m", 10_000.0 - 1800), ("24h", 10_000.0 - 86400), ("2d", 10_000.0 - 172800),
    ("15s", 9985.0), ("1700000000", 1_700_000_000.0), ("1700000000.5", 1_700_000_000.5),
    ("1970-01-01T01:00:00", 3600.0), ("1970-01-01T01:00:00+01:00", 0.0),
    ("1970-01-02", 86400.0),
])
def test_since_forms(text: str, want: float) -> None:
    assert parse_since(text, now=10_000.0) == want


@pytest.mark.parametrize("text", ["", "yesterday", "5w", "-5m", "1e9", "nan", "inf",
                                  "9" * 13, "2026-13-01", "x" * 1000])
def test_since_refuses_the_rest(text: str) -> None:
    with pytest.raises(ValueError, match="since is"):
        parse_since(text, now=10_000.0)


def test_build_query_defaults_and_bounds() -> None:
    q = build_query(None, None, None, None)
    assert (q.tenant, q.action, q.since, q.limit, q.before_id) == (None, None, None, 100, None)
    assert build_query("acme", "key.*", None, "5", "7").before_id == 7
    assert build_query(None, None, None, 5000, max_limit=10_000).limit == 5000
    for bad in [dict(limit=0), dict(limit="1001"), dict(limit=" "), dict(action="key."),
                dict(action="key.**"), dict(action=".key"), dict(tenant="")]:
        args = {"tenant": None, "action": None, "since": None, "limit": None, **bad}
        with pytest.raises(ValueError):
            build_query(**args)  # type: ignore[arg-type]


def _ctx(key: ApiKey | None, tenant: str) -> RequestContext:
    ctx = RequestContext(endpoint="admin.audit.list")
    ctx.key, ctx.tenant = key, tenant
    return ctx


def test_the_operator_chooses_any_tenant() -> None:
    assert tenant_filter(_ctx(MASTER, "default"), None) is None
    assert tenant_filter(_ctx(MASTER, "default"), "acme") == "acme"
    assert tenant_filter(_ctx(None, "anonymous"), "acme") == "acme"  # anonymous loopback


def test_anyone_else_is_confined_to_its_own_tenant() -> None:
    """A tenant admin (the scopes branch gives keys a role) sees only its tenant."""
    key = ApiKey(id="key_1", name="t-admin", tenant="acme", key_hash="", prefix="sk-sw-ab",
                 rpm=None, created_at=0.0)
    assert tenant_filter(_ctx(key, "acme"), None) == "acme"
    assert tenant_filter(_ctx(key, "acme"), "acme") == "acme"
    with pytest.raises(Forbidden, match="admin:audit"):
        tenant_filter(_ctx(key, "acme"), "globex")
