"""Each detector: what it finds, and the look-alikes it must not take."""

from __future__ import annotations

import pytest

from seawall.guardrails.detectors import (
    DETECTORS,
    PhoneFinder,
    find_cards,
    find_emails,
    find_ibans,
    find_ips,
    find_national_ids,
    find_secrets_spans,
    finders,
    scan,
)


def spans(find, text: str) -> list[str]:  # type: ignore[no-untyped-def]
    return [text[f.start:f.end] for f in find(text)]


@pytest.mark.parametrize("text,expected", [
    ("mail ana.lopez@example.com today", ["ana.lopez@example.com"]),
    ("<j_doe+tag@mail.co.uk>", ["j_doe+tag@mail.co.uk"]),
    ("no at sign here", []),
    ("@handle and user@localhost", []),  # no domain with a dot
    ("email@123", []),
])
def test_email(text: str, expected: list[str]) -> None:
    assert spans(find_emails, text) == expected


@pytest.mark.parametrize("text,expected", [
    ("card 4111 1111 1111 1111.", ["4111 1111 1111 1111"]),
    ("card 4111-1111-1111-1111", ["4111-1111-1111-1111"]),
    ("amex 3782 822463 10005 ok", ["3782 822463 10005"]),
    ("5500005555555559", ["5500005555555559"]),
    ("order 4111111111111112", []),  # fails Luhn
    ("id 1234567812345670", []),  # passes Luhn, no card issuer starts with 1
    ("call 4111 111 1111 1111", []),  # grouped like no card
    ("version 4.1.1.1.1111.1111.1111", []),
])
def test_credit_card(text: str, expected: list[str]) -> None:
    assert spans(find_cards, text) == expected


@pytest.mark.parametrize("text,expected", [
    ("IBAN DE89 3704 0044 0532 0130 00 please", ["DE89 3704 0044 0532 0130 00"]),
    ("GB82WEST12345698765432", ["GB82WEST12345698765432"]),
    ("DE89 3704 0044 0532 0130 01", []),  # mod-97 fails
    ("ref AB12 3456 7890 1234 5678", []),  # no such country
])
def test_iban(text: str, expected: list[str]) -> None:
    assert spans(find_ibans, text) == expected


@pytest.mark.parametrize("text,kind", [
    ("SSN 123-45-6789", "us_ssn"),
    ("DNI 12345678Z", "es_dni"),
    ("CF RSSMRA85T10A562S", "it_codice_fiscale"),
    ("Aadhaar 2345 6789 0124", "in_aadhaar"),
])
def test_national_id(text: str, kind: str) -> None:
    found = list(find_national_ids(text))
    assert [f.kind for f in found] == [kind]


@pytest.mark.parametrize("text", [
    "SSN 000-12-3456", "SSN 666-12-3456", "SSN 912-34-5678",  # invalid areas
    "DNI 12345678A",  # wrong check letter
    "date 2024-01-15", "part 2345 6789 0123",  # Verhoeff fails
])
def test_national_id_look_alikes(text: str) -> None:
    assert list(find_national_ids(text)) == []


@pytest.mark.parametrize("text,expected", [
    ("server 192.168.1.20, up", ["192.168.1.20"]),
    ("from 2001:db8::8a2e:370:7334 to", ["2001:db8::8a2e:370:7334"]),
    ("version 1.2.3.4", []), ("v10.0.0.1", []), ("1.2.3.4.5", []),
    ("999.1.1.1", []), ("std::vector and a::b", []), ("at 12:30:45", []),
])
def test_ip(text: str, expected: list[str]) -> None:
    assert spans(find_ips, text) == expected


@pytest.mark.parametrize("text,expected", [
    ("call +44 20 7946 0958 now", ["+44 20 7946 0958"]),
    ("call (415) 555-2671", ["(415) 555-2671"]),
    ("in 2024 we sold 1500 units", []),
    ("order #12345678", []),
])
def test_phone(text: str, expected: list[str]) -> None:
    assert spans(PhoneFinder("US"), text) == expected


@pytest.mark.parametrize("secret,kind", [
    ("AKIAIOSFODNN7EXAMPLE", "aws_key"),
    ("ghp_A1b2C3d4E5f6G7h8I9j0K1l2M3n4O5p6Q7r8", "github_token"),
    ("glpat-abcdefghijklmnopqrst", "gitlab_token"),
    ("xoxb-123456789012-123456789012-abcdefghijklmnop", "slack_token"),
    ("sk-proj-" + "Ab1" * 20, "openai_key"),
    ("sk-ant-api03-" + "x1Y2" * 20, "anthropic_key"),
    ("AIza" + "B" * 35, "google_api_key"),
    ("sk_live_" + "a1" * 12, "stripe_key"),
    ("eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U",
     "jwt"),
])
def test_secret(secret: str, kind: str) -> None:
    text = f"use {secret} for the call"
    found = list(find_secrets_spans(text))
    assert [(text[f.start:f.end], f.kind) for f in found][:1] == [(secret, kind)]


def test_private_key_block_is_taken_whole() -> None:
    key = "-----BEGIN RSA PRIVATE KEY-----\nMIIEow\nAAAA\n-----END RSA PRIVATE KEY-----"
    text = f"here:\n{key}\nthanks"
    assert spans(find_secrets_spans, text) == [key]


def test_password_in_url_is_only_the_password() -> None:
    text = "db at postgres://admin:s3cretPassw0rd@db.internal:5432/x"
    assert spans(find_secrets_spans, text) == ["s3cretPassw0rd"]


@pytest.mark.parametrize("text", [
    "the sk-learn package", "eyJ alone", "ask-me-anything", "a JWT looks like eyJ.a.b",
    "AKIA is a prefix", "task-force meeting",
])
def test_secret_look_alikes(text: str) -> None:
    assert list(find_secrets_spans(text)) == []


def test_overlaps_go_to_the_higher_priority_detector() -> None:
    # A card number is also a run of digits a phone matcher might read.
    text = "pay with 4111 1111 1111 1111 or mail a@b.co"
    found = scan(text, finders(DETECTORS))
    assert [(f.detector, text[f.start:f.end]) for f in found] == [
        ("credit_card", "4111 1111 1111 1111"), ("email", "a@b.co")]


def test_scan_is_linear_enough_for_hostile_input() -> None:
    text = "a@b.co " * 20_000  # 20k findings
    found = scan(text, finders(["email"]))
    assert len(found) == 20_000


def test_digit_gates_answer_for_each_threads_own_text() -> None:
    """The digit gates remember the last text per thread: texts scanned on
    worker threads at the same time as others (long texts go to threads)
    must find exactly what they find alone."""
    import concurrent.futures
    import sys

    texts = [f"card 4111 1111 1111 1111, call +1 415 555 {i:04d}, host 10.0.{i % 250}.7"
             for i in range(200)] + [f"plain prose number {i} without values" for i in range(200)]
    alone = [scan(t, finders(DETECTORS)) for t in texts]
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # switch threads inside scans, not between them
    try:
        with concurrent.futures.ThreadPoolExecutor(4) as pool:
            for _ in range(5):
                assert list(pool.map(lambda t: scan(t, finders(DETECTORS)), texts)) == alone
    finally:
        sys.setswitchinterval(interval)
    assert any(alone) and not all(alone)
