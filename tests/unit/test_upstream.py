"""Retry-After parsing shared by every HTTP provider."""

import email.utils
import time

import pytest

from seawall.providers.upstream import retry_after_s


@pytest.mark.parametrize("value,expected", [
    ("7", 7.0), ("0.5", 0.5), ("-3", 0.0), ("soon", None), ("", None),
])
def test_delay_seconds(value: str, expected: float | None) -> None:
    assert retry_after_s({"retry-after": value}) == expected


def test_http_date_is_seconds_from_now() -> None:
    later = email.utils.formatdate(time.time() + 30, usegmt=True)
    wait = retry_after_s({"retry-after": later})
    assert wait is not None and 25 <= wait <= 31
    past = email.utils.formatdate(time.time() - 30, usegmt=True)
    assert retry_after_s({"retry-after": past}) == 0.0


def test_absent_header() -> None:
    assert retry_after_s({}) is None
