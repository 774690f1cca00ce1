"""Training the learned router from labelled prompts, with NumPy alone.

Why NumPy only: the models are small (a few hundred inputs, thousands of
rows), so Newton's method for logistic regression and a few hundred Adam
steps for a one-hidden-layer MLP converge in seconds; scikit-learn would add a
60 MB dependency for no gain in quality (checked in bench/router_eval.py).

Data: JSONL, one request per line, either a prompt or chat messages, labelled
either directly or with per-tier quality scores::

    {"prompt": "Translate 'hello' to French", "cheap_ok": true}
    {"messages": [{"role": "user", "content": "..."}], "scores": {"cheap": 0.4, "strong": 0.9}}

With scores, ``cheap_ok = scores[cheap] >= scores[strong] - margin``.

Several files are several *sources* (say, exam questions and chat prompts);
``balance_sources`` weighs each source's cheap-ok and not-ok rows equally, so
the model cannot learn "which source is this" as a stand-in for its base
rate. The trained artifact also stores an out-of-distribution reference of
its training prompts (:mod:`.ood`), which ``router: combined`` uses to fall
back to the rules on traffic unlike them.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
from pydantic import BaseModel, ConfigDict, Field

from seawall.routing.complexity.features import FEATURE_NAMES, routing_text, text_features
from seawall.routing.complexity.kind import fit_kind
from seawall.routing.complexity.model import DEFAULT_EMBEDDER_ID, RouterModel
from seawall.routing.complexity.ood import fit_reference

__all__ = [
    "Example",
    "ExampleError",
    "TrainSettings",
    "calibrate",
    "evaluate_scores",
    "source_weights",
    "examples_from_records",
    "fit_router",
    "load_examples",
    "parse_example",
    "train_router",
]

F64 = npt.NDArray[np.float64]
# held-out rows below which the scores are left uncalibrated (Platt on fewer is noise)
MIN_CALIBRATION_ROWS = 100
Embed = Callable[[list[str]], npt.NDArray[np.float32]]


class ExampleError(ValueError):
    """A training line that cannot be used; the message names the line."""


@dataclass(frozen=True, slots=True)
class Example:
    """One labelled request: ``cheap_ok`` is 1.0 when the cheap tier was good enough."""

    messages: tuple[Mapping[str, Any], ...]
    cheap_ok: float
    weight: float = 1.0
    source: str = ""

    @property
    def text(self) -> str:
        return routing_text(self.messages)


class TrainSettings(BaseModel):
    """How to train. The defaults won on the MMLU dev split (bench/router_eval.py:
    a 128-unit MLP at 800 steps beat logistic regression by ~0.02 APGR and kNN
    by ~0.03; 32 units were within 0.004).
    ``l2`` is per example, so its effect does not depend on the data size;
    MLP training is counted in optimiser steps for the same reason."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    kind: Literal["logistic", "mlp", "knn"] = "mlp"
    l2: float = Field(1e-2, ge=0.0, description="L2 penalty / weight decay on weights.")
    hidden: int = Field(128, ge=1, le=4096, description="MLP hidden units.")
    steps: int = Field(800, ge=1, le=1_000_000, description="MLP optimiser steps (at most).")
    learning_rate: float = Field(1e-3, gt=0.0, description="MLP Adam step size.")
    batch_size: int = Field(128, ge=1, description="MLP minibatch.")
    k: int = Field(256, ge=1, description="kNN neighbours.")
    temperature: float = Field(0.1, gt=0.0, description="kNN similarity temperature.")
    holdout: float = Field(0.2, ge=0.0, lt=1.0,
                           description="Share held out for dev metrics (and MLP early stop).")
    refit: bool = Field(True, description="Refit on all data after measuring on the holdout.")
    balance_sources: bool = Field(
        False, description="Weigh each source's cheap-ok and not-ok rows equally.")
    ood_centroids: int = Field(512, ge=0, le=4096, description=(
        "Centroids of the training embeddings kept for out-of-distribution checks (0: none)."))
    ood_quantile: float = Field(0.05, ge=0.0, lt=1.0, description=(
        "Share of held-out training prompts that fall below the OOD cut-off."))
    task_kind: bool = Field(True, description=(
        "Store the training prompts' feature ranges, so `router: combined` also falls back "
        "to the rules on other kinds of task (seawall/routing/complexity/kind.py)."))
    seed: int = 0


# ------------------------------------------------------------------ data


def parse_example(obj: Any, where: str, *, margin: float = 0.0, cheap_key: str = "cheap",
                  strong_key: str = "strong", source: str = "") -> Example:
    """One decoded JSONL object -> :class:`Example`; errors start with ``where``."""
    if not isinstance(obj, Mapping):
        raise ExampleError(f"{where}: expected a JSON object, got {type(obj).__name__}")
    has_prompt, has_messages = "prompt" in obj, "messages" in obj
    if has_prompt == has_messages:
        raise ExampleError(f"{where}: give exactly one of 'prompt' or 'messages'")
    if has_prompt:
        prompt = obj["prompt"]
        if not isinstance(prompt, str) or not prompt.strip():
            raise ExampleError(f"{where}: 'prompt' must be a non-empty string")
        messages: tuple[Mapping[str, Any], ...] = ({"role": "user", "content": prompt},)
    else:
        raw = obj["messages"]
        if (not isinstance(raw, list) or not raw
                or not all(isinstance(m, Mapping) and isinstance(m.get("role"), str)
                           for m in raw)):
            raise ExampleError(f"{where}: 'messages' must be a non-empty list of "
                               "{'role': ..., 'content': ...} objects")
        messages = tuple(raw)
        if not routing_text(messages).strip():
            raise ExampleError(f"{where}: the messages have no user text")

    has_label, has_scores = "cheap_ok" in obj, "scores" in obj
    if has_label == has_scores:
        raise ExampleError(f"{where}: give exactly one of 'cheap_ok' or 'scores'")
    if has_label:
        label = obj["cheap_ok"]
        if not isinstance(label, bool):
            raise ExampleError(f"{where}: 'cheap_ok' must be true or false, got {label!r}")
        cheap_ok = float(label)
    else:
        scores = obj["scores"]
        if not isinstance(scores, Mapping):
            raise ExampleError(f"{where}: 'scores' must be an object of tier -> number")
        for key in (cheap_key, strong_key):
            value = scores.get(key)
            if isinstance(value, bool) or not isinstance(value, int | float) \
                    or not math.isfinite(value):
                raise ExampleError(f"{where}: 'scores' needs a number for {key!r} "
                                   f"(has {sorted(scores)})")
        cheap_ok = float(scores[cheap_key] >= scores[strong_key] - margin)

    weight = obj.get("weight", 1.0)
    if isinstance(weight, bool) or not isinstance(weight, int | float) or not weight > 0:
        raise ExampleError(f"{where}: 'weight' must be a positive number")
    return Example(messages=messages, cheap_ok=cheap_ok, weight=float(weight), source=source)


def load_examples(path: str | Path, *, margin: float = 0.0, cheap_key: str = "cheap",
                  strong_key: str = "strong") -> list[Example]:
    """Read a JSONL training file (blank lines skipped); errors name ``path:line``."""
    target = Path(path)
    examples = []
    with target.open(encoding="utf-8") as f:
        for number, line in enumerate(f, 1):
            if not line.strip():
                continue
            where = f"{target}:{number}"
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as e:
                raise ExampleError(f"{where}: invalid JSON ({e.msg})") from None
            examples.append(parse_example(obj, where, margin=margin, cheap_key=cheap_key,
                                          strong_key=strong_key, source=target.name))
    if not examples:
        raise ExampleError(f"{target}: no examples")
    return examples


def source_weights(sources: Sequence[str], labels: npt.ArrayLike) -> F64:
    """Per-row multipliers that give each source's cheap-ok and not-ok rows
    equal total weight (each source keeps the total weight of its size); a
    source with one class only keeps weight 1."""
    src = np.asarray(sources)
    ok = np.asarray(labels, dtype=np.float64) >= 0.5
    out = np.ones(len(src))
    for name in np.unique(src):
        rows = src == name
        pos, neg = int((rows & ok).sum()), int((rows & ~ok).sum())
        if pos and neg:
            out[rows & ok] = (pos + neg) / (2.0 * pos)
            out[rows & ~ok] = (pos + neg) / (2.0 * neg)
    return out


# --------------------------------------------------------------- metrics


def evaluate_scores(scores: npt.ArrayLike, labels: npt.ArrayLike) -> dict[str, float | None]:
    """Ranking and calibration of P(cheap ok) against 0/1 labels: ROC AUC
    (ties averaged; None with one class), log loss, Brier score, base rate."""
    s = np.asarray(scores, dtype=np.float64)
    y = np.asarray(labels, dtype=np.float64) >= 0.5
    p = np.clip(s, 1e-6, 1 - 1e-6)
    out: dict[str, float | None] = {
        "n": float(len(s)),
        "base_rate": float(y.mean()) if len(y) else None,
        "log_loss": float(-np.mean(np.where(y, np.log(p), np.log(1 - p)))) if len(y) else None,
        "brier": float(np.mean((s - y) ** 2)) if len(y) else None,
        "auc": None,
    }
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    if n_pos and n_neg:
        order = np.argsort(s, kind="mergesort")
        ranks = np.empty(len(s), dtype=np.float64)
        sorted_s = s[order]
        # average ranks over ties
        starts = np.flatnonzero(np.r_[True, sorted_s[1:] != sorted_s[:-1]])
        ends = np.r_[starts[1:], len(s)]
        avg = (starts + ends - 1) / 2.0 + 1.0
        ranks[order] = np.repeat(avg, ends - starts)
        out["auc"] = float((ranks[y].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))
    return out


# --------------------------------------------------------------- fitting


def _sigmoid(z: F64) -> F64:
    out: F64 = 1.0 / (1.0 + np.exp(-np.clip(z, -30.0, 30.0)))
    return out


def _fit_logistic(x: F64, y: F64, w: F64, l2: float) -> tuple[F64, float]:
    """L2-regularised logistic regression by Newton's method (exact, ~10 steps)."""
    n, d = x.shape
    xb = np.hstack([x, np.ones((n, 1))])
    theta = np.zeros(d + 1)
    theta[-1] = math.log(max(1e-6, np.average(y, weights=w)) / max(1e-6, 1 - np.average(
        y, weights=w)))
    reg = np.full(d + 1, l2 * w.sum())
    reg[-1] = 0.0  # no penalty on the bias
    for _ in range(50):
        p = _sigmoid(xb @ theta)
        grad = xb.T @ (w * (p - y)) + reg * theta
        hess = (xb * (w * p * (1 - p))[:, None]).T @ xb + np.diag(reg + 1e-9)
        step = np.linalg.solve(hess, grad)
        theta -= step
        if float(np.max(np.abs(step))) < 1e-6:
            break
    return theta[:-1], float(theta[-1])


def _fit_mlp(x: F64, y: F64, w: F64, settings: TrainSettings,
             holdout: tuple[F64, F64] | None) -> dict[str, F64]:
    """One ReLU hidden layer, Adam, decoupled weight decay, ``steps`` updates;
    with a holdout, keeps the parameters with the best holdout log loss
    (checked once per pass over the data)."""
    rng = np.random.default_rng(settings.seed)
    n, d = x.shape
    h = settings.hidden
    prior = float(np.clip(np.average(y, weights=w), 1e-6, 1 - 1e-6))
    params = {
        "w1": rng.normal(0.0, math.sqrt(2.0 / d), (d, h)),
        "b1": np.zeros(h),
        "w2": rng.normal(0.0, math.sqrt(1.0 / h), h),
        "b2": np.array([math.log(prior / (1 - prior))]),
    }
    m = {k: np.zeros_like(a) for k, a in params.items()}
    v = {k: np.zeros_like(a) for k, a in params.items()}
    beta1, beta2, eps, lr = 0.9, 0.999, 1e-8, settings.learning_rate
    batch = min(settings.batch_size, n)
    wn = w / w.mean()
    best: dict[str, F64] = {}
    best_loss = math.inf

    def check(step: int) -> None:
        nonlocal best, best_loss
        loss = -math.inf
        if holdout is not None:
            hx, hy = holdout
            hp = _sigmoid(np.maximum(hx @ params["w1"] + params["b1"], 0) @ params["w2"]
                          + params["b2"][0])
            hp = np.clip(hp, 1e-6, 1 - 1e-6)
            loss = float(-np.mean(hy * np.log(hp) + (1 - hy) * np.log(1 - hp)))
        if loss < best_loss or holdout is None:
            best_loss = loss
            best = {k: a.copy() for k, a in params.items()}
            best["steps"] = np.array([float(step)])

    step = 0
    while step < settings.steps:
        order = rng.permutation(n)
        for start in range(0, n - batch + 1, batch):
            idx = order[start:start + batch]
            xb, yb, wb = x[idx], y[idx], wn[idx]
            pre = xb @ params["w1"] + params["b1"]
            hid = np.maximum(pre, 0.0)
            p = _sigmoid(hid @ params["w2"] + params["b2"][0])
            g_logit = wb * (p - yb) / len(idx)
            g_hid = np.outer(g_logit, params["w2"]) * (pre > 0)
            grads = {
                "w2": hid.T @ g_logit,
                "b2": np.array([g_logit.sum()]),
                "w1": xb.T @ g_hid,
                "b1": g_hid.sum(axis=0),
            }
            step += 1
            for k, g in grads.items():
                m[k] = beta1 * m[k] + (1 - beta1) * g
                v[k] = beta2 * v[k] + (1 - beta2) * g * g
                m_hat = m[k] / (1 - beta1 ** step)
                v_hat = v[k] / (1 - beta2 ** step)
                params[k] -= lr * m_hat / (np.sqrt(v_hat) + eps)
                if k in ("w1", "w2"):
                    params[k] -= lr * settings.l2 * params[k]
            if step >= settings.steps:
                break
        check(step)
    return best


def fit_router(vectors: npt.ArrayLike, features: npt.ArrayLike, labels: npt.ArrayLike,
               settings: TrainSettings | None = None, *, weights: npt.ArrayLike | None = None,
               holdout: tuple[npt.ArrayLike, npt.ArrayLike, npt.ArrayLike] | None = None,
               embedder: str = DEFAULT_EMBEDDER_ID,
               training: Mapping[str, Any] | None = None) -> RouterModel:
    """Fit a router on precomputed embeddings (n, dim) and :func:`text_features`
    rows (n, len(FEATURE_NAMES)); labels are P(cheap ok) in [0, 1].

    ``holdout`` (vectors, features, labels) only steers the MLP's early stop.
    """
    settings = settings or TrainSettings()
    vec = np.asarray(vectors, dtype=np.float64)
    feat = np.asarray(features, dtype=np.float64)
    y = np.asarray(labels, dtype=np.float64)
    if vec.ndim != 2 or feat.shape != (len(vec), len(FEATURE_NAMES)) or y.shape != (len(vec),):
        raise ValueError(f"shapes do not line up: vectors {vec.shape}, features {feat.shape}, "
                         f"labels {y.shape} (expected {len(FEATURE_NAMES)} features)")
    if len(vec) < 2:
        raise ValueError("need at least 2 examples to train a router")
    if np.any((y < 0) | (y > 1)):
        raise ValueError("labels must lie in [0, 1]")
    w = np.ones(len(y)) if weights is None else np.asarray(weights, dtype=np.float64)
    mean = feat.mean(axis=0)
    scale = feat.std(axis=0)
    scale[scale < 1e-6] = 1.0
    x = np.hstack([vec, (feat - mean) / scale])
    dim = vec.shape[1]
    params: dict[str, npt.NDArray[Any]]
    hyper: dict[str, float] = {}
    if settings.kind == "logistic":
        coef, bias = _fit_logistic(x, y, w, settings.l2)
        params = {"w": coef.astype(np.float32), "b": np.array([bias], dtype=np.float32)}
        hyper = {"l2": settings.l2}
    elif settings.kind == "mlp":
        hx = None
        if holdout is not None:
            hv, hf, hy = (np.asarray(a, dtype=np.float64) for a in holdout)
            hx = (np.hstack([hv, (hf - mean) / scale]), hy)
        fitted = _fit_mlp(x, y, w, settings, hx)
        hyper = {"l2": settings.l2, "hidden": float(settings.hidden),
                 "steps": float(fitted.pop("steps")[0])}
        params = {k: a.astype(np.float32) for k, a in fitted.items()}
    else:
        params = {"keys": vec.astype(np.float16), "labels": y.astype(np.float32)}
        hyper = {"k": float(settings.k), "temperature": settings.temperature,
                 "prior": float(np.average(y, weights=w)), "prior_weight": 1.0}
    return RouterModel(kind=settings.kind, dim=dim, params=params,
                       feature_mean=mean.astype(np.float32), feature_scale=scale.astype(np.float32),
                       embedder=embedder, hyper=hyper, training=dict(training or {}))


def calibrate(model: RouterModel, scores: npt.ArrayLike, labels: npt.ArrayLike) -> RouterModel:
    """Platt scaling: ``model`` with its logit mapped by a, b fitted so that
    sigmoid(a * logit + b) matches ``labels`` on held-out ``scores`` (the
    model's scores of rows it was not fitted on). Why: balanced source weights
    centre a model's scores on 0.5, while the rules' score and the cut points
    mean P(cheap is good enough); after this the learned score means it too, at
    the training data's own base rate. Logistic and MLP routers only."""
    if model.kind not in ("logistic", "mlp"):
        return model
    p = np.clip(np.asarray(scores, dtype=np.float64), 1e-6, 1 - 1e-6)
    z = np.log(p / (1 - p))
    y = np.asarray(labels, dtype=np.float64)
    x = np.column_stack([z, np.ones_like(z)])
    coef = np.array([1.0, 0.0])
    for _ in range(50):  # Newton's method on two parameters
        q = _sigmoid(x @ coef)
        grad = x.T @ (q - y)
        hess = (x * (q * (1 - q))[:, None]).T @ x + 1e-6 * np.eye(2)
        step = np.linalg.solve(hess, grad)
        coef -= step
        if np.abs(step).max() < 1e-9:
            break
    if "calib_a" in model.hyper:  # compose with an earlier calibration
        a0, b0 = model.hyper["calib_a"], model.hyper.get("calib_b", 0.0)
        coef = np.array([coef[0] * a0, coef[0] * b0 + coef[1]])
    hyper = {**model.hyper, "calib_a": float(coef[0]), "calib_b": float(coef[1])}
    return RouterModel(kind=model.kind, dim=model.dim, params=model.params,
                       feature_mean=model.feature_mean, feature_scale=model.feature_scale,
                       feature_names=model.feature_names, embedder=model.embedder,
                       hyper=hyper, training=model.training, ood=model.ood,
                       kind_ref=model.kind_ref, created_at=model.created_at)


# -------------------------------------------------------------- pipeline


def _default_embed() -> Embed:
    from seawall.ml.embedder import Embedder

    embedder = Embedder()
    return lambda texts: embedder.embed(texts)


def _in_holdout(text: str, share: float) -> bool:
    """Deterministic split by content, so re-running on the same file agrees."""
    digest = hashlib.sha1(text.encode("utf-8")).digest()
    return int.from_bytes(digest[:4], "big") / 2**32 < share


def train_router(examples: Sequence[Example], settings: TrainSettings | None = None, *,
                 embed: Embed | None = None, embedder: str = DEFAULT_EMBEDDER_ID,
                 data_name: str = "", batch_size: int = 32) -> RouterModel:
    """Embed and featurise ``examples``, measure on a content-hashed holdout,
    then (``refit``) train the final router on everything. The dev metrics land
    in ``model.training['dev']``."""
    settings = settings or TrainSettings()
    if len(examples) < 2:
        raise ValueError("need at least 2 examples to train a router")
    embed = embed or _default_embed()
    started = time.perf_counter()
    texts = [e.text for e in examples]
    vectors = np.concatenate([np.asarray(embed(texts[i:i + batch_size]), dtype=np.float32)
                              for i in range(0, len(texts), batch_size)])
    features = np.stack([text_features(e.messages) for e in examples])
    labels = np.array([e.cheap_ok for e in examples])
    weights = np.array([e.weight for e in examples])
    sources = [e.source for e in examples]
    if settings.balance_sources:
        weights = weights * source_weights(sources, labels)
    embed_seconds = time.perf_counter() - started

    dev = np.array([_in_holdout(t, settings.holdout) for t in texts])
    fit = ~dev
    dev_metrics: dict[str, float | None] = {}
    if dev.any() and fit.sum() >= 2 and len(set(labels[fit] >= 0.5)) == 2:
        held = (vectors[dev], features[dev], labels[dev])
        model = fit_router(vectors[fit], features[fit], labels[fit], settings,
                           weights=weights[fit], holdout=held, embedder=embedder)
        dev_metrics = evaluate_scores(model.score_batch(vectors[dev], features[dev]),
                                      labels[dev])
        steps = model.hyper.get("steps")
        if settings.kind == "mlp" and steps is not None:  # refit as long as was best
            settings = settings.model_copy(update={"steps": int(steps)})
    ood = None
    if settings.ood_centroids:
        # centroids from the fitted rows, cut-off from the held-out ones (all
        # rows when nothing is held out: a little too familiar, so lenient)
        calibration = vectors[dev] if dev.sum() >= 20 else vectors
        ood = fit_reference(vectors[fit] if fit.any() else vectors, calibration,
                            centroids=settings.ood_centroids, quantile=settings.ood_quantile,
                            seed=settings.seed)
    kind_ref = None
    if settings.task_kind:
        kind_ref = fit_kind(features[fit] if fit.any() else features,
                            features[dev] if dev.sum() >= 20 else features)
    summary = {
        "data": data_name,
        "sources": {name: sources.count(name) for name in sorted(set(sources))},
        "n": len(examples),
        "n_dev": int(dev.sum()),
        "cheap_ok_rate": float(labels.mean()),
        "settings": settings.model_dump(),
        "dev": dev_metrics,
        "refit_on_all": bool(settings.refit or not dev_metrics),
        "embed_seconds": round(embed_seconds, 2),
    }
    dev_scores = model.score_batch(vectors[dev], features[dev]) if dev_metrics else None
    rows = slice(None) if summary["refit_on_all"] else fit
    model = fit_router(vectors[rows], features[rows], labels[rows], settings,
                       weights=weights[rows], embedder=embedder, training=summary)
    if dev_scores is not None and len(dev_scores) >= MIN_CALIBRATION_ROWS:
        model = calibrate(model, dev_scores, labels[dev])
        summary["calibrated_on"] = len(dev_scores)
    summary["train_seconds"] = round(time.perf_counter() - started - embed_seconds, 2)
    if ood is not None:
        summary["ood"] = ood.summary()
    if kind_ref is not None:
        summary["task_kind"] = kind_ref.summary()
    return RouterModel(kind=model.kind, dim=model.dim, params=model.params,
                       feature_mean=model.feature_mean, feature_scale=model.feature_scale,
                       embedder=embedder, hyper=model.hyper, training=summary, ood=ood,
                       kind_ref=kind_ref)


def examples_from_records(records: Iterable[Mapping[str, Any]], *, margin: float = 0.0,
                          source: str = "<records>") -> list[Example]:
    """Like :func:`load_examples` for objects already in memory."""
    return [parse_example(r, f"{source}[{i}]", margin=margin, source=source)
            for i, r in enumerate(records)]
