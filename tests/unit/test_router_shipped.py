"""The router that ships with Seawall (seawall/routing/complexity/default_router)
and the parts that make it generalise: the task-kind check beside the topic
check, and the calibration of its score."""

from __future__ import annotations

import json
import subprocess
import sys
import tomllib
import zlib
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from seawall.config import ConfigError, parse_settings
from seawall.ml.embedder import Embedder
from seawall.routing.complexity import (
    FEATURE_NAMES,
    RouterModel,
    RouterModelError,
    RulesRouter,
    routing_text,
    text_features,
)
from seawall.routing.complexity.combined import CombinedRouter
from seawall.routing.complexity.kind import KindReference, fit_kind
from seawall.routing.complexity.shipped import SHIPPED_ROUTER, load_shipped
from seawall.routing.complexity.train import calibrate, fit_router

REPO = Path(__file__).resolve().parents[2]


def user(text: str) -> list[dict[str, Any]]:
    return [{"role": "user", "content": text}]


GREETING = "Hi there, thanks for the help!"
PROOF = ("Prove that there are infinitely many primes. Derive it step by step and explain "
         "why each step holds: $\\sum_{p} 1/p = \\infty$.")
MC_EASY = ("Which city is the capital of Australia?\nA. Sydney\nB. Canberra\nC. Melbourne\n"
           "D. Perth\nAnswer:")
MC_HARD = ("Let G be a finite group acting transitively on a set X with |X| = 12 and let H be "
           "the stabiliser of a point. Which of the following must be true?\nA. |G| = 12|H|\n"
           "B. H is normal in G\nC. G is abelian\nD. |H| divides 12\nAnswer:")
WORD_PROBLEM = ("A baker sells muffins for $3 each and cookies for $1.50 each. On Monday she "
                "sold 24 muffins and twice as many cookies. How much money did she make?")


# ------------------------------------------------------------ the artifact

def test_the_shipped_router_is_packaged_small_and_documented() -> None:
    assert SHIPPED_ROUTER.is_file()
    assert SHIPPED_ROUTER.stat().st_size < 1024 * 1024  # float16 weights and centroids
    notice = (SHIPPED_ROUTER.parent / "NOTICE.md").read_text(encoding="utf-8")
    for words in ("Apache License 2.0", "MIT License", "MMLU", "RouteLLM",
                  "not to train a model that competes"):
        assert words in notice
    # package-data covers both files, so a wheel or clean install carries them
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))
    patterns = pyproject["tool"]["setuptools"]["package-data"]["seawall.routing.complexity"]
    pkg = SHIPPED_ROUTER.parent.parent
    assert {p.name for pattern in patterns for p in pkg.glob(pattern)} >= {"router.json",
                                                                         "NOTICE.md"}
    model = load_shipped()
    assert model.kind == "mlp" and model.ood is not None and model.kind_ref is not None
    assert model.params["w1"].dtype == np.float16
    assert "calib_a" in model.hyper
    training = model.training
    assert "MMLU dev" in training["data"] and "no AlpacaEval" in training["licence"]
    assert model.version == json.loads(SHIPPED_ROUTER.read_text())["version"]


def test_the_shipped_router_loads_and_decides_with_the_network_cut() -> None:
    """A fresh interpreter whose sockets cannot connect anywhere loads the
    shipped router and the packaged embedder and routes: nothing is fetched."""
    script = f"""
import json, socket
def refuse(*a, **k):
    raise OSError("network disabled in this test")
socket.socket.connect = refuse
socket.create_connection = refuse
from seawall.ml.embedder import Embedder
from seawall.routing.complexity import RulesRouter, routing_text, text_features
from seawall.routing.complexity.combined import CombinedRouter
from seawall.routing.complexity.shipped import load_shipped
router = CombinedRouter(load_shipped(), RulesRouter())
embedder = Embedder()
out = {{}}
for name, text in {{"greeting": {GREETING!r}, "mc": {MC_EASY!r}}}.items():
    msgs = [{{"role": "user", "content": text}}]
    d = router.decide(embedder.embed([routing_text(msgs)])[0], text_features(msgs))
    out[name] = [d.source, d.score]
print(json.dumps(out))
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=120, env={"PATH": "/usr/bin:/bin", "HF_HUB_OFFLINE": "1"})
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout.strip().splitlines()[-1])
    assert out["greeting"][0] == "rules" and out["greeting"][1] >= 0.9
    assert out["mc"][0] == "learned"


@pytest.fixture(scope="module")
def shipped() -> tuple[CombinedRouter, Embedder]:
    return CombinedRouter(load_shipped(), RulesRouter()), Embedder()


def _decide(shipped: tuple[CombinedRouter, Embedder], text: str) -> Any:
    router, embedder = shipped
    messages = user(text)
    return router.decide(embedder.embed([routing_text(messages)])[0], text_features(messages))


def test_shipped_default_decisions_on_hand_written_prompts(
        shipped: tuple[CombinedRouter, Embedder]) -> None:
    greeting, proof = _decide(shipped, GREETING), _decide(shipped, PROOF)
    assert greeting.source == proof.source == "rules"  # not exam questions
    assert greeting.score >= 0.5 > proof.score  # the default cut point: cheap / strong
    assert "math" in proof.reason and "reasoning ask" in proof.reason

    # exam questions are the learned model's kind: it scores them, and a
    # first-year fact looks easier for the cheap model than a group-theory proof
    easy, hard = _decide(shipped, MC_EASY), _decide(shipped, MC_HARD)
    assert easy.source == hard.source == "learned"
    assert easy.reason.startswith("learned P(cheap ok)")
    assert easy.score > hard.score

    # a word problem on the same topics as the exam maths is another kind of
    # task: the topic check alone would let the learned model score it
    word = _decide(shipped, WORD_PROBLEM)
    assert word.source == "rules" and not word.kind_ok
    assert "other kind of task" in word.reason and "multiple_choice" in word.reason
    router, embedder = shipped
    # the kind check needs no embedding: the route stage asks it first
    for text in (GREETING, PROOF, WORD_PROBLEM):
        early = router.decide_by_kind(text_features(user(text)))
        assert early is not None and early.source == "rules"
        assert early.score == _decide(shipped, text).score
        assert early.reason.startswith("rules (unfamiliar, other kind of task")
    assert router.decide_by_kind(text_features(user(MC_EASY))) is None
    topic_only = CombinedRouter(router.model, RulesRouter(), check_kind=False)
    assert topic_only.decide_by_kind(text_features(user(GREETING))) is None
    vector = embedder.embed([WORD_PROBLEM])[0]
    assert topic_only.decide(vector, text_features(user(WORD_PROBLEM))).source == "learned"


def test_cli_inspect_without_a_path_shows_the_shipped_router() -> None:
    from click.testing import CliRunner

    from seawall.routing.complexity.cli import router as router_cli

    result = CliRunner().invoke(router_cli, ["inspect"])
    assert result.exit_code == 0, result.output
    shown = json.loads(result.output)
    assert shown["version"] == load_shipped().version
    assert shown["task_kind"]["allowance"] == 0 and shown["ood"]["centroids"] == 512


# ------------------------------------------------------ task-kind reference

def _features(n: int, rng: np.random.Generator, multiple_choice: float) -> np.ndarray:
    f = np.zeros((n, len(FEATURE_NAMES)), dtype=np.float32)
    f[:, 0] = rng.normal(4.0, 0.5, n)  # log_tokens
    f[:, FEATURE_NAMES.index("multiple_choice")] = multiple_choice
    return f


def test_kind_reference_separates_kinds_and_calibrates_its_allowance() -> None:
    rng = np.random.default_rng(0)
    train, held = _features(2000, rng, 1.0), _features(500, rng, 1.0)
    ref = fit_kind(train, held, tail=0.001, quantile=0.01)
    assert ref.allowance == 0  # held-out rows of the same kind fit the ranges
    assert ref.familiar(held).mean() >= 0.99
    other = _features(100, rng, 0.0)  # same lengths, no options
    assert not ref.familiar(other).any()
    assert ref.explain(other[0], FEATURE_NAMES) == ["multiple_choice"]
    # a stricter allowance quantile on rows that often stray needs a larger allowance
    noisy = held.copy()
    noisy[:100, 0] = 99.0
    assert fit_kind(train, noisy, quantile=0.01).allowance == 1
    with pytest.raises(ValueError, match="same features"):
        fit_kind(train, held[:, :3])
    with pytest.raises(ValueError, match="low <= high"):
        KindReference(np.ones(2, np.float32), np.zeros(2, np.float32), 0, 0.0, 0.0)


def _model(rng: np.random.Generator) -> tuple[RouterModel, np.ndarray, np.ndarray, np.ndarray]:
    n = 600
    vectors = rng.normal(size=(n, 8)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    feats = _features(n, rng, 1.0)
    labels = (vectors[:, 0] + 0.3 * rng.normal(size=n) > -0.8).astype(float)  # ~80% ok
    return fit_router(vectors, feats, labels, weights=None), vectors, feats, labels


def test_kind_reference_round_trips_and_is_part_of_the_version(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    model, _, feats, _ = _model(rng)
    with_kind = replace(model, kind_ref=fit_kind(feats[:400], feats[400:]))
    assert with_kind.version != model.version
    path = tmp_path / "r.json"
    with_kind.save(path)
    loaded = RouterModel.load(path)
    assert loaded.version == with_kind.version and loaded.kind_ref is not None
    np.testing.assert_array_equal(loaded.kind_ref.low, with_kind.kind_ref.low)  # type: ignore[union-attr]
    assert loaded.describe()["task_kind"]["allowance"] == 0
    doc = json.loads(path.read_text())
    doc["task_kind"]["low"] = doc["task_kind"]["low"][:3]
    doc.pop("version")
    path.write_text(json.dumps(doc))
    with pytest.raises(RouterModelError, match="task-kind"):
        RouterModel.load(path)


# ------------------------------------------------------------- calibration

def test_calibration_makes_the_score_mean_the_base_rate_and_keeps_the_order(
        tmp_path: Path) -> None:
    rng = np.random.default_rng(2)
    model, vectors, feats, labels = _model(rng)
    # balanced weights centre the raw score on 0.5 although ~80% are cheap-ok
    balanced = fit_router(vectors[:400], feats[:400], labels[:400],
                          weights=np.where(labels[:400] > 0.5, 0.5 / labels[:400].mean(),
                                           0.5 / (1 - labels[:400].mean())))
    raw = balanced.score_batch(vectors[400:], feats[400:])
    fixed = calibrate(balanced, raw, labels[400:])
    after = fixed.score_batch(vectors[400:], feats[400:])
    assert abs(after.mean() - labels[400:].mean()) < 0.03 < abs(raw.mean() - labels[400:].mean())
    # a monotone map: the order of the rows is kept (where float32 has not saturated)
    clear = raw < 0.999
    assert clear.sum() > 50
    assert np.all(np.diff(after[clear][np.argsort(raw[clear], kind="stable")]) >= -1e-6)
    path = tmp_path / "c.json"
    fixed.save(path)
    np.testing.assert_allclose(RouterModel.load(path).score_batch(vectors[400:], feats[400:]),
                               after, atol=1e-6)


# ------------------------------------------------------------------ config

def _config(**route: Any) -> dict[str, Any]:
    return {"providers": {"f": {"type": "openai", "base_url": "http://127.0.0.1:9/v1"}},
            "models": {"cheap": {"provider": "f", "model": "a"},
                       "strong": {"provider": "f", "model": "b"}},
            "routes": {"auto": {"tiers": ["cheap", "strong"], **route}}}


def test_route_config_defaults_to_the_shipped_combined_router() -> None:
    route = parse_settings(_config(), env={}).routes["auto"]
    assert route.router == "combined" and route.model_path is None
    assert parse_settings(_config(router="rules"), env={}).routes["auto"].router == "rules"
    with pytest.raises(ConfigError, match="router learned needs model_path"):
        parse_settings(_config(router="learned"), env={})


def test_train_router_calibrates_when_enough_rows_are_held_out() -> None:
    from seawall.routing.complexity.train import Example, TrainSettings, train_router

    rng = np.random.default_rng(3)
    texts = [f"question {i} about topic {i % 7}" for i in range(700)]
    direction = rng.normal(size=8)

    def embed(batch: list[str]) -> np.ndarray:
        x = np.stack([np.random.default_rng(zlib.crc32(t.encode())).normal(size=8)
                      for t in batch]).astype(np.float32)
        return x / np.linalg.norm(x, axis=1, keepdims=True)

    vectors = embed(texts)
    ok = (vectors @ direction + 0.5 * rng.normal(size=len(texts))) > -0.6  # ~70% ok
    examples = [Example(messages=tuple(user(t)), cheap_ok=float(o)) for t, o in zip(
        texts, ok, strict=True)]
    model = train_router(examples, TrainSettings(kind="logistic", balance_sources=True),
                         embed=embed, embedder="test")
    assert model.training["calibrated_on"] >= 100 and "calib_a" in model.hyper
    assert model.kind_ref is not None  # stored by default
    feats = np.stack([text_features(user(t)) for t in texts])
    mean = float(model.score_batch(vectors, feats).mean())
    assert abs(mean - ok.mean()) < 0.08  # the base rate, not the balanced 0.5
    few = train_router(examples[:200], TrainSettings(kind="logistic"), embed=embed,
                       embedder="test")
    assert "calib_a" not in few.hyper  # ~40 held out: too few to calibrate on
