"""The learned router artifact: P(cheap tier is good enough) from a prompt
embedding joined with its scaled text features.

Why this shape: the embedding says *what* a prompt is about (RouteLLM found
topic carries most of the signal), the features say *how hard it looks*
(length, code, math), and a tiny model over both runs in microseconds with
NumPy alone, so serving needs neither scikit-learn nor a GPU. Three kinds:

* ``logistic``: one weight per input; the transparent baseline.
* ``mlp``: one ReLU hidden layer; catches interactions (topic x length).
* ``knn``: similarity-weighted vote of the k nearest training prompts, as
  RouteLLM's SW ranking; features are not used.

Optionally the artifact carries an out-of-distribution reference
(:mod:`.ood`: centroids of its training prompts and a similarity cut-off), so
``router: combined`` can tell which prompts it knows.

The file is JSON, arrays as base64 little-endian float32 (float16 for kNN
keys and OOD centroids), and ``version`` is the sha256 of everything else in the document, so a
decision can name exactly which router made it and an edited file is caught.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from seawall.routing.complexity.features import FEATURE_NAMES
from seawall.routing.complexity.kind import KindReference
from seawall.routing.complexity.ood import OodReference

__all__ = [
    "DEFAULT_EMBEDDER_ID",
    "FORMAT_VERSION",
    "KINDS",
    "RouterModel",
    "RouterModelError",
    "embedder_id",
]

FORMAT_VERSION = 1
KINDS = ("logistic", "mlp", "knn")
# seawall.ml.embedder.Embedder() with its packaged model: all-MiniLM-L6-v2, int8 ONNX.
DEFAULT_EMBEDDER_ID = "all-MiniLM-L6-v2-int8"

Array = npt.NDArray[np.float32]

_REQUIRED_PARAMS = {
    "logistic": ("w", "b"),
    "mlp": ("w1", "b1", "w2", "b2"),
    "knn": ("keys", "labels"),
}


class RouterModelError(ValueError):
    """A router file that cannot be used: wrong format, kind, embedder or shape."""


def embedder_id(model_path: str | Path | None = None) -> str:
    """The id a router records for the embedder that made its vectors: the
    packaged default's name, or the ONNX file's name for a custom model."""
    return DEFAULT_EMBEDDER_ID if model_path is None else Path(model_path).name


def _encode(array: npt.NDArray[Any]) -> dict[str, Any]:
    dtype = "float16" if array.dtype == np.float16 else "float32"
    data = np.ascontiguousarray(array, dtype=np.dtype(dtype).newbyteorder("<"))
    return {"dtype": dtype, "shape": list(array.shape),
            "data": base64.b64encode(data.tobytes()).decode("ascii")}


def _decode(name: str, doc: Any) -> npt.NDArray[Any]:
    try:
        dtype = np.dtype(doc["dtype"]).newbyteorder("<")
        if doc["dtype"] not in ("float16", "float32"):
            raise ValueError(f"dtype {doc['dtype']!r}")
        shape = tuple(int(n) for n in doc["shape"])
        raw = base64.b64decode(doc["data"], validate=True)
        array = np.frombuffer(raw, dtype=dtype).reshape(shape)
    except (KeyError, TypeError, ValueError) as e:
        raise RouterModelError(f"parameter {name!r} is not a valid encoded array: {e}") from None
    return array.astype(np.float16 if doc["dtype"] == "float16" else np.float32)


def _digest(body: Mapping[str, Any]) -> str:
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


@dataclass(frozen=True, eq=False)
class RouterModel:
    """A trained router. Build with :func:`seawall.routing.complexity.train.train_router`
    or :meth:`load`; score with :meth:`score` (one request) or :meth:`score_batch`."""

    kind: str
    dim: int
    params: Mapping[str, npt.NDArray[Any]]
    feature_mean: Array
    feature_scale: Array
    feature_names: tuple[str, ...] = tuple(FEATURE_NAMES)
    embedder: str = DEFAULT_EMBEDDER_ID
    hyper: Mapping[str, float] = field(default_factory=dict)
    training: Mapping[str, Any] = field(default_factory=dict)
    ood: OodReference | None = None
    kind_ref: KindReference | None = None  # task-kind reference (:mod:`.kind`)
    created_at: str = field(
        default_factory=lambda: dt.datetime.now(dt.UTC).isoformat(timespec="seconds"))

    def __post_init__(self) -> None:
        self._check()

    # ------------------------------------------------------------ inference

    def _check(self) -> None:
        if self.kind not in KINDS:
            raise RouterModelError(f"unknown router kind {self.kind!r} (known: {', '.join(KINDS)})")
        missing = [p for p in _REQUIRED_PARAMS[self.kind] if p not in self.params]
        if missing:
            raise RouterModelError(f"{self.kind} router is missing parameters {missing}")
        n_feat = len(self.feature_names)
        if self.feature_mean.shape != (n_feat,) or self.feature_scale.shape != (n_feat,):
            raise RouterModelError(
                f"feature scaling has shape {self.feature_mean.shape}/{self.feature_scale.shape},"
                f" expected ({n_feat},) for {n_feat} features")
        width = self.dim + n_feat
        p = self.params
        expected: dict[str, tuple[int, ...]]
        if self.kind == "logistic":
            expected = {"w": (width,), "b": (1,)}
        elif self.kind == "mlp":
            hidden = p["w1"].shape[1] if p["w1"].ndim == 2 else -1
            expected = {"w1": (width, hidden), "b1": (hidden,), "w2": (hidden,), "b2": (1,)}
        else:
            n = p["keys"].shape[0] if p["keys"].ndim == 2 else -1
            expected = {"keys": (n, self.dim), "labels": (n,)}
        if self.kind_ref is not None and self.kind_ref.low.shape != (n_feat,):
            raise RouterModelError(f"task-kind ranges cover {self.kind_ref.low.shape[0]} "
                                   f"features, the router {n_feat}")
        if self.ood is not None and self.ood.dim != self.dim:
            raise RouterModelError(f"ood centroids have dimension {self.ood.dim}, "
                                   f"the router {self.dim}")
        for name, shape in expected.items():
            if p[name].shape != shape:
                raise RouterModelError(
                    f"parameter {name!r} has shape {p[name].shape}, expected {shape} "
                    f"(embedding dimension {self.dim}, {n_feat} features)")

    def inputs(self, vectors: npt.NDArray[Any], features: npt.NDArray[Any]) -> Array:
        """The model's input rows: embedding ⊕ standardised features."""
        scaled = (np.asarray(features, dtype=np.float32) - self.feature_mean) / self.feature_scale
        return np.concatenate([np.asarray(vectors, dtype=np.float32), scaled], axis=-1)

    def score_batch(self, vectors: npt.NDArray[Any], features: npt.NDArray[Any]) -> Array:
        """P(cheap is good enough) for each row of ``vectors`` (n, dim) and
        ``features`` (n, len(feature_names))."""
        vectors = np.atleast_2d(np.asarray(vectors, dtype=np.float32))
        features = np.atleast_2d(np.asarray(features, dtype=np.float32))
        if vectors.shape[1] != self.dim:
            raise RouterModelError(
                f"embedding has dimension {vectors.shape[1]}, the router expects {self.dim} "
                f"(embedder {self.embedder})")
        if features.shape[1] != len(self.feature_names):
            raise RouterModelError(
                f"{features.shape[1]} features given, the router expects "
                f"{len(self.feature_names)}")
        p = self.params
        if self.kind == "knn":
            return self._knn(vectors)
        x = self.inputs(vectors, features)
        if self.kind == "logistic":
            logits = x @ p["w"] + p["b"][0]
        else:
            hidden = np.maximum(x @ p["w1"] + p["b1"], 0.0)
            logits = hidden @ p["w2"] + p["b2"][0]
        if "calib_a" in self.hyper:  # Platt scaling fitted on held-out rows (train.calibrate)
            logits = self.hyper["calib_a"] * logits + self.hyper.get("calib_b", 0.0)
        out: Array = (1.0 / (1.0 + np.exp(-np.clip(logits, -30.0, 30.0)))).astype(np.float32)
        return out

    def _knn(self, vectors: Array) -> Array:
        keys, labels = self.params["keys"], self.params["labels"]
        k = min(int(self.hyper.get("k", 32)), len(labels))
        temperature = float(self.hyper.get("temperature", 0.05))
        prior = float(self.hyper.get("prior", float(labels.mean()) if len(labels) else 0.5))
        prior_weight = float(self.hyper.get("prior_weight", 1.0))
        sims = vectors @ keys.T.astype(np.float32)
        top = np.argpartition(-sims, k - 1, axis=1)[:, :k] if k < len(labels) else \
            np.broadcast_to(np.arange(len(labels)), (len(vectors), len(labels)))
        top_sims = np.take_along_axis(sims, top, axis=1)
        weights = np.exp((top_sims - top_sims.max(axis=1, keepdims=True)) / temperature)
        votes = (weights * labels[top]).sum(axis=1)
        out: Array = ((votes + prior * prior_weight) /
                      (weights.sum(axis=1) + prior_weight)).astype(np.float32)
        return out

    def score(self, vector: npt.NDArray[Any], features: npt.NDArray[Any]) -> float:
        """P(cheap is good enough) for one request's embedding and features."""
        return float(self.score_batch(vector, features)[0])

    # ---------------------------------------------------------- persistence

    def _body(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "format_version": FORMAT_VERSION,
            "kind": self.kind,
            "created_at": self.created_at,
            "embedder": self.embedder,
            "dim": self.dim,
            "features": {
                "names": list(self.feature_names),
                "mean": [float(v) for v in self.feature_mean],
                "scale": [float(v) for v in self.feature_scale],
            },
            "hyper": {k: float(v) for k, v in sorted(self.hyper.items())},
            "params": {name: _encode(array) for name, array in sorted(self.params.items())},
            "training": _plain(self.training),
        }
        if self.ood is not None:  # absent key: files without one keep their version
            body["ood"] = {**self.ood.to_doc(), "centroids": _encode(self.ood.centroids)}
        if self.kind_ref is not None:  # likewise
            body["task_kind"] = self.kind_ref.to_doc()
        return body

    @property
    def version(self) -> str:
        """sha256 (hex) of the artifact's content: identifies this exact router."""
        cached = self.__dict__.get("_version")
        if cached is None:
            cached = _digest(self._body())
            object.__setattr__(self, "_version", cached)
        return str(cached)

    def to_dict(self) -> dict[str, Any]:
        body = self._body()
        return {"version": self.version, **body}

    def save(self, path: str | Path) -> str:
        """Write the artifact as JSON (atomically); returns its version."""
        target = Path(path)
        tmp = target.with_name(target.name + ".tmp")
        tmp.write_text(json.dumps(self.to_dict(), indent=1, ensure_ascii=False) + "\n",
                       encoding="utf-8")
        tmp.replace(target)
        return self.version

    @classmethod
    def from_dict(cls, doc: Mapping[str, Any], *, expect_embedder: str | None = None,
                  expect_dim: int | None = None) -> RouterModel:
        """Rebuild from :meth:`to_dict` output, checking everything a served
        router depends on; raises :class:`RouterModelError` naming the problem."""
        if not isinstance(doc, Mapping):
            raise RouterModelError("a router file holds a JSON object")
        fmt = doc.get("format_version")
        if fmt != FORMAT_VERSION:
            raise RouterModelError(
                f"unsupported router format_version {fmt!r} (this Seawall reads "
                f"{FORMAT_VERSION}); retrain with `seawall router train`")
        try:
            kind = str(doc["kind"])
            embedder = str(doc["embedder"])
            dim = int(doc["dim"])
            feats = doc["features"]
            names = tuple(str(n) for n in feats["names"])
            mean = np.asarray(feats["mean"], dtype=np.float32)
            scale = np.asarray(feats["scale"], dtype=np.float32)
            params = {str(k): _decode(str(k), v) for k, v in dict(doc["params"]).items()}
            hyper = {str(k): float(v) for k, v in dict(doc.get("hyper") or {}).items()}
            created_at = str(doc["created_at"])
            training = dict(doc.get("training") or {})
            ood_doc = doc.get("ood")
            ood = (None if ood_doc is None else OodReference.from_doc(
                ood_doc, _decode("ood.centroids", ood_doc["centroids"])))
            kind_doc = doc.get("task_kind")
            kind_ref = None if kind_doc is None else KindReference.from_doc(kind_doc)
        except (KeyError, TypeError, ValueError) as e:
            if isinstance(e, RouterModelError):
                raise
            raise RouterModelError(f"malformed router file: {type(e).__name__}: {e}") from None
        if kind not in KINDS:
            raise RouterModelError(f"unknown router kind {kind!r} (known: {', '.join(KINDS)})")
        if expect_embedder is not None and embedder != expect_embedder:
            raise RouterModelError(
                f"router was trained on embeddings of {embedder!r}, but the gateway embeds "
                f"with {expect_embedder!r}; retrain it with that embedder")
        if expect_dim is not None and dim != expect_dim:
            raise RouterModelError(
                f"router expects {dim}-d embeddings, the embedder gives {expect_dim}-d")
        if names != tuple(FEATURE_NAMES):
            raise RouterModelError(
                "router was trained on other text features than this Seawall computes "
                f"({len(names)} vs {len(FEATURE_NAMES)}); retrain it")
        model = cls(kind=kind, dim=dim, params=params, feature_mean=mean, feature_scale=scale,
                     feature_names=names, embedder=embedder, hyper=hyper, training=training,
                     ood=ood, kind_ref=kind_ref, created_at=created_at)
        claimed = doc.get("version")
        if claimed is not None and claimed != model.version:
            raise RouterModelError(
                f"router content does not match its version (file says {str(claimed)[:12]}…, "
                f"content is {model.version[:12]}…): the file was edited or damaged")
        return model

    @classmethod
    def load(cls, path: str | Path, *, expect_embedder: str | None = None,
             expect_dim: int | None = None) -> RouterModel:
        """Read a router file; see :meth:`from_dict` for the checks."""
        target = Path(path)
        try:
            doc = json.loads(target.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise RouterModelError(f"{target}: no such router file") from None
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise RouterModelError(f"{target}: not a router file (invalid JSON: {e})") from None
        try:
            return cls.from_dict(doc, expect_embedder=expect_embedder, expect_dim=expect_dim)
        except RouterModelError as e:
            raise RouterModelError(f"{target}: {e}") from None

    def describe(self) -> dict[str, Any]:
        """What ``seawall router inspect`` shows: everything but the weights."""
        sizes = {name: list(a.shape) for name, a in sorted(self.params.items())}
        return {"version": self.version, "format_version": FORMAT_VERSION, "kind": self.kind,
                "created_at": self.created_at, "embedder": self.embedder, "dim": self.dim,
                "features": list(self.feature_names), "hyper": dict(self.hyper),
                "params": sizes, "training": _plain(self.training),
                "ood": None if self.ood is None else self.ood.summary(),
                "task_kind": None if self.kind_ref is None else self.kind_ref.summary()}


def _plain(value: Any) -> Any:
    """JSON-safe copy (NumPy scalars -> Python, NaN -> None) for hashing and files."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value
