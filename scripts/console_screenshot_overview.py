"""The Overview screenshot for docs/img/ with routing shares in it: the same
headless Chromium and fake upstream as scripts/console_screenshots.py, plus
a route (``auto``: gpt-4o-mini, then gpt-4o) that part of the traffic goes
through.

    PYTHONPATH=. .venv/bin/python scripts/console_screenshot_overview.py [OUT_DIR]
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from scripts.console_screenshots import MASTER, gateway_config, tenant_keys  # noqa: E402
from tests.e2e.chromium import open_browser, sign_in  # noqa: E402
from tests.gateway import run_gateway  # noqa: E402
from tests.servers import FakeUpstreamClient, start_fake_upstream  # noqa: E402

EASY = ["How tall is the Eiffel Tower?", "Translate 'good morning' into French.",
        "Which plan includes SSO?", "What is a circuit breaker?"]
HARD = ("Prove step by step that this function terminates, and derive its complexity as "
        "an equation $T(n) = 2T(n/2) + n$:\n```python\ndef f(n):\n    return n if n < 2 "
        "else f(n // 2) + f(n // 2)\n```")


def main(out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    url, stop = start_fake_upstream()
    upstream = FakeUpstreamClient(url)
    config = {
        **gateway_config(url),
        "routes": {"auto": {"tiers": ["gpt-4o-mini", "gpt-4o"], "router": "rules"}},
    }
    try:
        with tempfile.TemporaryDirectory() as tmp, run_gateway(config, Path(tmp)) as gw:
            secrets = tenant_keys(gw)
            with httpx.Client(base_url=gw.url, timeout=30) as api:
                for i in range(48):
                    tenant = ("acme", "globex")[i % 2]
                    model = ("auto", "gpt-4o-mini", "auto", "gpt-4o")[i % 4]
                    text = HARD + f" ({i})" if model == "auto" and i % 3 == 0 else EASY[i % 4]
                    if i == 21:
                        upstream.script(queue=[{"error_status": 503}] * 3)
                    api.post("/v1/chat/completions", headers={
                        "authorization": f"Bearer {secrets[tenant]}"}, json={
                        "model": model, "user": f"user-{i % 5}",
                        "messages": [{"role": "user", "content": text}]})
            gw.on_server(gw.services.writer.flush())
            with open_browser(Path(tmp) / "profile") as ctx:
                page = sign_in(ctx, gw.url, MASTER)
                page.goto(gw.url + "/ui/overview")
                page.wait_for_timeout(500)  # the chart draws after load
                page.screenshot(path=str(out / "console-overview.png"), full_page=True)
    finally:
        stop()
    print(out / "console-overview.png")


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else Path("docs/img"))
