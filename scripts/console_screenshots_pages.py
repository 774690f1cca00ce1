"""Screenshots of the console's Experiments, Collections and Jobs pages for
docs/img/ (the rest: scripts/console_screenshots.py), with Debian's
/usr/bin/chromium launched as the browser tests launch it
(tests/e2e/chromium.py):

    PYTHONPATH=. .venv/bin/python scripts/console_screenshots_pages.py [OUT_DIR]

Starts the fake upstream and a gateway on loopback with a canary and an A/B
split, sends requests, rolls one canary back, ingests two documents, queues
jobs and a batch, then photographs the three pages.
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

import httpx
import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.e2e.chromium import open_browser, signed_in  # noqa: E402
from tests.gateway import run_gateway  # noqa: E402
from tests.servers import start_fake_upstream  # noqa: E402

MASTER = "sk-master-screenshots"
DOCS = [("refunds.md", "# Refunds\n\nRefunds are paid within 14 days of a return, to the card "
         "that paid. Sale items can be exchanged but not refunded."),
        ("plans.md", "# Plans\n\nThe Team plan includes SSO and audit logs; the Starter plan "
         "includes neither."),
        ("shipping.md", "# Shipping\n\nOrders ship within two working days; express arrives "
         "the next day.")]


def main(out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    url, stop = start_fake_upstream()
    canary = {"steps": [10, 25, 50, 100], "min_requests": 10, "max_p95_ratio": 50}
    config = {
        "auth": {"master_key": MASTER},
        "providers": {"oa": {"type": "openai", "base_url": url + "/v1"}},
        "models": {m: {"provider": "oa", "model": m} for m in
                   ("gpt-4o-mini", "gpt-4o-mini-ft", "gpt-4o", "gpt-4o-2")},
        "experiments": {
            "mini-finetune": {"model": "gpt-4o-mini", "kind": "canary", "sticky": "request",
                              "canary": canary, "variants": [
                                  {"name": "base"}, {"name": "ft", "model": "gpt-4o-mini-ft"}]},
            "large-refresh": {"model": "gpt-4o", "kind": "canary", "sticky": "request",
                              "canary": canary, "variants": [
                                  {"name": "current"}, {"name": "next", "model": "gpt-4o-2"}]},
            "prompt-ab": {"model": "gpt-4o-mini-ft", "variants": [
                {"name": "short", "weight": 1}, {"name": "long", "weight": 1}]}},
    }
    try:
        with tempfile.TemporaryDirectory() as tmp, run_gateway(config, Path(tmp)) as gw, \
                httpx.Client(base_url=gw.url, timeout=120,
                             headers={"authorization": f"Bearer {MASTER}"}) as api:
            for i in range(160):
                api.post("/v1/chat/completions", json={
                    "model": ("gpt-4o-mini", "gpt-4o")[i % 2], "user": f"u{i}",
                    "messages": [{"role": "user", "content": f"question {i}"}]})
            gw.on_server(gw.services.experiments.settle())
            api.post("/admin/experiments/large-refresh/rollback",
                     json={"reason": "answers too long in review"})
            api.post("/v1/collections/handbook/documents", json={"documents": [
                {"source": s, "text": t} for s, t in DOCS]})
            later = time.time() + 3600
            for kind in ("sleep", "judge", "sleep"):
                gw.on_server(gw.services.jobs.enqueue(kind, {"seconds": 1}, tenant="acme",
                                                      run_after=later))
            lines = "".join(orjson.dumps({
                "custom_id": f"q{i}", "method": "POST", "url": "/v1/chat/completions",
                "body": {"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]},
            }).decode() + "\n" for i in range(3))
            f = api.post("/v1/files", data={"purpose": "batch"},
                         files={"file": ("in.jsonl", lines.encode())})
            api.post("/v1/batches", json={"input_file_id": f.json()["id"],
                                          "endpoint": "/v1/chat/completions",
                                          "completion_window": "24h"})
            time.sleep(2)  # the batch runs
            with open_browser(Path(tmp) / "profile") as ctx, \
                    signed_in(ctx, gw.url, MASTER) as page:
                page.goto(gw.url + "/ui/experiments")
                page.screenshot(path=str(out / "console-experiments.png"), full_page=True)
                page.goto(gw.url + "/ui/collections")
                page.click("tr[data-collection='handbook'] button")
                page.fill("#c-query", "which plan has SSO?")
                page.click("#c-search button[type=submit]")
                page.wait_for_selector("#c-results tr.hit")
                page.screenshot(path=str(out / "console-collections.png"), full_page=True)
                page.goto(gw.url + "/ui/jobs")
                page.screenshot(path=str(out / "console-jobs.png"), full_page=True)
    finally:
        stop()
    print("\n".join(str(p) for p in sorted(out.glob("console-*.png"))))


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else Path("docs/img"))
