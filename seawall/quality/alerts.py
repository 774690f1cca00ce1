"""Alerts to webhooks: Slack-compatible JSON or a generic JSON document.

Use (any part of the gateway that must tell a human something)::

    sink.send(Alert(key="budget:acme:80", title="acme spent 80% of its budget",
                    severity="ticket", source="budget", summary="..."))
    await sink.update(alert)   # the same, deduplicated by key (see below)

- :meth:`AlertSink.send` never blocks and never raises: the alert goes into
  a bounded queue that one background task drains, POSTing it to every
  ``alerts.webhooks`` entry with retries and exponential backoff. A full
  queue drops the alert; every outcome is counted in
  ``seawall_alert_deliveries_total{outcome}`` (sent, retried, failed, dropped).
- :meth:`AlertSink.update` records the alert's state (firing or resolved) in
  the shared store first and sends only a change: a firing alert is sent
  once, its resolution once, and a restart or another replica does not send
  them again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any, Literal

import aiohttp
import orjson
import yarl
from prometheus_client import Counter

from seawall.config import AlertSettings, WebhookSettings

if TYPE_CHECKING:
    from seawall.observe.metrics import Metrics
    from seawall.quality.slo_store import SloStore

__all__ = ["Alert", "AlertSink", "generic_payload", "slack_payload"]

log = logging.getLogger("seawall.alerts")

RETRY_STATUS = frozenset({408, 425, 429, 500, 502, 503, 504})
MAX_BACKOFF_S = 60.0
_SLACK_TEXT = 2900  # a section's text may hold 3000 characters


@dataclass(slots=True)
class Alert:
    """One alert. ``key`` names the condition (``slo:<name>:page``,
    ``drift:<model>:<prompt version>``): its firing and its resolution share it."""

    key: str
    title: str
    status: Literal["firing", "resolved"] = "firing"
    severity: str = "ticket"  # page | ticket | info
    source: str = ""  # slo | drift | budget | ...
    summary: str = ""
    labels: dict[str, str] = field(default_factory=dict)
    values: dict[str, Any] = field(default_factory=dict)  # figures behind the decision
    evidence: list[dict[str, Any]] = field(default_factory=list)  # the worst traces
    at: float = 0.0

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d["at"] = self.at or time.time()
        return d


def generic_payload(alert: Alert) -> dict[str, Any]:
    """Everything, for a program to read."""
    return {"version": 1, "source": "seawall", "alert": alert.to_json()}


def _cut(text: str, n: int) -> str:
    return text if len(text) <= n else text[: n - 1] + "…"


def _esc(text: str) -> str:
    """Slack's mrkdwn control characters escaped: evidence holds users'
    comments and prompts, and ``<!channel>`` in one must not ping anyone."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _evidence_line(e: dict[str, Any]) -> str:
    rest = ", ".join(f"{k}={v}" for k, v in e.items()
                     if k not in ("trace_id", "at") and v not in (None, ""))
    return f"• `{_esc(str(e.get('trace_id', '?')))}` {_esc(_cut(rest, 300))}"


def slack_payload(alert: Alert) -> dict[str, Any]:
    """``text`` (notifications, fallbacks) and Block Kit blocks, within Slack's limits."""
    mark = "RESOLVED" if alert.status == "resolved" else f"FIRING {alert.severity.upper()}"
    text = f"[{mark}] {alert.title}"
    blocks: list[dict[str, Any]] = [
        {"type": "header", "text": {"type": "plain_text", "text": _cut(text, 150)}}]
    if alert.summary:
        blocks.append({"type": "section",
                       "text": {"type": "mrkdwn", "text": _cut(_esc(alert.summary), _SLACK_TEXT)}})
    facts = {**alert.labels, **{k: (f"{v:.4g}" if isinstance(v, float) else str(v))
                                for k, v in alert.values.items()}}
    if facts:
        blocks.append({"type": "section", "fields": [
            {"type": "mrkdwn", "text": _cut(_esc(f"*{k}*\n{v}"), 2000)}
            for k, v in list(facts.items())[:10]]})
    if alert.evidence:
        lines = "\n".join(_evidence_line(e) for e in alert.evidence)
        blocks.append({"type": "section", "text": {
            "type": "mrkdwn", "text": _cut(f"*Worst traces*\n{lines}", _SLACK_TEXT)}})
    blocks.append({"type": "context", "elements": [
        {"type": "mrkdwn", "text": _esc(_cut(f"seawall · {alert.key}", 300))}]})
    return {"text": _esc(text), "blocks": blocks}


class AlertSink:
    """Sends alerts in the background; ``start`` it on the event loop,
    ``close`` it at shutdown (what is still queued then is dropped, counted)."""

    def __init__(self, settings: AlertSettings, metrics: Metrics | None = None,
                 state: SloStore | None = None) -> None:
        self.settings = settings
        self.state = state
        self._queue: asyncio.Queue[Alert] = asyncio.Queue(settings.queue_size)
        self._task: asyncio.Task[None] | None = None
        self._client: aiohttp.ClientSession | None = None
        self.deliveries = _counter(metrics)

    @property
    def enabled(self) -> bool:
        return bool(self.settings.webhooks)

    async def start(self) -> None:
        if self.enabled and self._task is None:
            self._client = aiohttp.ClientSession()
            self._task = asyncio.create_task(self._run(), name="seawall-alerts")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        left = self._queue.qsize()
        if left:
            self.deliveries.labels("dropped").inc(left * len(self.settings.webhooks))
            log.warning("%d alerts not sent at shutdown", left)
        if self._client is not None:
            await self._client.close()
            self._client = None

    def send(self, alert: Alert) -> bool:
        """Queue ``alert`` for every webhook; False when it was dropped (queue
        full) or there is no webhook. Never blocks, never raises."""
        if not self.enabled:
            return False
        if not alert.at:
            alert.at = time.time()
        try:
            self._queue.put_nowait(alert)
        except asyncio.QueueFull:
            self.deliveries.labels("dropped").inc(len(self.settings.webhooks))
            log.warning("alert queue full: dropped %s", alert.key, extra={"alert": alert.key})
            return False
        return True

    async def update(self, alert: Alert) -> bool:
        """Record ``alert.status`` for ``alert.key`` and send it if that is a
        change (True). Needs the state store (``state``)."""
        assert self.state is not None, "AlertSink.update needs a state store"
        changed = await self.state.transition(
            alert.key, alert.status, severity=alert.severity, source=alert.source,
            title=alert.title, detail={"summary": alert.summary, "values": alert.values,
                                       "labels": alert.labels, "evidence": alert.evidence})
        if changed:
            log.warning("alert %s: %s", alert.status, alert.title,
                        extra={"alert": alert.key, "status": alert.status,
                               "severity": alert.severity})
            self.send(alert)
        return changed

    async def _run(self) -> None:
        while True:
            alert = await self._queue.get()
            for hook in self.settings.webhooks:
                try:
                    await self._deliver(hook, alert)
                except asyncio.CancelledError:
                    raise
                except Exception:  # a bug here must not end deliveries
                    self.deliveries.labels("failed").inc()
                    log.exception("alert delivery to %s failed", _where(hook.url))

    async def _deliver(self, hook: WebhookSettings, alert: Alert) -> None:
        assert self._client is not None
        body = slack_payload(alert) if hook.format == "slack" else generic_payload(alert)
        delay = self.settings.backoff_s
        for attempt in range(1, self.settings.max_attempts + 1):
            problem = ""
            try:
                async with self._client.post(
                        hook.url, data=orjson.dumps(body), allow_redirects=False,
                        headers={"content-type": "application/json"},
                        timeout=aiohttp.ClientTimeout(total=hook.timeout_s)) as r:
                    status = r.status
                if status < 300:
                    self.deliveries.labels("sent").inc()
                    return
                problem = f"HTTP {status}"
                if status not in RETRY_STATUS:
                    break
            except (aiohttp.ClientError, TimeoutError) as e:
                problem = type(e).__name__
            if attempt < self.settings.max_attempts:
                self.deliveries.labels("retried").inc()
                await asyncio.sleep(delay)
                delay = min(delay * 2, MAX_BACKOFF_S)
        self.deliveries.labels("failed").inc()
        log.error("alert %s not delivered to %s: %s", alert.key, _where(hook.url), problem,
                  extra={"alert": alert.key})


def _where(url: str) -> str:
    """A webhook's scheme and host only: its path often holds a secret token."""
    parts = yarl.URL(url)
    return f"{parts.scheme}://{parts.host}"


def _counter(metrics: Metrics | None) -> Any:
    from prometheus_client import CollectorRegistry

    registry = metrics.registry if metrics is not None else CollectorRegistry()
    existing = getattr(registry, "_seawall_alert_deliveries", None)
    if existing is not None:
        return existing
    c = Counter("seawall_alert_deliveries", "Alert deliveries per webhook by outcome: sent, "
                "retried, failed, dropped (queue full or shutdown).", ("outcome",),
                registry=registry)
    registry._seawall_alert_deliveries = c  # type: ignore[attr-defined]
    return c
