"""Credentials in text: detect-secrets' plugin patterns plus a few formats it lacks.

detect-secrets (Yelp) keeps the token formats of many providers up to date,
but it scans files line by line and reports values, not positions, and some
plugins capture only a prefix; so its plugins' compiled ``denylist`` patterns
are run here with ``finditer`` (positions, whole tokens) and its JWT plugin's
own validity check is reused. Entropy and keyword plugins are left out: they
flag ordinary prose. Added here: current OpenAI (``sk-proj-``...), Anthropic,
Google API keys, GitHub fine-grained tokens, Seawall's own virtual keys, and
whole private-key blocks (detect-secrets matches only their header line).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from typing import Any

from detect_secrets.plugins.aws import AWSKeyDetector
from detect_secrets.plugins.azure_storage_key import AzureStorageKeyDetector
from detect_secrets.plugins.basic_auth import BasicAuthDetector
from detect_secrets.plugins.github_token import GitHubTokenDetector
from detect_secrets.plugins.gitlab_token import GitLabTokenDetector
from detect_secrets.plugins.jwt import JwtTokenDetector
from detect_secrets.plugins.mailchimp import MailchimpDetector
from detect_secrets.plugins.openai import OpenAIDetector
from detect_secrets.plugins.pypi_token import PypiTokenDetector
from detect_secrets.plugins.sendgrid import SendGridDetector
from detect_secrets.plugins.slack import SlackDetector
from detect_secrets.plugins.stripe import StripeDetector
from detect_secrets.plugins.telegram_token import TelegramBotTokenDetector
from detect_secrets.plugins.twilio import TwilioKeyDetector

# (kind, pattern, group holding the secret, check of the value or None).
Rule = tuple[str, re.Pattern[str], int, Callable[[str], bool] | None]

# Each kind's rules run only when one of its literals is in the text (a
# substring test is ~100x cheaper than a regular-expression pass): most
# prompts contain none, so the usual cost is a few substring tests.
GATES: dict[str, tuple[str, ...]] = {
    "aws_key": ("AKIA", "ASIA", "A3T", "ABIA", "ACCA", "aws", "AWS", "Aws"),
    "github_token": ("ghp_", "gho_", "ghu_", "ghs_", "ghr_", "github_pat_"),
    "gitlab_token": ("glpat-", "gldt-", "glft-", "glsoat-", "glrt-", "GR1348941", "glcbt-",
                     "glimt-", "glptt-", "glagent-", "gloas-"),
    "slack_token": ("xox", "XOX", "hooks.slack.com"),
    "stripe_key": ("k_live_",),
    "openai_key": ("sk-",),
    "anthropic_key": ("sk-ant-",),
    "seawall_key": ("sk-sw-",),
    "google_api_key": ("AIza",),
    "sendgrid_key": ("SG.",),
    "twilio_key": ("AC", "SK"),
    "telegram_token": (":",),
    "pypi_token": ("pypi-",),
    "mailchimp_key": ("-us",),
    "azure_storage_key": ("AccountKey=",),
    "password_in_url": ("://",),
    "jwt": ("eyJ",),
    "private_key": ("PRIVATE KEY", "PuTTY-User-Key-File"),
}


def _plugin_rules() -> list[Rule]:
    rules: list[Rule] = []
    plugins: list[tuple[str, Any, dict[int, int]]] = [
        ("aws_key", AWSKeyDetector, {1: 1}),  # pattern 1: the secret access key is group 1
        ("github_token", GitHubTokenDetector, {}),
        ("gitlab_token", GitLabTokenDetector, {}),
        ("slack_token", SlackDetector, {}),
        ("stripe_key", StripeDetector, {}),
        ("openai_key", OpenAIDetector, {}),
        ("sendgrid_key", SendGridDetector, {}),
        ("twilio_key", TwilioKeyDetector, {}),
        ("telegram_token", TelegramBotTokenDetector, {}),
        ("pypi_token", PypiTokenDetector, {}),
        ("mailchimp_key", MailchimpDetector, {}),
        ("azure_storage_key", AzureStorageKeyDetector, {}),
        ("password_in_url", BasicAuthDetector, {0: 1}),  # only the password part
    ]
    for kind, plugin, groups in plugins:
        for i, pattern in enumerate(plugin.denylist):
            rules.append((kind, pattern, groups.get(i, 0), None))
    # detect-secrets' JWT pattern stops before the signature (a lazy tail): the
    # whole token is taken here, and checked by its plugin.
    rules.append(("jwt", re.compile(r"eyJ[A-Za-z0-9_=-]+\.[A-Za-z0-9_=-]+\.?[A-Za-z0-9_.+/=-]*"),
                  0, JwtTokenDetector.is_formally_valid))
    return rules


_OWN: list[Rule] = [
    ("anthropic_key", re.compile(r"(?<![\w-])sk-ant-[a-z]{3,8}\d{2}-[A-Za-z0-9_-]{32,}"), 0, None),
    ("seawall_key", re.compile(r"(?<![\w-])sk-sw-[A-Za-z0-9_-]{20,}"), 0, None),
    ("openai_key", re.compile(r"(?<![\w-])sk-(?:proj|svcacct|admin)-[A-Za-z0-9_-]{20,}"), 0, None),
    ("openai_key", re.compile(r"(?<![\w-])sk-[A-Za-z0-9]{48}(?![\w-])"), 0, None),
    ("github_token", re.compile(r"(?<!\w)github_pat_[A-Za-z0-9_]{60,}"), 0, None),
    ("google_api_key", re.compile(r"(?<![\w-])AIza[0-9A-Za-z_-]{35}(?![\w-])"), 0, None),
    ("private_key", re.compile(
        r"-----BEGIN ((?:RSA |EC |DSA |OPENSSH |PGP |ENCRYPTED |SSH2 ENCRYPTED )?PRIVATE KEY"
        r"(?: BLOCK)?)-----[\s\S]{0,16384}?(?:-----END \1-----|\Z)"), 0, None),
    ("private_key", re.compile(r"PuTTY-User-Key-File-\d: [\s\S]{0,8192}?Private-MAC: \w+"),
     0, None),
]

RULES: list[Rule] = _OWN + _plugin_rules()
_BY_KIND: dict[str, list[Rule]] = {}
for _rule in RULES:
    _BY_KIND.setdefault(_rule[0], []).append(_rule)


def _worth_scanning(text: str) -> bool:
    """Every credential format is a run of 20+ characters without a space,
    except a password in a URL and a private key's header: prose without
    either is passed over after one split (far cheaper than the gates)."""
    if "://" in text or "PRIVATE KEY" in text or "PuTTY" in text:
        return True
    return max(map(len, text.split()), default=0) >= 20  # 30% faster than a regex or any()


def find_secrets(text: str) -> Iterator[tuple[int, int, str]]:
    """(start, end, kind) of each credential; may overlap (the caller keeps one)."""
    if not _worth_scanning(text):
        return
    for kind, gate in GATES.items():
        if not any(g in text for g in gate):
            continue
        for _, pattern, group, check in _BY_KIND[kind]:
            for m in pattern.finditer(text):
                start, end = m.span(group)
                if start < 0 or end - start < 8:
                    continue
                if check is not None and not check(m.group(group)):
                    continue
                yield start, end, kind
