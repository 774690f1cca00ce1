"""Cost-aware routing: estimate per request how likely the cheap tier is good
enough, then pick a tier (cheapest -> strongest) from that score.

* :mod:`.features` - cheap text features of a chat request (no model).
* :mod:`.rules` - a transparent, configurable rules router over those features.
* :mod:`.model` - the learned router artifact (NumPy inference, versioned JSON).
* :mod:`.train` - training it from labelled JSONL (NumPy only).
* :mod:`.ood` - is a prompt like the learned router's training prompts?
* :mod:`.combined` - the learned router where it is, the rules where it is not.
* :mod:`.decide` - score -> tier for N tiers, and a traffic-share calibrator.
* :mod:`.cli` - ``seawall router train`` / ``seawall router inspect``.
"""

from seawall.routing.complexity.decide import CostTarget, TierChoice, TierPolicy
from seawall.routing.complexity.features import FEATURE_NAMES, routing_text, text_features
from seawall.routing.complexity.model import RouterModel, RouterModelError
from seawall.routing.complexity.rules import RuleDecision, RulesRouter, RulesSettings

__all__ = [
    "FEATURE_NAMES",
    "CostTarget",
    "RouterModel",
    "RouterModelError",
    "RuleDecision",
    "RulesRouter",
    "RulesSettings",
    "TierChoice",
    "TierPolicy",
    "routing_text",
    "text_features",
]
