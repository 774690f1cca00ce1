"""Is a prompt like the ones the learned router was trained on?

Why: a learned router is only as good as its training traffic. Trained on
multiple-choice exams it ranks open-ended chat worse than random (RouteLLM's
MT-Bench with an MMLU-trained router: 70.9% strong calls for half the quality
gap, random needs 50%). So the artifact carries a compact picture of its
training prompts, and a prompt far from all of it is scored by the rules
instead (:mod:`.combined`).

The picture: ``m`` centroids of the training embeddings (spherical k-means,
float16; a few hundred are enough to cover tens of thousands of prompts at a
few hundred KiB), and the *familiarity* of a prompt is its cosine similarity
to the nearest centroid. The cut-off is a low quantile of the same
similarity on held-out training prompts (ones the centroids were not fitted
on), so "out of distribution" means "less familiar than all but q% of
unseen training-like prompts". Scoring is one (1, dim) x (dim, m) product:
about 20 µs at m = 512.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

__all__ = ["OodReference", "fit_reference"]

F32 = npt.NDArray[np.float32]


@dataclass(frozen=True, eq=False)
class OodReference:
    """Centroids (m, dim) of the training embeddings and the similarity below
    which a prompt counts as out of distribution."""

    centroids: npt.NDArray[np.float16]
    cutoff: float
    quantile: float  # share of held-out training prompts below the cutoff
    n_reference: int  # training prompts the centroids summarise
    _keys: F32 = field(init=False, repr=False)

    def __post_init__(self) -> None:
        # float16 on disk, float32 (transposed, contiguous) for the product
        object.__setattr__(self, "_keys", np.ascontiguousarray(
            self.centroids.astype(np.float32).T))
        if self.centroids.ndim != 2 or len(self.centroids) == 0:
            raise ValueError(f"ood centroids must be a non-empty (m, dim) array, "
                             f"got shape {self.centroids.shape}")
        if not -1.0 <= self.cutoff <= 1.0:
            raise ValueError(f"ood cutoff is a cosine similarity in [-1, 1], got {self.cutoff}")

    @property
    def dim(self) -> int:
        return int(self.centroids.shape[1])

    def similarity(self, vectors: npt.ArrayLike) -> F32:
        """Cosine similarity of each (L2-normalised) row to its nearest centroid."""
        rows = np.atleast_2d(np.asarray(vectors, dtype=np.float32))
        sims = rows @ self._keys
        out: F32 = sims.max(axis=1).astype(np.float32)
        return out

    def familiar(self, vectors: npt.ArrayLike, cutoff: float | None = None) -> npt.NDArray[
            np.bool_]:
        """True where a row is at least as similar as the cut-off (in distribution)."""
        limit = self.cutoff if cutoff is None else cutoff
        return self.similarity(vectors) >= limit

    def summary(self) -> dict[str, Any]:
        return {"centroids": int(self.centroids.shape[0]), "cutoff": round(self.cutoff, 4),
                "quantile": self.quantile, "n_reference": self.n_reference}

    def to_doc(self) -> dict[str, Any]:
        """JSON-able fields except the centroids (the model file encodes arrays)."""
        return {"cutoff": float(self.cutoff), "quantile": float(self.quantile),
                "n_reference": int(self.n_reference)}

    @classmethod
    def from_doc(cls, doc: Mapping[str, Any], centroids: npt.NDArray[Any]) -> OodReference:
        return cls(centroids=np.asarray(centroids, dtype=np.float16),
                   cutoff=float(doc["cutoff"]), quantile=float(doc["quantile"]),
                   n_reference=int(doc["n_reference"]))


def _normalise(x: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    out: npt.NDArray[np.float32] = (x / np.maximum(norms, 1e-12)).astype(np.float32)
    return out


def _kmeans(x: F32, m: int, iterations: int, rng: np.random.Generator) -> F32:
    """Spherical k-means (cosine): k-means++ seeding on a sample, then Lloyd
    steps; an emptied cluster is re-seeded with the worst-covered point."""
    n = len(x)
    sample = x[rng.choice(n, size=min(n, 20 * m), replace=False)]
    centroids = np.empty((m, x.shape[1]), dtype=np.float32)
    centroids[0] = sample[rng.integers(len(sample))]
    best = sample @ centroids[0]
    for i in range(1, m):
        gap = np.maximum(1.0 - best, 0.0) ** 2
        total = float(gap.sum())
        pick = rng.choice(len(sample), p=gap / total) if total > 0 else rng.integers(len(sample))
        centroids[i] = sample[pick]
        best = np.maximum(best, sample @ centroids[i])
    for _ in range(iterations):
        sims = x @ centroids.T
        assign = sims.argmax(axis=1)
        near = sims[np.arange(n), assign]
        order = np.argsort(assign, kind="stable")
        counts = np.bincount(assign, minlength=m)
        starts = np.r_[0, np.cumsum(counts)[:-1]]
        sums = np.zeros_like(centroids)
        filled = counts > 0
        sums[filled] = np.add.reduceat(x[order], starts[filled], axis=0)
        for empty in np.flatnonzero(counts == 0):
            worst = int(near.argmin())
            sums[empty] = x[worst]
            near[worst] = 1.0
        centroids = _normalise(sums)
    return centroids


def fit_reference(vectors: npt.ArrayLike, calibration: npt.ArrayLike, *,
                  centroids: int = 512, quantile: float = 0.05, iterations: int = 10,
                  seed: int = 0) -> OodReference:
    """Centroids of ``vectors`` and a cut-off at the ``quantile`` of the
    nearest-centroid similarity of ``calibration`` rows (held-out prompts of
    the same training data; the fit rows themselves would look too familiar)."""
    x = _normalise(np.asarray(vectors, dtype=np.float32))
    held = _normalise(np.atleast_2d(np.asarray(calibration, dtype=np.float32)))
    if len(x) == 0 or len(held) == 0 or held.shape[1] != x.shape[1]:
        raise ValueError("need training vectors and held-out vectors of the same dimension")
    if not 0.0 <= quantile < 1.0:
        raise ValueError(f"quantile must lie in [0, 1), got {quantile}")
    m = max(1, min(int(centroids), len(x) // 4 or 1))
    fitted = _kmeans(x, m, iterations, np.random.default_rng(seed))
    ref = OodReference(centroids=fitted.astype(np.float16), cutoff=0.0, quantile=quantile,
                       n_reference=len(x))
    cutoff = float(np.quantile(ref.similarity(held), quantile))
    return OodReference(centroids=ref.centroids, cutoff=cutoff, quantile=quantile,
                        n_reference=len(x))
