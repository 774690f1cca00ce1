"""Changes made by editing the config file are admin actions too.

Experiments, guardrails, routes, model declarations, limits and quality
settings change when an operator edits ``seawall.yaml`` and restarts (there
is no API for them, on purpose: config in git is their review). At start,
each of these sections is fingerprinted and compared with the last one the
audit log recorded; a change is appended as ``<section>.config`` by actor
``config-file``, with the section before and after (secrets scrubbed, like
every audit record). Replicas starting together may each record the same
change once; a failed write is logged, never fatal: the gateway must start
even when it cannot say what changed.
"""

from __future__ import annotations

import hashlib
import logging
from typing import TYPE_CHECKING, Any

import orjson

from seawall.audit.model import ALL_TENANTS, Actor, AuditEvent, AuditQuery

if TYPE_CHECKING:
    from seawall.audit.record import Auditor
    from seawall.config import Settings

log = logging.getLogger("seawall.audit")

# settings section -> audit action
SECTIONS = {"experiments": "experiment.config", "guardrails": "guardrail.config",
            "routes": "route.config", "models": "model.config", "limits": "limit.config",
            "quality": "quality.config"}
CONFIG_FILE = Actor(id="config-file", name="config file", role="operator")


def section_state(settings: Settings, section: str) -> dict[str, Any]:
    value = getattr(settings, section)
    dumped = ({k: v.model_dump(mode="json") for k, v in value.items()}
              if isinstance(value, dict) else value.model_dump(mode="json"))
    return {section: dumped}


def fingerprint(state: dict[str, Any]) -> str:
    return hashlib.sha256(orjson.dumps(state, option=orjson.OPT_SORT_KEYS)).hexdigest()[:16]


async def record_config_changes(settings: Settings, audit: Auditor) -> list[str]:
    """Append one record per audited section that changed since the last
    recorded start; the actions recorded (for the log and tests)."""
    from seawall.config import parse_settings

    defaults = parse_settings({})
    recorded = []
    for section, action in SECTIONS.items():
        try:
            state = section_state(settings, section)
            target = f"{section}@{fingerprint(state)}"
            last = await audit.query(AuditQuery(action=action, limit=1))
            if last and last[0].target == target:
                continue
            if not last and state == section_state(defaults, section):
                continue  # never recorded and still the defaults: nothing changed
            await audit.append(AuditEvent(
                action=action, actor=CONFIG_FILE, tenant=ALL_TENANTS, target=target,
                source="startup", before=last[0].after if last else None, after=state))
            recorded.append(action)
        except Exception:
            log.exception("could not record a change of the %r settings in the audit log",
                          section)
    return recorded
