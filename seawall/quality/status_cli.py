"""``seawall quality``: every SLO (objective, current, error budget left,
burn rates), drift per model x prompt version (p-values) and the alert
state, evaluated now from the configured store (sends nothing)."""

from __future__ import annotations

import time
from typing import Any

import click

from seawall.cli_common import config_option, run_on_store, settings_from
from seawall.quality.burn import window_label


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{x:.2%}"


def _text(doc: dict[str, Any]) -> str:
    lines = []
    firing = {a["key"] for a in doc["alerts"] if a["status"] == "firing"}
    lines.append("SLOs" if doc["slos"] else "SLOs: none configured (quality.slos)")
    for s in doc["slos"]:
        state = [k.rsplit(":", 1)[1].upper() for k in sorted(firing)
                 if k.startswith(f"slo:{s['name']}:")]
        rates = "  ".join(f"{w}={r:.3g}" for w, r in s["burn_rates"].items())
        lines.append(
            f"  {s['name']}  [{s['kind']}: {s['good_when']}]  objective {_pct(s['objective'])} "
            f"over {window_label(s['period_s'])}  current {_pct(s['current'])} "
            f"({s['events']} events, {s['bad']} bad)  budget left "
            f"{_pct(s['budget_remaining'])}  "
            + (f"FIRING {','.join(state)}" if state else "ok"))
        lines.append(f"      burn rates: {rates}")
    if doc.get("drift") is None:
        lines.append("Drift: off (quality.drift.enabled)")
    else:
        lines.append("Drift" if doc["drift"] else "Drift: no traffic in the recent window")
        for d in doc["drift"]:
            key = f"drift:{d['model']}:{d['prompt_version'] or '-'}"
            verdict = "FIRING" if key in firing else ("drifted" if d["drifted"] else "ok")
            lines.append(f"  {d['model']} × {d['prompt_version'] or '(no prompt version)'}  "
                         f"{d['requests']} recent requests  {verdict}"
                         + (f"  ({d['skipped']})" if d["skipped"] else
                            f"  (each test at p < {d['alpha_each']:.2g})"))
            for t in d["tests"]:
                lines.append(f"      {t['name']:<17} {t['method']:<12} p={t['p_value']:.3g}  "
                             f"n={t['n_reference']}/{t['n_recent']}")
    lines.append("Alerts" if doc["alerts"] else "Alerts: none recorded")
    for a in doc["alerts"]:
        when = a["resolved_at"] if a["status"] == "resolved" else a["fired_at"]
        lines.append(f"  {a['status'].upper():<8} {a['severity']:<6} {a['key']}  since "
                     f"{time.strftime('%Y-%m-%d %H:%M:%S', time.gmtime(when))} UTC  "
                     f"{a['title']}")
    return "\n".join(lines)


@click.command("quality")
@config_option
@click.option("--json", "as_json", is_flag=True, help="One JSON document.")
@click.option("--no-drift", is_flag=True, help="Skip the drift tests (they embed a sample "
              "of recent traffic: seconds of CPU per model).")
def quality(config: str | None, as_json: bool, no_drift: bool) -> None:
    """SLO status, drift and alerts (docs/quality.md)."""
    import orjson

    from seawall.quality.alerts import AlertSink
    from seawall.quality.evaluator import QualityEvaluator

    settings = settings_from(config)
    drift_on = settings.quality.drift.enabled and not no_drift

    async def go(stores: Any) -> dict[str, Any]:
        embedder = None
        if drift_on and settings.quality.drift.embeddings:
            from seawall.ml.embedder import Embedder

            embedder = Embedder()
        store = stores.slo_store()
        await store.open()
        try:
            ev = QualityEvaluator(settings, store, AlertSink(settings.alerts), None, embedder)
            snap = await ev.snapshot(drift_too=drift_on)
            doc = snap.to_json()
            if not drift_on:
                doc["drift"] = None
            return doc
        finally:
            await store.close()

    doc = run_on_store(go, settings, whole=True)
    if as_json:
        click.echo(orjson.dumps(doc).decode())
    else:
        click.echo(_text(doc))
