"""Alert payloads (Slack Block Kit limits, the generic document) and the
sink's bounded queue: a full queue drops and counts, never blocks."""

from __future__ import annotations

import json

from seawall.config import AlertSettings
from seawall.observe.metrics import Metrics
from seawall.quality.alerts import Alert, AlertSink, generic_payload, slack_payload


def _alert(**kw: object) -> Alert:
    base: dict[str, object] = {
        "key": "slo:s:page", "title": "SLO s is burning " + "x" * 300, "severity": "page",
        "source": "slo", "summary": "s" * 5000, "labels": {"slo": "s"},
        "values": {"burn_1h": 20.123456, **{f"v{i}": i for i in range(20)}},
        "evidence": [{"trace_id": f"t{i}", "score": 1, "comment": "c" * 1000}
                     for i in range(10)]}
    return Alert(**{**base, **kw})  # type: ignore[arg-type]


def test_slack_payload_keeps_to_block_kit_limits() -> None:
    body = slack_payload(_alert())
    assert body["text"].startswith("[FIRING PAGE] SLO s is burning")
    header, summary, facts, worst, context = body["blocks"]
    assert header["type"] == "header" and len(header["text"]["text"]) <= 150
    assert len(summary["text"]["text"]) <= 3000
    assert len(facts["fields"]) == 10  # Slack's maximum
    assert "*burn_1h*\n20.12" in facts["fields"][1]["text"]
    assert len(worst["text"]["text"]) <= 3000 and "`t0`" in worst["text"]["text"]
    assert "slo:s:page" in context["elements"][0]["text"]
    resolved = slack_payload(_alert(status="resolved", evidence=[]))
    assert resolved["text"].startswith("[RESOLVED]")
    assert all("Worst traces" not in json.dumps(b) for b in resolved["blocks"])


def test_generic_payload_has_everything() -> None:
    doc = generic_payload(_alert())
    assert doc["version"] == 1 and doc["source"] == "seawall"
    a = doc["alert"]
    assert a["key"] == "slo:s:page" and a["status"] == "firing" and a["at"] > 0
    assert len(a["evidence"]) == 10 and len(a["summary"]) == 5000  # nothing cut
    json.dumps(doc)


def test_a_full_queue_drops_and_counts_without_blocking() -> None:
    metrics = Metrics()
    settings = AlertSettings.model_validate(
        {"queue_size": 2, "webhooks": [{"url": "http://127.0.0.1:9/a"},
                                       {"url": "http://127.0.0.1:9/b", "format": "slack"}]})
    sink = AlertSink(settings, metrics)  # not started: nothing drains the queue
    assert sink.send(_alert()) and sink.send(_alert())
    assert sink.send(_alert()) is False
    assert sink.deliveries.labels("dropped")._value.get() == 2  # one per webhook
    assert AlertSink(AlertSettings(), metrics).send(_alert()) is False  # no webhook


def test_slack_mentions_in_evidence_are_escaped() -> None:
    body = slack_payload(_alert(evidence=[{"trace_id": "t1", "comment": "<!channel> & <@U1>"}],
                                summary="x <!here>"))
    text = json.dumps(body)
    assert "<!channel>" not in text and "<!here>" not in text and "<@U1>" not in text
    assert "&lt;!channel&gt; &amp; &lt;@U1&gt;" in text
