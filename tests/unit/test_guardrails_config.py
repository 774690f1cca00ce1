"""guardrails: settings are checked at start, with the key named."""

from __future__ import annotations

import pytest

from seawall.config import ConfigError, parse_settings

MODELS = {"providers": {"f": {"type": "fake"}}, "models": {"m": {"provider": "f"}}}


def test_defaults_redact_records_and_apply_no_policy() -> None:
    g = parse_settings(MODELS, env={}).guardrails
    assert g.redact_traces and not g.input and not g.output and g.moderation is None


@pytest.mark.parametrize("guardrails,needle", [
    ({"models": {"nope": {"input": {"email": "mask"}}}}, "guardrails.models.nope"),
    ({"moderation": {"model": "nope"}}, "guardrails.moderation.model"),
    ({"moderation": {"model": "m", "url": "http://127.0.0.1:1/v1/moderations"}}, "exactly one"),
    ({"input": {"emails": "mask"}}, "guardrails.input"),
    ({"input": {"email": "hide"}}, "guardrails.input"),
])
def test_mistakes_are_named(guardrails: dict, needle: str) -> None:  # type: ignore[type-arg]
    with pytest.raises(ConfigError) as e:
        parse_settings({**MODELS, "guardrails": guardrails}, env={})
    assert needle in str(e.value)
