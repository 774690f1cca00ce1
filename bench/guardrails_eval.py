"""Precision and recall of each guardrail detector on a labelled set.

The set (tests/fixtures/guardrails/labelled.jsonl) is synthetic but written
like real prompts: sentences with and without each kind of value, several
values in one text, and hard negatives (order numbers that fail Luhn, version
numbers shaped like IPs, dates and ticket numbers shaped like ids, code that
contains ``@`` or ``::``, words that start like token prefixes). Labels come
from how each sentence was generated, never from the detectors.

    python bench/guardrails_eval.py            # print the table (docs/guardrails.md)
    python bench/guardrails_eval.py --write    # regenerate the set (seeded, stable)

A finding counts as a true positive when its detector matches the label's and
its span overlaps the labelled value; each labelled value is found or missed
once.
"""

from __future__ import annotations

import argparse
import json
import random
import string
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from seawall.guardrails.detectors import DETECTORS, finders, scan  # noqa: E402

SET = ROOT / "tests" / "fixtures" / "guardrails" / "labelled.jsonl"

FIRST = ["ana", "bob", "li", "maria", "john", "fatima", "kenji", "olga", "pierre", "sara",
         "tom", "nina", "raj", "eva", "marco", "chen"]
LAST = ["lopez", "smith", "wang", "garcia", "muller", "rossi", "kim", "dubois", "novak",
        "singh", "brown", "silva"]
DOMAINS = ["example.com", "mail.example.org", "acme.co.uk", "uni-bonn.de", "corp.example.net",
           "startup.io", "gmail.com", "outlook.com", "posteo.de", "company.fr"]


def _email(r: random.Random) -> str:
    sep = r.choice([".", "_", "", "-"])
    name = f"{r.choice(FIRST)}{sep}{r.choice(LAST)}"
    if r.random() < 0.3:
        name += str(r.randint(1, 99))
    if r.random() < 0.1:
        name += "+news"
    return f"{name}@{r.choice(DOMAINS)}"


def _phone(r: random.Random) -> str:
    import phonenumbers as p
    region = r.choice(["US", "US", "US", "GB", "DE", "FR", "IN", "ES", "IT", "BR", "AU", "JP"])
    while True:
        ex = p.example_number_for_type(region, r.choice(
            [p.PhoneNumberType.MOBILE, p.PhoneNumberType.FIXED_LINE]))
        if ex is None:
            continue
        digits = list(str(ex.national_number))
        for i in range(max(2, len(digits) - 4), len(digits)):  # vary the subscriber part
            digits[i] = str(r.randint(0, 9))
        num = p.parse(f"+{ex.country_code}{''.join(digits)}")
        if not p.is_valid_number(num):
            continue
        if region == "US" and r.random() < 0.5:
            fmt = r.choice(["({a}) {b}-{c}", "{a}-{b}-{c}", "{a}.{b}.{c}"])
            n = str(num.national_number)
            return fmt.format(a=n[:3], b=n[3:6], c=n[6:])
        return p.format_number(num, r.choice([p.PhoneNumberFormat.INTERNATIONAL,
                                              p.PhoneNumberFormat.E164]))


def _luhn_complete(prefix: str, length: int, r: random.Random, valid: bool = True) -> str:
    from stdnum import luhn
    body = prefix + "".join(str(r.randint(0, 9)) for _ in range(length - len(prefix) - 1))
    check = luhn.calc_check_digit(body)
    if not valid:
        check = str((int(check) + r.randint(1, 9)) % 10)
    return body + check


def _card(r: random.Random, valid: bool = True) -> str:
    kind = r.choice(["visa", "visa", "mc", "mc2", "amex", "discover"])
    prefix, length = {"visa": ("4", 16), "mc": (str(r.randint(51, 55)), 16),
                      "mc2": (str(r.randint(2221, 2720)), 16), "amex": (r.choice(["34", "37"]), 15),
                      "discover": ("6011", 16)}[kind]
    n = _luhn_complete(prefix, length, r, valid)
    style = r.choice(["plain", "space", "dash"])
    if style == "plain":
        return n
    sep = " " if style == "space" else "-"
    if length == 15:
        return sep.join([n[:4], n[4:10], n[10:]])
    return sep.join(n[i:i + 4] for i in range(0, 16, 4))


def _iban(r: random.Random, valid: bool = True) -> str:
    from stdnum import iban
    country, bban_len = r.choice([("DE", 18), ("GB", 18), ("FR", 23), ("NL", 14), ("ES", 20),
                                  ("IT", 23), ("BE", 12), ("CH", 17)])
    if country == "GB":
        bban = "".join(r.choice(string.ascii_uppercase) for _ in range(4)) + "".join(
            str(r.randint(0, 9)) for _ in range(14))
    elif country == "NL":
        bban = "".join(r.choice(string.ascii_uppercase) for _ in range(4)) + "".join(
            str(r.randint(0, 9)) for _ in range(10))
    elif country == "IT":
        bban = r.choice(string.ascii_uppercase) + "".join(str(r.randint(0, 9)) for _ in range(22))
    else:
        bban = "".join(str(r.randint(0, 9)) for _ in range(bban_len))
    check = iban.calc_check_digits(country + "00" + bban)
    if not valid:
        check = f"{(int(check) + r.randint(1, 50)) % 97 + 2:02d}"
    full = country + check + bban
    if not iban.is_valid(full) and valid:
        return _iban(r, valid)
    if r.random() < 0.6:
        return " ".join(full[i:i + 4] for i in range(0, len(full), 4))
    return full


def _national(r: random.Random) -> str:
    from stdnum import verhoeff
    from stdnum.es import dni
    from stdnum.it import codicefiscale
    kind = r.choice(["ssn", "ssn", "dni", "aadhaar", "cf"])
    if kind == "ssn":
        area = r.choice([n for n in range(1, 900) if n != 666])
        return f"{area:03d}-{r.randint(1, 99):02d}-{r.randint(1, 9999):04d}"
    if kind == "dni":
        n = f"{r.randint(10_000_000, 99_999_999)}"
        return n + dni.calc_check_digit(n)
    if kind == "aadhaar":
        n = str(r.randint(2, 9)) + "".join(str(r.randint(0, 9)) for _ in range(10))
        n += verhoeff.calc_check_digit(n)
        return " ".join([n[:4], n[4:8], n[8:]])
    letters = "".join(r.choice(string.ascii_uppercase) for _ in range(6))
    body = (f"{letters}{r.randint(0, 99):02d}{r.choice('ABCDEHLMPRST')}{r.randint(1, 28):02d}"
            f"{r.choice(string.ascii_uppercase)}{r.randint(100, 999)}")
    return body + codicefiscale.calc_check_digit(body)


def _rand(r: random.Random, n: int, alphabet: str = string.ascii_letters + string.digits) -> str:
    return "".join(r.choice(alphabet) for _ in range(n))


def _secret(r: random.Random) -> str:
    kind = r.choice(["aws", "github", "gitlab", "slack", "openai", "anthropic", "google",
                     "stripe", "jwt", "private_key", "url_password", "sendgrid"])
    up = string.ascii_uppercase + string.digits
    if kind == "aws":
        return "AKIA" + _rand(r, 16, up)
    if kind == "github":
        return r.choice(["ghp_", "gho_", "ghs_"]) + _rand(r, 36)
    if kind == "gitlab":
        return "glpat-" + _rand(r, 20)
    if kind == "slack":
        ids = f"{r.randint(10**11, 10**12)}-{r.randint(10**11, 10**12)}"
        return f"xoxb-{ids}-{_rand(r, 24).lower()}"
    if kind == "openai":
        return r.choice(["sk-proj-", "sk-svcacct-"]) + _rand(r, 48, string.ascii_letters + "-_")
    if kind == "anthropic":
        return "sk-ant-api03-" + _rand(r, 93, string.ascii_letters + string.digits + "-_")
    if kind == "google":
        return "AIza" + _rand(r, 35)
    if kind == "stripe":
        return "sk_live_" + _rand(r, 24)
    if kind == "sendgrid":
        return "SG." + _rand(r, 22) + "." + _rand(r, 43)
    if kind == "jwt":
        import base64
        head = base64.urlsafe_b64encode(b'{"alg":"HS256","typ":"JWT"}').decode().rstrip("=")
        body = base64.urlsafe_b64encode(
            json.dumps({"sub": str(r.randint(1, 10**6)), "name": r.choice(FIRST)}).encode()
        ).decode().rstrip("=")
        return f"{head}.{body}.{_rand(r, 43, string.ascii_letters + string.digits + '-_')}"
    if kind == "private_key":
        lines = "\n".join(_rand(r, 64, string.ascii_letters + string.digits + "+/")
                          for _ in range(4))
        return f"-----BEGIN RSA PRIVATE KEY-----\n{lines}\n-----END RSA PRIVATE KEY-----"
    return _rand(r, 14)  # url_password: the password inside a URL (see the template)


def _ip(r: random.Random) -> str:
    if r.random() < 0.2:
        return ":".join(f"{r.randint(0, 0xffff):x}" for _ in range(8)) if r.random() < 0.5 \
            else f"2001:db8::{r.randint(1, 0xffff):x}:{r.randint(1, 0xffff):x}"
    return ".".join(str(r.randint(1, 254)) for _ in range(4))


POSITIVE = {
    "email": (_email, [
        "Please send the invoice to {v} by Friday.", "My email is {v}, reach out anytime.",
        "Forward this thread to {v} and cc me.", "Contact: {v}",
        "Can you draft a reply to {v} declining the meeting?",
        "The customer ({v}) says the login page is broken.",
    ]),
    "phone": (_phone, [
        "Call me at {v} after 5pm.", "Her number is {v}.", "Phone: {v}",
        "If it fails again, text {v} so I can reset it.",
        "The support line {v} was busy all morning.",
    ]),
    "credit_card": (_card, [
        "My card number is {v}, expiry 09/27.", "Charge {v} for the renewal.",
        "Why was {v} declined yesterday?", "card: {v} cvv in the other message",
    ]),
    "iban": (_iban, [
        "Wire the deposit to IBAN {v}.", "Our account: {v} (Sparkasse).",
        "Refund to {v}, reference 4471.", "Bank details: {v}",
    ]),
    "national_id": (_national, [
        "My SSN is {v}, is that needed for the form?", "ID number {v} was rejected.",
        "The applicant's id: {v}", "Use {v} as the tax identifier.",
    ]),
    "secret": (_secret, [
        "Why does this fail? client = Client(api_key=\"{v}\")", "export API_TOKEN={v}",
        "I pasted my key {v} by mistake, is it safe?", "config: token: {v}",
        "Here is the key:\n{v}\nwhat format is it?",
    ]),
    "ip": (_ip, [
        "The server at {v} stopped answering pings.", "Block traffic from {v} in the firewall.",
        "ssh into {v} and restart nginx.", "Logs show requests from {v} every second.",
    ]),
}

NEGATIVES = [
    "What is the capital of France?", "Summarise this article in three bullet points.",
    "Order #{order} has not shipped yet.", "Tracking number {order} shows no movement.",
    "Upgrade from version {ver} to the latest release.", "Chrome {ver} crashes on start.",
    "Running v{ver} of the firmware.", "The meeting is on 2024-03-15 at 12:30:45.",
    "ISBN 978-3-16-148410-0 is out of print.", "Invoice 2023-0042-17 is overdue by 30 days.",
    "Ticket 123-45-678 was closed.", "Pi is 3.14159265358979 to fifteen digits.",
    "Use std::vector<int> and a::b::c in C++.", "Decorate it with @property and @staticmethod.",
    "Sort the list with sk-learn style pipelines.", "Ask-me-anything sessions start at 10.",
    "A JWT starts with eyJ but this is prose.", "Prices rose 12.5% to $1,234.56 in Q3.",
    "Git commit {sha} fixed the bug.", "UUID {uuid} identifies the job.",
    "Room 1204, building 3, floor 12.", "Call extension 4412 for IT.",
    "Our revenue was 45,000,000 EUR in 2023.", "The code 12345678 is a placeholder.",
    "Coordinates 48.8566, 2.3522 are in Paris.", "Step 1.2.3 of the guide explains it.",
    "The user@localhost account is for tests.", "Send it to support at example dot com.",
    "Reference DE00 0000 0000 0000 0000 00 is a template.", "SSN format is XXX-XX-XXXX.",
    "The task-force met 3 times.", "Serial number SN-2024-558-1123.",
    "Matrix size 1024 x 768 x 3.", "Timestamp 1701878400123 in milliseconds.",
]


def _negative(r: random.Random) -> str:
    t = r.choice(NEGATIVES)
    return t.format(
        order=_card(r, valid=False).replace(" ", "").replace("-", "") if r.random() < 0.7
        else _luhn_complete("1", 16, r),
        ver=".".join(str(r.randint(0, 20)) for _ in range(r.choice([3, 4]))),
        sha=_rand(r, 40, "0123456789abcdef"),
        uuid=f"{_rand(r, 8, '0123456789abcdef')}-{_rand(r, 4, '0123456789abcdef')}-4"
             f"{_rand(r, 3, '0123456789abcdef')}-a{_rand(r, 3, '0123456789abcdef')}-"
             f"{_rand(r, 12, '0123456789abcdef')}")


def _hard(r: random.Random) -> tuple[str, str, str]:
    """(detector, value, template) of a value written in a way the detectors miss."""
    kind = r.choice(["email_words", "local_phone", "ssn_plain", "unknown_key", "card_dots",
                     "iban_lower"])
    if kind == "email_words":
        return "email", f"{r.choice(FIRST)} dot {r.choice(LAST)} at example dot com", \
            "Write to {v} (spelled out to fool spam bots)."
    if kind == "local_phone":
        return "phone", f"030 {r.randint(1000000, 9999999)}", "Ring the Berlin office on {v}."
    if kind == "ssn_plain":
        return "national_id", f"{r.randint(100, 599)}{r.randint(10, 99)}{r.randint(1000, 9999)}", \
            "SSN (no dashes): {v}"
    if kind == "unknown_key":
        return "secret", _rand(r, 32, "0123456789abcdef"), "The vendor API key is {v}."
    if kind == "card_dots":
        n = _luhn_complete("4", 16, r)
        return "credit_card", ".".join(n[i:i + 4] for i in range(0, 16, 4)), "Card {v} please."
    full = _iban(r).replace(" ", "").lower()
    return "iban", full, "iban: {v}"


def build(seed: int = 17, per_kind: int = 40, negatives: int = 120, mixed: int = 40,
          hard: int = 30) -> list[dict[str, Any]]:
    r = random.Random(seed)
    items: list[dict[str, Any]] = []

    def place(template: str, detector: str, value: str) -> tuple[str, dict[str, Any]]:
        if detector == "secret" and len(value) == 14:
            template = "Connect with postgres://admin:{v}@db.internal:5432/app please."
        text = template.replace("{v}", value)
        start = text.index(value)
        return text, {"detector": detector, "start": start, "end": start + len(value)}

    for detector, (make, templates) in POSITIVE.items():
        for _ in range(per_kind):
            text, label = place(r.choice(templates), detector, make(r))
            items.append({"text": text, "labels": [label]})
    for _ in range(negatives):
        items.append({"text": _negative(r), "labels": []})
    for _ in range(hard):  # values written in ways the detectors are known to miss
        detector, value, template = _hard(r)
        text, label = place(template, detector, value)
        items.append({"text": text, "labels": [label]})
    for _ in range(mixed):
        a, b = r.sample(list(POSITIVE), 2)
        va, vb = POSITIVE[a][0](r), POSITIVE[b][0](r)
        if "postgres" in va or a == "secret" or b == "secret":
            continue
        text = f"For the record: {va}. {_negative(r)} Also {vb}."
        sa, sb = text.index(va), text.index(vb)
        items.append({"text": text, "labels": [
            {"detector": a, "start": sa, "end": sa + len(va)},
            {"detector": b, "start": sb, "end": sb + len(vb)}]})
    return items


def evaluate(items: list[dict[str, Any]]) -> dict[str, dict[str, int]]:
    find = finders(DETECTORS)
    stats = {d: {"tp": 0, "fp": 0, "fn": 0, "n": 0} for d in DETECTORS}
    for item in items:
        text = item["text"]
        found = scan(text, find)
        labels = item["labels"]
        matched: set[int] = set()
        for f in found:
            hit = next((i for i, lab in enumerate(labels) if i not in matched
                        and lab["detector"] == f.detector
                        and f.start < lab["end"] and lab["start"] < f.end), None)
            if hit is None:
                stats[f.detector]["fp"] += 1
            else:
                matched.add(hit)
                stats[f.detector]["tp"] += 1
        for i, lab in enumerate(labels):
            stats[lab["detector"]]["n"] += 1
            if i not in matched:
                stats[lab["detector"]]["fn"] += 1
    return stats


def table(stats: dict[str, dict[str, int]]) -> str:
    lines = ["| detector | labelled | found | false positives | missed | precision | recall |",
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for d, s in stats.items():
        p = s["tp"] / (s["tp"] + s["fp"]) if s["tp"] + s["fp"] else 1.0
        rec = s["tp"] / s["n"] if s["n"] else 1.0
        lines.append(f"| {d} | {s['n']} | {s['tp']} | {s['fp']} | {s['fn']} | {p:.3f} | "
                     f"{rec:.3f} |")
    return "\n".join(lines)


def load() -> list[dict[str, Any]]:
    return [json.loads(line) for line in SET.read_text().splitlines() if line.strip()]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--write", action="store_true", help="regenerate the labelled set")
    args = ap.parse_args()
    if args.write:
        SET.parent.mkdir(parents=True, exist_ok=True)
        items = build()
        SET.write_text("".join(json.dumps(i) + "\n" for i in items))
        print(f"wrote {len(items)} items to {SET.relative_to(ROOT)}")
    items = load()
    negatives = sum(1 for i in items if not i["labels"])
    print(f"{len(items)} texts ({negatives} without any value), {SET.relative_to(ROOT)}\n")
    print(table(evaluate(items)))


if __name__ == "__main__":
    main()
