"""Which detectors act, and how, for one request: global, then model, then key."""

from __future__ import annotations

from dataclasses import dataclass, field

from seawall.config import GuardrailPolicy, GuardrailSettings
from seawall.guardrails.detectors import DETECTORS, Find, finders


@dataclass(frozen=True, slots=True)
class Side:
    """One direction's policy: detector -> action (``off`` dropped)."""

    actions: dict[str, str] = field(default_factory=dict)
    find: list[Find] = field(default_factory=list)

    @property
    def active(self) -> bool:
        return bool(self.actions)

    def has(self, action: str) -> bool:
        return action in self.actions.values()


@dataclass(frozen=True, slots=True)
class Policy:
    input: Side
    output: Side
    moderate: bool

    @property
    def active(self) -> bool:
        return self.input.active or self.output.active or self.moderate


def _side(actions: dict[str, str], region: str) -> Side:
    live = {d: a for d, a in actions.items() if a != "off"}
    return Side(live, finders(live, region) if live else [])


class Policies:
    """Resolves and caches the policy of each (model, key name) pair; the
    cache is bounded by the configured models and keys (others share the
    global policy)."""

    def __init__(self, settings: GuardrailSettings) -> None:
        self.settings = settings
        self._cache: dict[tuple[str, str], Policy] = {}
        self.none = Policy(Side(), Side(), False)
        self.configured = bool(settings.input or settings.output or settings.moderation
                               or settings.models or settings.keys)

    def of(self, model: str, key_name: str | None) -> Policy:
        s = self.settings
        m = model if model in s.models else ""
        k = key_name if key_name is not None and key_name in s.keys else ""
        hit = self._cache.get((m, k))
        if hit is not None:
            return hit
        layers: list[GuardrailPolicy] = [s]
        if m:
            layers.append(s.models[m])
        if k:
            layers.append(s.keys[k])
        inp: dict[str, str] = {}
        out: dict[str, str] = {}
        layer: GuardrailPolicy
        moderate = s.moderation is not None
        for layer in layers:
            inp.update(layer.input.items())
            out.update(layer.output.items())
            if layer.moderate is not None:
                moderate = layer.moderate
        moderate = moderate and s.moderation is not None
        policy = Policy(_side(inp, s.phone_region), _side(out, s.phone_region), moderate)
        if not policy.active:
            policy = self.none
        self._cache[(m, k)] = policy
        return policy

    def redaction(self) -> list[Find]:
        """The detectors that clean trace records."""
        names = self.settings.redact_detectors
        return finders(DETECTORS if names is None else names, self.settings.phone_region)
