"""Screenshots of every console page for docs/img/, taken with the same
headless Chromium the browser tests drive (Debian's /usr/bin/chromium,
launched by tests/e2e/chromium.py).

    PYTHONPATH=. .venv/bin/python scripts/console_screenshots.py [OUT_DIR]

Starts the fake upstream and a gateway on loopback, sends a few dozen
requests (two keys, two models, an upstream error, a rating) so the pages
have something to show, then signs in and photographs each page.
"""

from __future__ import annotations

import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from seawall.observe.records import TraceRecord  # noqa: E402
from seawall.pipeline.stages import hash_key  # noqa: E402
from seawall.quality.score_store import Score  # noqa: E402
from seawall.store.base import ApiKey  # noqa: E402
from tests.e2e.chromium import open_browser  # noqa: E402
from tests.gateway import Running, run_gateway  # noqa: E402
from tests.servers import FakeUpstreamClient, start_fake_upstream  # noqa: E402

MASTER = "sk-master-screenshots"
QUESTIONS = ["How tall is the Eiffel Tower?", "Summarise our refund policy.",
             "Translate 'good morning' into French.", "What is a circuit breaker?",
             "Write a haiku about the sea.", "Which plan includes SSO?"]


def gateway_config(url: str) -> dict[str, Any]:
    """Master key, two priced models on the fake upstream at ``url``, the cache."""
    return {
        "auth": {"master_key": MASTER},
        "providers": {"oa": {"type": "openai", "base_url": url + "/v1"}},
        "models": {"gpt-4o-mini": {"provider": "oa", "model": "small",
                                   "price": {"input_per_mtok": 0.15, "output_per_mtok": 0.6}},
                   "gpt-4o": {"provider": "oa", "model": "large",
                              "price": {"input_per_mtok": 2.5, "output_per_mtok": 10}}},
        "cache": {"enabled": True},
    }


def tenant_keys(gw: Running, **fields: Any) -> dict[str, str]:
    """A key for each of the tenants acme and globex: tenant -> its secret."""
    secrets = {}
    for tenant in ("acme", "globex"):
        secret = "sk-sw-" + uuid.uuid4().hex
        gw.on_server(gw.services.store.create_key(ApiKey(
            id="key_" + uuid.uuid4().hex[:8], name=f"{tenant}-prod", tenant=tenant,
            key_hash=hash_key(secret), prefix=secret[:10], rpm=600,
            created_at=time.time(), **fields)))
        secrets[tenant] = secret
    return secrets


def quality_rounds(gw: Running) -> None:
    """Twenty hours of traffic of two groups, one of which starts answering at
    length six hours ago (and fails one request in eight from nine to seven
    hours ago), and the evaluator's own drift and SLO rounds over it at each
    of the last twelve hours, for the Quality page's charts."""
    now = time.time()
    recs = []
    for i in range(2400):
        at = now - 20 * 3600 + i * 30
        longer = at > now - 6 * 3600 and i % 2 == 0
        failing = now - 9 * 3600 < at < now - 7 * 3600 and i % 8 == 0
        recs.append(TraceRecord(
            trace_id=f"drift-{i}", endpoint="chat.completions", started_at=at,
            tenant="acme", model="gpt-4o-mini", deployment="gpt-4o-mini",
            status=503 if failing else 200,
            latency_ms=300.0, input=[{"role": "user", "content": f"question {i}"}],
            output="answer", prompt_tokens=40 + i % 13,
            completion_tokens=(90 + i % 17) * (3 if longer else 1),
            prompt_version="support-answer@" + ("2" if i % 2 == 0 else "1")))
    gw.on_server(gw.services.store.write_traces(recs))
    quality = gw.services.quality
    assert quality is not None and quality.drift is not None
    for hour in range(12, 0, -1):
        at = now - hour * 3600
        reports = gw.on_server(quality.drift.evaluate(now=at), timeout=120)
        gw.on_server(quality.remember(reports, at))
        for quarter in range(4):  # SLO rounds every 15 minutes
            t = at + quarter * 900
            gw.on_server(quality.remember_slos(gw.on_server(quality.slo.evaluate(t)), t))
    gw.on_server(quality.evaluate_drift(send=False), timeout=120)  # now: the tables too
    gw.on_server(quality.evaluate_slos(send=False))


def main(out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    url, stop = start_fake_upstream()
    upstream = FakeUpstreamClient(url)
    config = {
        **gateway_config(url),
        # Drift and SLO rounds are run by this script over made-up history
        # (quality_rounds).
        "quality": {"interval_s": 86400,
                    "slos": [{"name": "availability", "kind": "availability",
                              "objective": 0.99, "period_s": 86400}],
                    "drift": {"interval_s": 86400, "embeddings": False, "min_samples": 20,
                              "sample": 60, "recent_s": 3600, "reference_s": 6 * 3600}},
    }
    try:
        with tempfile.TemporaryDirectory() as tmp, run_gateway(config, Path(tmp)) as gw:
            secrets = tenant_keys(gw, budget_usd=50.0, budget_period="month")
            with httpx.Client(base_url=gw.url, timeout=30) as api:
                for i in range(36):
                    tenant = ("acme", "globex")[i % 2]
                    model = ("gpt-4o-mini", "gpt-4o", "gpt-4o-mini")[i % 3]
                    if i == 17:
                        upstream.script(queue=[{"error_status": 503}] * 3)
                    api.post("/v1/chat/completions", headers={
                        "authorization": f"Bearer {secrets[tenant]}"}, json={
                        "model": model, "user": f"user-{i % 4}",
                        "messages": [{"role": "user", "content": QUESTIONS[i % len(QUESTIONS)]}]})
            for text in ("You are a support agent.", "You are a concise support agent."):
                gw.services.prompts.push("support-answer", {"messages": [
                    {"role": "system", "content": text}]}, labels=["production"])
            r = httpx.post(gw.url + "/v1/collections/handbook/documents", timeout=120, headers={
                "authorization": f"Bearer {MASTER}"}, json={"documents": [
                    {"source": "eiffel.md", "text": "# Eiffel Tower\n\n## Height\n\nThe "
                     "tower is 330 metres tall, antennas included."},
                    {"source": "eiffel-history.md", "text": "# Eiffel Tower\n\n## History"
                     "\n\nBuilt for the 1889 World's Fair, finished in March 1889."}]})
            assert r.status_code < 300, r.text
            gw.on_server(gw.services.writer.flush())
            upstream.script(default={"text": "The Eiffel Tower is 330 metres tall, antennas "
                                     "included [1]; it was finished in 1889 [2].",
                                     "tokens_per_s": 30})
            quality_rounds(gw)
            made = httpx.post(gw.url + "/admin/keys", timeout=30, headers={
                "authorization": f"Bearer {MASTER}"}, json={
                "name": "acme-batch", "tenant": "acme", "budget_usd": 20.0,
                "budget_period": "day"}).json()
            with open_browser(Path(tmp) / "profile") as ctx:
                page = ctx.new_page()
                page.goto(gw.url + "/ui/overview")
                page.screenshot(path=str(out / "console-signin.png"))
                page.fill("#key", MASTER)
                page.click("button[type=submit]")
                page.wait_for_url("**/ui/overview")
                page.wait_for_timeout(500)  # the chart draws after load
                page.screenshot(path=str(out / "console-overview.png"), full_page=True)
                page.goto(gw.url + "/ui/playground")
                page.select_option("#p-collection", "handbook")
                page.fill("#p-message", "How tall is the Eiffel Tower?")
                page.click("#p-send")
                page.wait_for_selector("#p-rate", state="visible")
                page.click("#p-down")
                page.wait_for_selector("#p-rated:has-text('Thanks')")
                page.wait_for_timeout(1200)  # cost from the stored record
                page.screenshot(path=str(out / "console-playground.png"), full_page=True)
                rid = page.text_content("#p-trace")
                gw.on_server(gw.services.writer.flush())
                gw.on_server(gw.services.scores.put(Score(
                    trace_id=rid, judge="faithfulness", rubric="faithfulness", tenant="default",
                    model="gpt-4o-mini", score=5.0, judge_model="gpt-4o",
                    reasoning="Both claims are supported by the cited sources.",
                    created_at=time.time())))
                page.click("#p-trace")
                page.wait_for_selector("#trace-output")
                page.screenshot(path=str(out / "console-trace.png"), full_page=True)
                page.goto(gw.url + "/ui/traces")
                page.screenshot(path=str(out / "console-traces.png"), full_page=True)
                page.goto(gw.url + "/ui/keys")
                page.screenshot(path=str(out / "console-keys.png"), full_page=True)
                row = page.locator(f"tr[data-key='{made['id']}']")
                row.locator("details:has(summary:text-is('Budget')) summary").click()
                row.locator("details:has(summary:text-is('Rotate')) summary").click()
                page.once("dialog", lambda d: d.accept())
                row.locator("form[data-api-form$='/rotate'] button[type=submit]").click()
                page.wait_for_selector("#rotated", state="visible")
                # Masked in the picture, so that no secret-shaped text lands in docs/.
                page.eval_on_selector("#r-secret", "el => el.value = el.value.slice(0, 10) "
                                      "+ '•'.repeat(32)")
                page.screenshot(path=str(out / "console-keys-rotate.png"), full_page=True)
                page.goto(gw.url + "/ui/prompts")
                page.screenshot(path=str(out / "console-prompts.png"), full_page=True)
                gw.services.prompts.push("support-answer", {"messages": [  # not labelled
                    {"role": "system", "content": "You are a concise, friendly support "
                     "agent."}]}, labels=[])
                page.goto(gw.url + "/ui/prompts/support-answer")
                page.locator("#versions tr[data-version='3'] select").select_option("production")
                page.once("dialog", lambda d: d.accept())
                page.click("#versions button[data-move='3']")
                page.wait_for_selector("#versions tr[data-version='3'] li[data-label='production']")
                page.screenshot(path=str(out / "console-prompt-diff.png"), full_page=True)
                page.goto(gw.url + "/ui/quality")
                page.wait_for_selector(".drift-chart[data-drawn='1']")
                page.screenshot(path=str(out / "console-quality.png"), full_page=True)
                page.set_viewport_size({"width": 390, "height": 844})
                page.goto(gw.url + "/ui/overview")
                page.wait_for_timeout(500)
                page.screenshot(path=str(out / "console-phone.png"))
    finally:
        stop()
    print("\n".join(str(p) for p in sorted(out.glob("console-*.png"))))


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else Path("docs/img"))
