"""Screenshots of every console page for docs/img/, taken with the same
headless Chromium the browser tests drive (Debian's /usr/bin/chromium).

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

import httpx
from playwright.sync_api import sync_playwright

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from seawall.pipeline.stages import hash_key  # noqa: E402
from seawall.quality.score_store import Score  # noqa: E402
from seawall.store.base import ApiKey  # noqa: E402
from tests.gateway import run_gateway  # noqa: E402
from tests.servers import FakeUpstreamClient, start_fake_upstream  # noqa: E402

MASTER = "sk-master-screenshots"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]
QUESTIONS = ["How tall is the Eiffel Tower?", "Summarise our refund policy.",
             "Translate 'good morning' into French.", "What is a circuit breaker?",
             "Write a haiku about the sea.", "Which plan includes SSO?"]


def main(out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    url, stop = start_fake_upstream()
    upstream = FakeUpstreamClient(url)
    config = {
        "auth": {"master_key": MASTER},
        "providers": {"oa": {"type": "openai", "base_url": url + "/v1"}},
        "models": {"gpt-4o-mini": {"provider": "oa", "model": "small",
                                   "price": {"input_per_mtok": 0.15, "output_per_mtok": 0.6}},
                   "gpt-4o": {"provider": "oa", "model": "large",
                              "price": {"input_per_mtok": 2.5, "output_per_mtok": 10}}},
        "cache": {"enabled": True},
    }
    try:
        with tempfile.TemporaryDirectory() as tmp, run_gateway(config, Path(tmp)) as gw:
            secrets = {}
            for tenant in ("acme", "globex"):
                secret = "sk-sw-" + uuid.uuid4().hex
                gw.on_server(gw.services.store.create_key(ApiKey(
                    id="key_" + uuid.uuid4().hex[:8], name=f"{tenant}-prod", tenant=tenant,
                    key_hash=hash_key(secret), prefix=secret[:10], rpm=600,
                    created_at=time.time(), budget_usd=50.0, budget_period="month")))
                secrets[tenant] = secret
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
            with sync_playwright() as p:
                ctx = p.chromium.launch_persistent_context(
                    str(Path(tmp) / "profile"), executable_path="/usr/bin/chromium",
                    headless=True, args=ARGS, viewport={"width": 1280, "height": 860})
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
                page.goto(gw.url + "/ui/prompts")
                page.screenshot(path=str(out / "console-prompts.png"), full_page=True)
                page.set_viewport_size({"width": 390, "height": 844})
                page.goto(gw.url + "/ui/overview")
                page.wait_for_timeout(500)
                page.screenshot(path=str(out / "console-phone.png"))
                ctx.close()
    finally:
        stop()
    print("\n".join(str(p) for p in sorted(out.glob("console-*.png"))))


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else Path("docs/img"))
