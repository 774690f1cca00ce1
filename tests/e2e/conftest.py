"""The console browser suites' shared Chromium (tests/e2e/chromium.py): one
per module, with its own profile. A suite whose pages are slower overrides
the fixture with a longer timeout."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from tests.e2e.chromium import open_browser


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    with open_browser(tmp_path_factory.mktemp("chromium-profile")) as context:
        yield context
