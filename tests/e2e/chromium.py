"""Debian's Chromium for the console's browser tests: the launch flags this
closed network needs, the skip when it is absent, and the sign-in a person
does. Playwright's Python package drives it (no browser download)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

CHROMIUM = "/usr/bin/chromium"
needs_chromium = pytest.mark.skipif(not Path(CHROMIUM).exists(),
                                    reason="Debian's chromium is not installed at "
                                    "/usr/bin/chromium (scripts/setup.sh --dev installs it)")
# Without the background-networking flags Chromium keeps dialling hosts this
# machine cannot reach.
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]


@contextmanager
def open_browser(profile: Path, timeout_ms: int = 15_000) -> Iterator[Any]:
    """A persistent Chromium context on a fresh profile, at 1280 x 900."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        context = p.chromium.launch_persistent_context(
            str(profile), executable_path=CHROMIUM, headless=True, args=ARGS,
            viewport={"width": 1280, "height": 900})
        context.set_default_timeout(timeout_ms)
        try:
            yield context
        finally:
            context.close()


def sign_in(browser: Any, url: str, key: str, start: str = "/ui/signin",
            lands: str = "/ui/overview") -> Any:
    """A new page signed in through the form with ``key`` (the caller closes it)."""
    browser.clear_cookies()
    pg = browser.new_page()
    pg.goto(url + start)
    assert "/ui/signin" in pg.url  # not signed in yet: the form
    pg.fill("#key", key)
    pg.click("button[type=submit]")
    pg.wait_for_url(re.compile(re.escape(lands) + "$"))
    return pg


@contextmanager
def signed_in(browser: Any, url: str, key: str, start: str = "/ui/signin",
              lands: str = "/ui/overview") -> Iterator[Any]:
    """:func:`sign_in`, closed afterwards."""
    pg = sign_in(browser, url, key, start, lands)
    try:
        yield pg
    finally:
        pg.close()
