"""PII and secret detectors: each finds spans of one kind of value in a text.

Every detector is a cheap regular expression for candidates followed by a
real check from a maintained library where one exists (python-stdnum for
Luhn, IBAN mod-97 and national ids; Google's phonenumbers for phone numbers;
detect-secrets' plugin patterns for credentials, seawall/guardrails/secrets.py),
so digits that merely look like a card or an IBAN are not taken for one.
docs/guardrails.md says what each one finds and misses, with precision and
recall on bench/guardrails_eval.py's labelled set.
"""

from __future__ import annotations

import bisect
import ipaddress
import re
import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

import phonenumbers
from stdnum import iban as _iban
from stdnum import luhn
from stdnum.es import dni as _es_dni
from stdnum.in_ import aadhaar as _aadhaar
from stdnum.it import codicefiscale as _it_cf
from stdnum.us import ssn as _us_ssn

from seawall.guardrails.secrets import find_secrets


@dataclass(frozen=True, slots=True)
class Finding:
    """One detected value: ``text[start:end]``; ``kind`` names the sub-type
    (``us_ssn``, ``github_token``...). The value itself is never logged,
    recorded or echoed; only the detector and kind are."""

    detector: str
    start: int
    end: int
    kind: str = ""


Find = Callable[[str], Iterator[Finding]]


_DIGIT = re.compile(r"\d")


class _Gates(threading.local):
    """The digit gates of the text this thread scans last: five detectors and
    :func:`scan` ask them of the same text, and each search is a pass over
    it (on a 1 KB prompt the repeated passes were half the redaction cost).
    Per thread, since long texts are scanned on worker threads meanwhile."""

    text: str | None = None
    digits = False
    run = False


_gates = _Gates()


def _gated(text: str) -> _Gates:
    g = _gates
    if g.text is not text:
        g.digits = _DIGIT.search(text) is not None
        g.run = g.digits and _DIGIT_RUN.search(text) is not None
        g.text = text
    return g


def has_digits(text: str) -> bool:
    """One C-speed search: most detectors need digits, most prompts have none."""
    return _gated(text).digits


# Cards, SSNs, DNIs, Aadhaar numbers, phone numbers and IPv4 addresses each
# hold a run of 7+ characters of digits and the separators they are written
# with ("4111 1111", "123-45-6789", "(555) 123-4567", "10.0.0.1"): one C-speed
# search spares their own patterns on prose that merely has a few digits
# ("version 3", "1024 bytes"), which is most prompts that have any.
_DIGIT_RUN = re.compile(r"\d[\d .()/+-]{5,}\d")



def has_digit_run(text: str) -> bool:
    return _gated(text).run

# -- email: the practical subset of RFC 5322 addresses that people type --------
_EMAIL = re.compile(
    r"[A-Za-z0-9](?<![\w.+-][A-Za-z0-9])[A-Za-z0-9._%+-]{0,63}@"
    r"(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+[A-Za-z]{2,24}(?![\w-])")


def find_emails(text: str) -> Iterator[Finding]:
    if "@" not in text:
        return
    for m in _EMAIL.finditer(text):
        yield Finding("email", m.start(), m.end())


# -- payment cards: 13-19 digits, in groups or not, a known issuer prefix, Luhn --
_CARD = re.compile(r"\d(?<![\d.-]\d)(?:[ -]?\d){12,18}(?![\d-]|\.\d)")
_ISSUER = re.compile(r"4|5[1-5]|2[2-7]|3[47]|3[0689]|6[0245]|35|62|81")


def find_cards(text: str) -> Iterator[Finding]:
    if not has_digit_run(text):
        return
    for m in _CARD.finditer(text):
        raw = m.group()
        digits = raw.replace(" ", "").replace("-", "")
        if not 13 <= len(digits) <= 19 or not _ISSUER.match(digits):
            continue
        if (" " in raw or "-" in raw) and not _card_grouping(raw):
            continue
        if luhn.is_valid(digits):
            yield Finding("credit_card", m.start(), m.end())


def _card_grouping(raw: str) -> bool:
    """Cards are written in groups of 4 (Amex 4-6-5, some 4-6-4): a phone
    number or a list of numbers with other groupings is not a card."""
    groups = [len(g) for g in re.split(r"[ -]", raw)]
    return (all(g == 4 for g in groups[:-1]) and 1 <= groups[-1] <= 4) or groups in (
        [4, 6, 5], [4, 6, 4])


# -- IBAN: country code, check digits, BBAN; the mod-97 check and country length --
_IBAN = re.compile(r"[A-Z](?<![A-Za-z0-9][A-Z])[A-Z]\d{2}(?: ?[A-Z0-9]){11,30}(?![A-Za-z0-9])")


def find_ibans(text: str) -> Iterator[Finding]:
    if not has_digits(text):
        return
    for m in _IBAN.finditer(text):
        raw = m.group()
        if _iban.is_valid(raw):
            yield Finding("iban", m.start(), m.end())
        elif " " in raw:  # a trailing word may have been taken as a group: back off
            parts = raw.split(" ")
            for cut in range(len(parts) - 1, 1, -1):
                candidate = " ".join(parts[:cut])
                if _iban.is_valid(candidate):
                    yield Finding("iban", m.start(), m.start() + len(candidate))
                    break


# -- national ids: formats with a check digit or strict structure only -------
_NATIONAL: list[tuple[str, re.Pattern[str], Callable[[str], bool]]] = [
    # US Social Security number, dashed form (area/group/serial rules, no 000/666/9xx).
    ("us_ssn", re.compile(r"\d(?<![\d-]\d)\d\d-\d{2}-\d{4}(?![\d-])"), _us_ssn.is_valid),
    # Spanish DNI: 8 digits and the mod-23 check letter.
    ("es_dni", re.compile(r"\d(?<![\w-]\d)\d{7}-?[A-Z](?!\w)"), _es_dni.is_valid),
    # Italian codice fiscale: 16 characters with a check character.
    ("it_codice_fiscale", re.compile(
        r"[A-Z](?<!\w[A-Z])[A-Z]{5}\d{2}[A-EHLMPRST]\d{2}[A-Z]\d{3}[A-Z](?!\w)"), _it_cf.is_valid),
    # Indian Aadhaar: 12 digits in 4-4-4 groups, Verhoeff check digit.
    ("in_aadhaar", re.compile(r"[2-9](?<![\d-][2-9])\d{3}[ -]\d{4}[ -]\d{4}(?![\d-])"),
     _aadhaar.is_valid),
]


def find_national_ids(text: str) -> Iterator[Finding]:
    if not has_digits(text):
        return
    run = has_digit_run(text)  # every format but the codice fiscale holds one
    for kind, pattern, valid in _NATIONAL:
        if not run and kind != "it_codice_fiscale":
            continue
        for m in pattern.finditer(text):
            if valid(m.group()):
                yield Finding("national_id", m.start(), m.end(), kind)


# -- IP addresses: IPv4 dotted quads and IPv6, checked by ipaddress ------------
_IPV4 = re.compile(r"\d(?<![\w.]\d)\d{0,2}\.(?:\d{1,3}\.){2}\d{1,3}(?!\w|\.\d)")
_IPV6 = re.compile(r"(?<![\w:.])(?:[0-9A-Fa-f]{0,4}:){2,7}(?:[0-9A-Fa-f]{1,4}|:|"
                   r"(?:\d{1,3}\.){3}\d{1,3})(?![\w:])")
# "version 1.2.3.4", "v10.0.0.1", "build 4.1.0.2": a version, not an address.
_VERSION_BEFORE = re.compile(r"\b(?:v|version|ver\.?|build|release|firmware|sdk)\s*$",
                             re.IGNORECASE)


def find_ips(text: str) -> Iterator[Finding]:
    if "." in text and has_digit_run(text):
        for m in _IPV4.finditer(text):
            try:
                ipaddress.IPv4Address(m.group())
            except ValueError:
                continue
            if _VERSION_BEFORE.search(text, max(0, m.start() - 12), m.start()):
                continue
            yield Finding("ip", m.start(), m.end(), "ipv4")
    if "::" in text or text.count(":") >= 5:
        for m in _IPV6.finditer(text):
            raw = m.group()
            groups = [g for g in raw.split(":") if g]
            if len(groups) < 3 and not has_digits(raw):  # "a::b" is C++ more often than IPv6
                continue
            try:
                addr = ipaddress.IPv6Address(raw)
            except ValueError:
                continue
            if addr.is_unspecified:  # "::" alone (C++ scopes, emoticons)
                continue
            yield Finding("ip", m.start(), m.end(), "ipv6")


# -- phone numbers: Google's libphonenumber (valid numbers only) -------------
# A candidate: an optional +country code, an optional (area code), then
# digits in groups separated by one space, dot or dash; 7 to 15 digits in all.
_PHONE = re.compile(r"(?<![\w+.-])(?:\+\d{1,3}[ .-]?)?(?:\(\d{1,5}\)[ .-]?)?"
                    r"\d{1,14}(?:[ .-]\d{1,14}){0,5}(?!\d|[.-]\d)")


class PhoneFinder:
    """Candidates by pattern, each checked by Google's libphonenumber
    (``parse`` + ``is_valid_number``: a real numbering plan, not just digits).
    Numbers written with a country code are found anywhere; local ones are
    read as numbers of ``region`` (guardrails.phone_region). libphonenumber's
    own text matcher finds the same numbers, about 5x slower."""

    def __init__(self, region: str = "US") -> None:
        self.region = region
        self._seen: dict[int, bool] = {}

    def __call__(self, text: str) -> Iterator[Finding]:
        if not has_digit_run(text):
            return
        for m in _PHONE.finditer(text):
            raw = m.group()
            digits = sum(c.isdigit() for c in raw)
            if not 7 <= digits <= 15:
                continue
            if self._valid(raw):
                yield Finding("phone", m.start(), m.end())

    def _valid(self, raw: str) -> bool:
        """libphonenumber's verdict (tens of microseconds), remembered by the
        candidate's hash, not its text: a request's number is checked again in
        the echoed answer and in the trace record, and no number is kept."""
        key = hash(raw)
        known = self._seen.get(key)
        if known is None:
            try:
                known = phonenumbers.is_valid_number(phonenumbers.parse(raw, self.region))
            except phonenumbers.NumberParseException:
                known = False
            if len(self._seen) >= 4096:
                self._seen.clear()
            self._seen[key] = known
        return known


def find_secrets_spans(text: str) -> Iterator[Finding]:
    for start, end, kind in find_secrets(text):
        yield Finding("secret", start, end, kind)


# Order = priority when two findings overlap (a secret's digits are not a
# phone number; an IBAN's are not a card).
DETECTORS: tuple[str, ...] = ("secret", "credit_card", "iban", "national_id", "email",
                              "ip", "phone")


def _name(f: Find) -> str:
    return getattr(f, "__name__", type(f).__name__)


def finders(names: Iterable[str], phone_region: str = "US") -> list[Find]:
    """The find functions for ``names``, in priority order."""
    table: dict[str, Find] = {
        "secret": find_secrets_spans, "credit_card": find_cards, "iban": find_ibans,
        "national_id": find_national_ids, "email": find_emails, "ip": find_ips,
        "phone": PhoneFinder(phone_region),
    }
    wanted = set(names)
    return [table[n] for n in DETECTORS if n in wanted]


# Detectors that can only match where there are digits: skipped together,
# after one check, for a text without any (most prose).
_NEED_DIGITS = frozenset({"find_cards", "find_ibans", "find_national_ids", "PhoneFinder"})
_NEED_DIGIT_RUN = frozenset({"find_cards", "PhoneFinder"})


def scan(text: str, find: list[Find]) -> list[Finding]:
    """Every finding in ``text``, sorted by position, overlaps resolved in
    favour of the earlier (higher-priority) detector."""
    if len(text) < 6:  # shorter than the shortest value any detector finds (a@b.co)
        return []
    try:
        return _scan(text, find)
    finally:
        _gates.text = None  # keep no scanned text alive past its scan


def _scan(text: str, find: list[Find]) -> list[Finding]:
    if not has_digits(text):
        find = [f for f in find if _name(f) not in _NEED_DIGITS]
    elif not has_digit_run(text):
        find = [f for f in find if _name(f) not in _NEED_DIGIT_RUN]
    starts: list[int] = []  # of the findings taken, sorted (they never overlap)
    taken: list[Finding] = []
    for f in find:
        for hit in f(text):
            i = bisect.bisect_right(starts, hit.start)
            if i and taken[i - 1].end > hit.start:
                continue  # overlaps the finding that starts before it
            if i < len(taken) and taken[i].start < hit.end:
                continue  # overlaps the one that starts after it
            starts.insert(i, hit.start)
            taken.insert(i, hit)
    return taken
