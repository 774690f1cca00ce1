"""Making, rotating and showing virtual keys: one implementation for the
CLI (`seawall keys ...`) and the admin API (``/admin/keys``)."""

from __future__ import annotations

import re
import secrets
import time
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from seawall.pipeline.permissions import check_key_fields
from seawall.pipeline.stages import VIRTUAL_KEY_PREFIX, hash_key
from seawall.store.base import ApiKey

_DURATION = re.compile(r"^(\d+(?:\.\d+)?)\s*([smhdw])$")
_UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
MAX_NAME = 200
MAX_LIST = 100  # models or collections a key may name
PREFIX_CHARS = 10  # of the secret, kept to recognise a key in lists


def parse_duration(text: str) -> float:
    """``30d``, ``1h``, ``90m``, ``45s``, ``2w`` as seconds (ValueError otherwise)."""
    m = _DURATION.match(text.strip().lower())
    if m is None:
        raise ValueError(f"{text!r} is not a duration (e.g. 30d, 12h, 90m, 45s, 2w)")
    return float(m.group(1)) * _UNIT_S[m.group(2)]


def parse_expires(text: str, now: float | None = None) -> float:
    """An expiry as a Unix time: a duration from now (``30d``) or an ISO
    date/time (``2027-01-31``, ``2027-01-31T12:00Z``; UTC unless it says)."""
    now = time.time() if now is None else now
    try:
        return now + parse_duration(text)
    except ValueError:
        pass
    try:
        when = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(f"{text!r} is neither a duration (30d) nor an ISO date "
                         "(2027-01-31)") from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    at = when.timestamp()
    if at <= now:
        raise ValueError(f"the expiry {text!r} is in the past")
    return at


def names(value: Sequence[str] | str | None, what: str) -> tuple[str, ...] | None:
    """A list option (``a,b`` on the CLI, a JSON list in the API) checked."""
    if value is None:
        return None
    items = [v.strip() for v in (value.split(",") if isinstance(value, str) else value)]
    items = [v for v in items if v]
    if len(items) > MAX_LIST or any(len(v) > MAX_NAME for v in items):
        raise ValueError(f"{what}: at most {MAX_LIST} names of at most {MAX_NAME} characters")
    return tuple(dict.fromkeys(items))


def new_secret() -> str:
    return VIRTUAL_KEY_PREFIX + secrets.token_urlsafe(24)


def make_key(name: str, tenant: str | None = None, *, role: str = "app",
             scopes: Sequence[str] | None = None, models: Sequence[str] | None = None,
             collections_read: Sequence[str] | None = None,
             collections_write: Sequence[str] | None = None, expires_at: float | None = None,
             **limits: Any) -> tuple[ApiKey, str]:
    """A new key and its secret (shown once). ``tenant`` defaults to the
    name, and neither may be a reserved tenant (ValueError says why)."""
    if not 0 < len(name) <= MAX_NAME:
        raise ValueError(f"a key name is 1 to {MAX_NAME} characters")
    if tenant is None:
        tenant = name
        try:
            check_key_fields(role, tenant, scopes)
        except ValueError as e:
            raise ValueError(f"{e} (the tenant defaults to the key's name; give --tenant)")\
                from None
    held = check_key_fields(role, tenant, scopes)
    secret = new_secret()
    key = ApiKey(id="key_" + uuid.uuid4().hex[:12], name=name, tenant=tenant,
                 key_hash=hash_key(secret), prefix=secret[:PREFIX_CHARS],
                 created_at=time.time(), role=role, scopes=held,
                 models=names(models, "models"),
                 collections_read=names(collections_read, "collections_read"),
                 collections_write=names(collections_write, "collections_write"),
                 expires_at=expires_at, **{"rpm": None, **limits})
    return key, secret


def rotated_secret() -> tuple[str, str, str]:
    """(secret, its hash, its prefix) for a rotation."""
    secret = new_secret()
    return secret, hash_key(secret), secret[:PREFIX_CHARS]


def public(key: ApiKey) -> dict[str, Any]:
    """What lists and the admin API show of a key: never its hash or secret."""
    from seawall.pipeline.permissions import scopes_of

    return {"id": key.id, "object": "key", "name": key.name, "tenant": key.tenant,
            "role": key.role, "prefix": key.prefix, "scopes": list(scopes_of(key)),
            "models": None if key.models is None else list(key.models),
            "collections_read": (None if key.collections_read is None
                                 else list(key.collections_read)),
            "collections_write": (None if key.collections_write is None
                                  else list(key.collections_write)),
            "rpm": key.rpm, "tpm": key.tpm, "priority": key.priority, "cache": key.cache,
            "budget_usd": key.budget_usd, "budget_period": key.budget_period,
            "budget_reset_at": key.budget_reset_at,
            "created_at": key.created_at, "expires_at": key.expires_at,
            "revoked_at": key.revoked_at, "previous_secret_valid_until": key.prev_expires_at}
