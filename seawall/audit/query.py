"""The audit log's query parameters, checked the same way for the CLI and
``GET /admin/audit``: each a ValueError naming the problem (a 400 there)."""

from __future__ import annotations

import re
import time
from datetime import UTC, datetime

from seawall.audit.model import AuditQuery

DEFAULT_LIMIT = 100
MAX_LIMIT = 1000
MAX_TENANT = 1000  # = what the log keeps of a tenant name (store.MAX_TEXT)
ACTION = re.compile(r"^[a-z][a-z0-9_]*(\.[a-z0-9_]+)*(\.\*)?$")
MAX_ACTION = 100
_RELATIVE = re.compile(r"^(\d{1,9})([smhd])$")
_UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_since(text: str, now: float | None = None) -> float:
    """A time: seconds since the epoch, an ISO 8601 date or date-time (UTC
    unless it says otherwise), or an age such as ``30m``, ``24h``, ``7d``."""
    now = time.time() if now is None else now
    text = text.strip()
    if m := _RELATIVE.match(text):
        return now - int(m.group(1)) * _UNIT_S[m.group(2)]
    if re.fullmatch(r"\d{1,12}(\.\d{1,9})?", text):
        return float(text)
    if len(text) <= 40:
        try:
            when = datetime.fromisoformat(text)
        except ValueError:
            pass
        else:
            if when.tzinfo is None:
                when = when.replace(tzinfo=UTC)
            return when.timestamp()
    raise ValueError("since is seconds since the epoch, an ISO 8601 date or date-time, "
                     "or an age like 30m, 24h, 7d")


def build_query(tenant: str | None, action: str | None, since: str | None,
                limit: int | str | None, before_id: int | str | None = None,
                max_limit: int = MAX_LIMIT) -> AuditQuery:
    if tenant is not None and not 0 < len(tenant) <= MAX_TENANT:
        raise ValueError(f"tenant is 1 to {MAX_TENANT} characters")
    if action is not None and not (len(action) <= MAX_ACTION and ACTION.match(action)):
        raise ValueError("action is a dotted name such as key.revoke, or a prefix such as "
                         "key.*")
    n = DEFAULT_LIMIT if limit is None else _int("limit", limit)
    if not 1 <= n <= max_limit:
        raise ValueError(f"limit is 1 to {max_limit}")
    before = None if before_id is None else _int("before_id", before_id)
    if before is not None and not 0 < before < 2**63:
        raise ValueError("before_id is a positive row id")
    return AuditQuery(tenant=tenant, action=action,
                      since=None if since is None else parse_since(since),
                      limit=n, before_id=before)


def _int(name: str, value: int | str) -> int:
    if isinstance(value, int):
        return value
    if not re.fullmatch(r"-?\d{1,19}", value.strip()):
        raise ValueError(f"{name} must be an integer")
    return int(value)
