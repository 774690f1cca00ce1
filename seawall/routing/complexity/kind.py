"""Is a prompt the same *kind* of task as the learned router's training prompts?

Why a second check beside :mod:`.ood`: embedding similarity measures topic,
not task. An MMLU-trained router found every GSM8K word problem and three
quarters of MT-Bench's open questions "familiar" by MiniLM similarity (they
talk about the same subjects), then ranked them worse than random. What the
router learned - which exam questions a cheap model gets wrong - holds for
four-option exam questions, not for word problems or writing requests, and
the surface of a prompt shows which one it is: options, lines, length, code,
maths, keywords (:func:`.features.text_features`).

The reference: per feature, the central range of the training prompts
(``[q(tail), q(1 - tail)]`` of the rows the router was fitted on). A prompt's
*kind distance* is the number of features outside their range; a prompt is
familiar when that number is at most ``allowance``, the smallest count that
all but ``quantile`` of held-out training prompts meet. For the MMLU router:
a multiple-choice exam question passes (99% of held-out MMLU dev), an open
request fails on ``multiple_choice`` and ``log_lines`` (99.8% of AlpacaEval
dev). It stores two floats per feature and costs a comparison per feature.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

__all__ = ["KindReference", "fit_kind"]


@dataclass(frozen=True, eq=False)
class KindReference:
    """Per-feature training range and how many features may fall outside it."""

    low: npt.NDArray[np.float32]
    high: npt.NDArray[np.float32]
    allowance: int
    tail: float  # share of training rows outside each range, per side
    quantile: float  # share of held-out training rows beyond the allowance

    def __post_init__(self) -> None:
        if self.low.shape != self.high.shape or self.low.ndim != 1:
            raise ValueError("task-kind ranges need two 1-d arrays of the same length")
        if np.any(self.low > self.high):
            raise ValueError("task-kind ranges need low <= high")
        if self.allowance < 0:
            raise ValueError("task-kind allowance must be >= 0")

    def outside(self, features: npt.ArrayLike) -> npt.NDArray[np.bool_]:
        """(n, features) mask: which features of each row lie outside the range."""
        rows = np.atleast_2d(np.asarray(features, dtype=np.float32))
        out: npt.NDArray[np.bool_] = (rows < self.low) | (rows > self.high)
        return out

    def familiar(self, features: npt.ArrayLike) -> npt.NDArray[np.bool_]:
        """True where at most ``allowance`` features are outside their range."""
        counts: npt.NDArray[np.bool_] = self.outside(features).sum(axis=1) <= self.allowance
        return counts

    def explain(self, features: npt.ArrayLike, names: Sequence[str]) -> list[str]:
        """Names of one row's features outside the training range."""
        mask = self.outside(features)[0]
        return [n for n, out in zip(names, mask, strict=True) if out]

    def summary(self) -> dict[str, Any]:
        return {"allowance": self.allowance, "tail": self.tail, "quantile": self.quantile}

    def to_doc(self) -> dict[str, Any]:
        return {"low": [float(v) for v in self.low], "high": [float(v) for v in self.high],
                "allowance": int(self.allowance), "tail": float(self.tail),
                "quantile": float(self.quantile)}

    @classmethod
    def from_doc(cls, doc: Mapping[str, Any]) -> KindReference:
        return cls(low=np.asarray(doc["low"], dtype=np.float32),
                   high=np.asarray(doc["high"], dtype=np.float32),
                   allowance=int(doc["allowance"]), tail=float(doc["tail"]),
                   quantile=float(doc["quantile"]))


def fit_kind(features: npt.ArrayLike, calibration: npt.ArrayLike, *, tail: float = 0.001,
             quantile: float = 0.01) -> KindReference:
    """Ranges from ``features`` (the fit rows) and the allowance from
    ``calibration`` (held-out rows of the same training data). The defaults
    were chosen on dev data (bench/router_eval.py): MMLU dev held-out rows
    against AlpacaEval dev prompts."""
    fit = np.atleast_2d(np.asarray(features, dtype=np.float32))
    held = np.atleast_2d(np.asarray(calibration, dtype=np.float32))
    if len(fit) == 0 or len(held) == 0 or fit.shape[1] != held.shape[1]:
        raise ValueError("need fit rows and held-out rows with the same features")
    if not 0.0 <= tail < 0.5 or not 0.0 <= quantile < 1.0:
        raise ValueError("tail must lie in [0, 0.5) and quantile in [0, 1)")
    low = np.quantile(fit, tail, axis=0).astype(np.float32)
    high = np.quantile(fit, 1.0 - tail, axis=0).astype(np.float32)
    ref = KindReference(low, high, 0, tail, quantile)
    counts = ref.outside(held).sum(axis=1)
    allowance = 0
    while np.mean(counts > allowance) > quantile:
        allowance += 1
    return KindReference(low, high, allowance, tail, quantile)
