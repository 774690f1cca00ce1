"""``router: combined``: the learned router where it knows the traffic, the
rules where it does not.

Why: a learned router ranks prompts like its training data well (MMLU test:
25% strong calls for half the quality gap, random needs 50%) and prompts
unlike it badly (worse than random on MT-Bench), while the rules are
mediocre everywhere but never wildly wrong. The artifact's out-of-distribution
reference (:mod:`.ood`) says which case a prompt is: at or above its
similarity cut-off the learned score is used, below it the rules score. Both
are estimates of P(cheap tier is good enough), so the same cut points apply.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from seawall.routing.complexity.model import RouterModel, RouterModelError
from seawall.routing.complexity.rules import RulesRouter

__all__ = ["CombinedDecision", "CombinedRouter"]


@dataclass(frozen=True, slots=True)
class CombinedDecision:
    score: float
    source: str  # "learned" or "rules"
    similarity: float  # to the nearest training centroid
    reason: str


class CombinedRouter:
    """Scores with ``model`` for familiar prompts and ``rules`` otherwise.
    ``cutoff`` overrides the artifact's similarity cut-off (lower trusts the
    learned model further from its training data; -1 always, 1 almost never)."""

    def __init__(self, model: RouterModel, rules: RulesRouter,
                 cutoff: float | None = None) -> None:
        if model.ood is None:
            raise RouterModelError(
                "router: combined needs a router file with an out-of-distribution reference; "
                "retrain it with `seawall router train` (it stores one by default)")
        self.model = model
        self.ood = model.ood
        self.rules = rules
        self.cutoff = self.ood.cutoff if cutoff is None else float(cutoff)

    def decide(self, vector: npt.NDArray[Any], features: npt.NDArray[np.float32],
               prompt_tokens: int | None = None) -> CombinedDecision:
        """One request: its embedding and :func:`text_features`."""
        similarity = float(self.ood.similarity(vector)[0])
        ruled = self.rules.decide_features(features, prompt_tokens)
        if similarity >= self.cutoff:
            score = self.model.score(vector, features)
            return CombinedDecision(score, "learned", similarity,
                                    f"learned P(cheap ok) {score:.2f} (familiar, similarity "
                                    f"{similarity:.2f}); signals: {ruled.reason}")
        return CombinedDecision(ruled.score, "rules", similarity,
                                f"rules (unfamiliar, similarity {similarity:.2f} < "
                                f"{self.cutoff:.2f}): {ruled.reason}")

    def score_batch(self, vectors: npt.ArrayLike, features: npt.ArrayLike,
                    rule_scores: npt.ArrayLike) -> tuple[npt.NDArray[np.float64],
                                                         npt.NDArray[np.bool_]]:
        """Scores for many rows (bench): (scores, familiar mask); ``rule_scores``
        are the rules' scores of the same rows."""
        vec = np.atleast_2d(np.asarray(vectors, dtype=np.float32))
        familiar = self.ood.similarity(vec) >= self.cutoff
        learned = self.model.score_batch(vec, np.atleast_2d(np.asarray(features)))
        scores = np.where(familiar, learned, np.asarray(rule_scores, dtype=np.float64))
        return scores.astype(np.float64), familiar
