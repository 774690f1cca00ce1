"""``router: combined``: the learned router where it knows the traffic, the
rules where it does not.

Why: a learned router ranks prompts like its training data well (MMLU test:
25% strong calls for half the quality gap, random needs 50%) and prompts
unlike it badly (worse than random on MT-Bench), while the rules are
mediocre everywhere but never wildly wrong. Two checks in the artifact say
which case a prompt is: its topic (:mod:`.ood`, embedding similarity to the
training prompts at or above a cut-off) and its kind of task (:mod:`.kind`,
surface features inside the training prompts' ranges: an exam-trained router
is not asked about word problems or writing requests that share its topics).
Familiar on both: the learned score; otherwise the rules score. Both are
estimates of P(cheap tier is good enough), so the same cut points apply.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from seawall.routing.complexity.features import FEATURE_NAMES
from seawall.routing.complexity.model import RouterModel, RouterModelError
from seawall.routing.complexity.rules import RulesRouter

__all__ = ["CombinedDecision", "CombinedRouter"]


@dataclass(frozen=True, slots=True)
class CombinedDecision:
    score: float
    source: str  # "learned" or "rules"
    similarity: float  # to the nearest training centroid
    kind_ok: bool  # surface features inside the training ranges
    reason: str


class CombinedRouter:
    """Scores with ``model`` for familiar prompts and ``rules`` otherwise.
    ``cutoff`` overrides the artifact's similarity cut-off (lower trusts the
    learned model further from its training data; -1 always, 1 almost never).
    ``check_kind=False`` ignores the task-kind reference (topic alone)."""

    def __init__(self, model: RouterModel, rules: RulesRouter,
                 cutoff: float | None = None, *, check_kind: bool = True) -> None:
        if model.ood is None:
            raise RouterModelError(
                "router: combined needs a router file with an out-of-distribution reference; "
                "retrain it with `seawall router train` (it stores one by default)")
        self.model = model
        self.ood = model.ood
        self.rules = rules
        self.cutoff = self.ood.cutoff if cutoff is None else float(cutoff)
        self.kind = model.kind_ref if check_kind else None

    def decide_by_kind(self, features: npt.NDArray[np.float32],
                       prompt_tokens: int | None = None) -> CombinedDecision | None:
        """The rules' decision when the prompt is another kind of task than
        the training prompts, else None (then embed it and call :meth:`decide`).
        Why first: most traffic fails this check, and it needs no embedding."""
        if self.kind is None:
            return None
        odd = self.kind.explain(features, FEATURE_NAMES)
        if len(odd) <= self.kind.allowance:
            return None
        ruled = self.rules.decide_features(features, prompt_tokens)
        return CombinedDecision(ruled.score, "rules", float("nan"), False,
                                f"rules (unfamiliar, other kind of task: "
                                f"{', '.join(odd[:3])}): {ruled.reason}")

    def decide(self, vector: npt.NDArray[Any], features: npt.NDArray[np.float32],
               prompt_tokens: int | None = None) -> CombinedDecision:
        """One request: its embedding and :func:`text_features`."""
        similarity = float(self.ood.similarity(vector)[0])
        ruled = self.rules.decide_features(features, prompt_tokens)
        odd = [] if self.kind is None else self.kind.explain(features, FEATURE_NAMES)
        kind_ok = len(odd) <= (0 if self.kind is None else self.kind.allowance)
        if similarity >= self.cutoff and kind_ok:
            score = self.model.score(vector, features)
            return CombinedDecision(score, "learned", similarity, True,
                                    f"learned P(cheap ok) {score:.2f} (familiar, similarity "
                                    f"{similarity:.2f}); signals: {ruled.reason}")
        why = (f"similarity {similarity:.2f} < {self.cutoff:.2f}" if similarity < self.cutoff
               else "other kind of task: " + ", ".join(odd[:3]))
        return CombinedDecision(ruled.score, "rules", similarity, kind_ok,
                                f"rules (unfamiliar, {why}): {ruled.reason}")

    def score_batch(self, vectors: npt.ArrayLike, features: npt.ArrayLike,
                    rule_scores: npt.ArrayLike) -> tuple[npt.NDArray[np.float64],
                                                         npt.NDArray[np.bool_]]:
        """Scores for many rows (bench): (scores, familiar mask); ``rule_scores``
        are the rules' scores of the same rows."""
        vec = np.atleast_2d(np.asarray(vectors, dtype=np.float32))
        feats = np.atleast_2d(np.asarray(features, dtype=np.float32))
        familiar = self.ood.similarity(vec) >= self.cutoff
        if self.kind is not None:
            familiar &= self.kind.familiar(feats)
        learned = self.model.score_batch(vec, feats)
        scores = np.where(familiar, learned, np.asarray(rule_scores, dtype=np.float64))
        return scores.astype(np.float64), familiar
