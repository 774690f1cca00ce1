"""Complexity router: features, rules, the learned artifact, tier decisions,
the traffic-share calibrator and the CLI (seawall/routing/complexity)."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from click.testing import CliRunner
from pydantic import ValidationError

from seawall.routing.complexity import (
    FEATURE_NAMES,
    CostTarget,
    RouterModel,
    RouterModelError,
    RulesRouter,
    RulesSettings,
    TierPolicy,
    routing_text,
    text_features,
)
from seawall.routing.complexity.cli import router as router_cli
from seawall.routing.complexity.decide import traffic_share_for_budget
from seawall.routing.complexity.model import FORMAT_VERSION
from seawall.routing.complexity.train import (
    ExampleError,
    TrainSettings,
    evaluate_scores,
    fit_router,
    load_examples,
    train_router,
)

FIXTURE = Path(__file__).resolve().parent.parent / "fixtures" / "router" / "tiny.jsonl"
F = {name: i for i, name in enumerate(FEATURE_NAMES)}
TWO_TIERS = TierPolicy(["cheap", "strong"], [0.5])


def user(text: str) -> list[dict[str, Any]]:
    return [{"role": "user", "content": text}]


GREETING = user("Hello! How are you?")
PROOF = user(
    "Prove that for every integer n >= 1, $\\sum_{k=1}^{n} k^3 = (n(n+1)/2)^2$. "
    "Derive it step by step, then show that the identity also follows from "
    "telescoping (k+1)^4 - k^4 = 4k^3 + 6k^2 + 4k + 1. " * 40
)
CODE = user("Here is my helper:\n```python\ndef add(a, b):\n    return a + b\nadd(1)\n```")


# ---------------------------------------------------------------- features


def test_features_follow_feature_names_and_detect_shapes() -> None:
    greeting = text_features(GREETING)
    assert greeting.shape == (len(FEATURE_NAMES),) and greeting.dtype == np.float32
    assert np.all(np.isfinite(greeting))
    assert greeting[F["kw_simple"]] >= 1 and greeting[F["code_fence"]] == 0

    proof = text_features(PROOF)
    assert proof[F["kw_reasoning"]] >= 2
    assert proof[F["log_latex"]] > 0 and proof[F["equation"]] == 1
    assert proof[F["log_tokens"]] > greeting[F["log_tokens"]] + 3

    code = text_features(CODE)
    assert code[F["code_fence"]] == 1 and code[F["code_lines"]] > 0.3

    mc = text_features(user("Which is a mammal?\nA. Shark\nB. Whale\nC. Trout\nD. Eel\nAnswer:"))
    assert mc[F["multiple_choice"]] == 1
    assert text_features(GREETING)[F["multiple_choice"]] == 0

    chat = [{"role": "system", "content": "Be brief."},
            {"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"},
            {"role": "user", "content": [{"type": "text", "text": "translate 'cat' to French"}]}]
    f = text_features(chat)
    assert f[F["has_system"]] == 1
    assert round(float(np.expm1(f[F["log_user_turns"]]))) == 2
    assert routing_text(chat) == "translate 'cat' to French"


def test_keywords_match_words_not_substrings() -> None:
    # "this" contains "hi", "improve" contains "prove": neither is a keyword hit
    f = text_features(user("Can this improve things?"))
    assert f[F["kw_simple"]] == 0 and f[F["kw_reasoning"]] == 0
    f = text_features(user("Explain why the sky is blue, step-by-step."))
    assert f[F["kw_reasoning"]] == 2


def test_features_are_fast_even_on_long_prompts() -> None:
    long_prompt = user("Let x^2 + 3x = 10. Solve it and explain why. " * 2000)
    for messages in (GREETING, CODE, long_prompt):
        text_features(messages)
        started = time.perf_counter()
        for _ in range(200):
            text_features(messages)
        per_call = (time.perf_counter() - started) / 200
        # ~10-40 us on a quiet core; the bound only catches a regex blow-up
        assert per_call < 1e-3, per_call


# ------------------------------------------------------------------- rules


def test_rules_send_a_greeting_cheap_and_a_long_math_proof_strong() -> None:
    rules = RulesRouter()
    greeting = rules.decide(GREETING)
    assert greeting.score >= 0.9
    assert TWO_TIERS.choose(greeting.score).tier == "cheap"

    proof = rules.decide(PROOF)
    assert proof.score < 0.5
    assert TWO_TIERS.choose(proof.score).tier == "strong"
    assert "math" in proof.reason and "reasoning ask" in proof.reason
    assert "tokens" in proof.reason


def test_rules_code_goes_where_the_settings_say() -> None:
    default = RulesRouter().decide(CODE)
    assert default.reason.startswith("code block")
    assert TWO_TIERS.choose(default.score).tier == "cheap"  # 0.9 - 0.3 (code) = 0.6

    strict = RulesRouter(RulesSettings(code_penalty=0.6)).decide(CODE)
    assert TWO_TIERS.choose(strict.score).tier == "strong"
    lenient = RulesRouter(RulesSettings(code_penalty=0.0)).decide(CODE)
    assert "code" not in lenient.reason and lenient.score > default.score


def test_rules_reason_lists_the_biggest_factors_with_exact_tokens() -> None:
    decision = RulesRouter().decide(CODE, prompt_tokens=1800)
    assert decision.reason == "code block + 1,800 tokens"
    assert decision.score == pytest.approx(0.9 - 0.3 - 0.25)
    assert dict(decision.factors) == {"code block": -0.3, "1,800 tokens": -0.25}


def test_rules_deep_conversations_cost_more() -> None:
    turns: list[dict[str, Any]] = []
    for i in range(5):
        turns += [{"role": "user", "content": f"And the next part, number {i}?"},
                  {"role": "assistant", "content": "Sure."}]
    turns.append({"role": "user", "content": "Now combine them all."})
    deep = RulesRouter().decide(turns)
    assert "6 turns" in deep.reason
    assert deep.score < RulesRouter().decide(turns[-1:]).score


def test_rules_settings_are_frozen_strict_and_checked() -> None:
    settings = RulesSettings()
    with pytest.raises(ValidationError):
        settings.base = 0.5  # type: ignore[misc]
    with pytest.raises(ValidationError, match="extra"):
        RulesSettings.model_validate({"code_weight": 0.2})
    with pytest.raises(ValidationError, match="medium_tokens"):
        RulesSettings(medium_tokens=2000, long_tokens=1000)
    with pytest.raises(ValidationError):
        RulesSettings(code_penalty=1.5)


# ------------------------------------------------------------ learned model


@pytest.fixture(scope="module")
def tiny_router() -> RouterModel:
    return train_router(load_examples(FIXTURE), TrainSettings(kind="logistic"),
                        data_name="tiny.jsonl")


def test_learned_router_separates_obviously_easy_from_obviously_hard(
        tiny_router: RouterModel) -> None:
    from seawall.ml.embedder import Embedder

    easy = ["Good morning! Nice to meet you.", "Translate 'apple' into Italian.",
            "What is the capital of Spain?", "Say thanks to my colleague in one line."]
    hard = ["Prove that the harmonic series diverges and derive a lower bound for its "
            "partial sums step by step.",
            "Implement a red-black tree in C++ with insertion and deletion, and prove the "
            "height bound.\n```cpp\nstruct Node { int key; Node* left; };\n```",
            "Solve x^4 - 5x^2 + 4 = 0 and show that no other real roots exist.",
            "Derive the gradient of the softmax cross-entropy loss and analyze its "
            "numerical stability."]
    embedder = Embedder()
    vectors = embedder.embed(easy + hard)
    feats = np.stack([text_features(user(t)) for t in easy + hard])
    scores = tiny_router.score_batch(vectors, feats)
    assert min(scores[:4]) > max(scores[4:]), scores
    assert all(TWO_TIERS.choose(float(s)).tier == "cheap" for s in scores[:4])
    assert all(TWO_TIERS.choose(float(s)).tier == "strong" for s in scores[4:])
    single = tiny_router.score(vectors[0], feats[0])
    assert single == pytest.approx(float(scores[0]), abs=1e-6)

    summary = tiny_router.training
    assert summary["n"] == 38 and summary["data"] == "tiny.jsonl"
    assert 0.4 < summary["cheap_ok_rate"] < 0.6


def _synthetic(kind: str = "logistic", n: int = 200, dim: int = 16, seed: int = 0,
               **options: Any) -> tuple[RouterModel, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    vectors = rng.normal(size=(n, dim)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    feats = rng.normal(size=(n, len(FEATURE_NAMES))).astype(np.float32)
    labels = (vectors[:, 0] + 0.5 * feats[:, 0] > 0).astype(float)
    model = fit_router(vectors, feats, labels, TrainSettings(kind=kind, **options),
                       training={"data": "synthetic", "n": n})
    return model, vectors, feats


@pytest.mark.parametrize("kind", ["logistic", "mlp", "knn"])
def test_each_kind_learns_and_round_trips_through_a_file(kind: str, tmp_path: Path) -> None:
    model, vectors, feats = _synthetic(kind, steps=600)
    labels = (vectors[:, 0] + 0.5 * feats[:, 0] > 0).astype(float)
    auc = evaluate_scores(model.score_batch(vectors, feats), labels)["auc"]
    assert auc is not None and auc > 0.85

    path = tmp_path / f"{kind}.json"
    version = model.save(path)
    assert version == model.version and len(version) == 64
    doc = json.loads(path.read_text())
    assert doc["format_version"] == FORMAT_VERSION and doc["kind"] == kind
    assert doc["embedder"] == model.embedder and doc["dim"] == 16
    assert doc["features"]["names"] == FEATURE_NAMES
    assert doc["training"]["n"] == 200

    loaded = RouterModel.load(path)
    assert loaded.version == version
    np.testing.assert_allclose(loaded.score_batch(vectors, feats),
                               model.score_batch(vectors, feats), rtol=0, atol=1e-6)


def test_version_is_a_content_hash() -> None:
    a, _, _ = _synthetic(seed=0)
    again, _, _ = _synthetic(seed=0)
    b, _, _ = _synthetic(seed=1)
    assert a.version != b.version
    # same content (created_at aside) -> same hash once created_at matches
    same = RouterModel.from_dict({**again.to_dict(), "created_at": a.created_at,
                                  "version": None})
    assert same.version == a.version


def test_load_errors_are_clear(tmp_path: Path) -> None:
    model, _, _ = _synthetic()
    doc = model.to_dict()
    path = tmp_path / "r.json"

    def load(document: Any, **kw: Any) -> RouterModel:
        path.write_text(json.dumps(document))
        return RouterModel.load(path, **kw)

    with pytest.raises(RouterModelError, match="no such router file"):
        RouterModel.load(tmp_path / "missing.json")
    path.write_text("not json{")
    with pytest.raises(RouterModelError, match="invalid JSON"):
        RouterModel.load(path)
    with pytest.raises(RouterModelError, match="format_version 99"):
        load({**doc, "format_version": 99})
    with pytest.raises(RouterModelError, match="unknown router kind 'forest'"):
        load({**doc, "kind": "forest"})
    with pytest.raises(RouterModelError, match="gateway embeds with 'other-model'"):
        load(doc, expect_embedder="other-model")
    with pytest.raises(RouterModelError, match="expects 16-d embeddings, the embedder gives 384"):
        load(doc, expect_dim=384)
    with pytest.raises(RouterModelError, match="does not match its version"):
        load({**doc, "training": {"n": 1}})
    with pytest.raises(RouterModelError, match="other text features"):
        load({**doc, "features": {**doc["features"], "names": ["a"]}, "version": None})
    bad_shape = dict(doc, dim=32, version=None)
    with pytest.raises(RouterModelError, match="parameter 'w' has shape"):
        load(bad_shape)
    loaded = load(doc, expect_embedder=model.embedder, expect_dim=16)
    with pytest.raises(RouterModelError, match="dimension 8"):
        loaded.score(np.zeros(8), np.zeros(len(FEATURE_NAMES)))


# -------------------------------------------------------------- examples


def test_load_examples_reads_labels_and_scores_with_margin(tmp_path: Path) -> None:
    examples = load_examples(FIXTURE)
    assert len(examples) == 38
    assert {e.cheap_ok for e in examples} == {0.0, 1.0}
    data = tmp_path / "d.jsonl"
    data.write_text(json.dumps({"prompt": "x", "scores": {"cheap": 0.8, "strong": 0.9}}) + "\n")
    assert load_examples(data)[0].cheap_ok == 0.0
    assert load_examples(data, margin=0.15)[0].cheap_ok == 1.0


@pytest.mark.parametrize(("line", "message"), [
    ("{not json", "invalid JSON"),
    ('{"cheap_ok": true}', "exactly one of 'prompt' or 'messages'"),
    ('{"prompt": "a", "messages": [], "cheap_ok": true}', "exactly one of 'prompt'"),
    ('{"prompt": "a"}', "exactly one of 'cheap_ok' or 'scores'"),
    ('{"prompt": "a", "cheap_ok": "yes"}', "'cheap_ok' must be true or false"),
    ('{"prompt": "a", "scores": {"cheap": 0.1}}', "needs a number for 'strong'"),
    ('{"prompt": "a", "cheap_ok": true, "weight": 0}', "'weight' must be a positive"),
    ('{"messages": [{"content": "hi"}], "cheap_ok": true}', "'messages' must be"),
    ('[1, 2]', "expected a JSON object"),
])
def test_bad_training_lines_name_the_line(tmp_path: Path, line: str, message: str) -> None:
    data = tmp_path / "bad.jsonl"
    data.write_text('{"prompt": "fine", "cheap_ok": true}\n\n' + line + "\n")
    with pytest.raises(ExampleError) as info:
        load_examples(data)
    assert f"{data}:3:" in str(info.value) and message in str(info.value)


# --------------------------------------------------------------- decisions


def test_n_tier_policy_picks_by_descending_thresholds() -> None:
    policy = TierPolicy(["small", "medium", "large"], [0.8, 0.5])
    assert [policy.choose(s).tier for s in (0.95, 0.8, 0.79, 0.5, 0.49, 0.0)] == [
        "small", "small", "medium", "medium", "large", "large"]
    choice = policy.choose(0.6)
    assert (choice.index, choice.threshold) == (1, 0.5)
    assert policy.choose(0.1).threshold is None
    assert policy.choose(0.6, thresholds=(0.9, 0.7)).tier == "large"
    with pytest.raises(ValueError, match="3 tiers need 2 thresholds"):
        TierPolicy(["a", "b", "c"], [0.5])
    with pytest.raises(ValueError, match="strictly decrease"):
        TierPolicy(["a", "b", "c"], [0.5, 0.8])
    with pytest.raises(ValueError, match="at least 2 tiers"):
        TierPolicy(["a"], [])


def test_cost_target_falls_back_then_converges_to_the_target_share() -> None:
    target = CostTarget.strong_share(0.3, fallback=0.5, window=2000, min_samples=200)
    rng = np.random.default_rng(7)
    stream = rng.beta(5, 2, size=6000)  # mostly "cheap is fine" scores
    for s in stream[:199]:
        target.observe(float(s))
    assert target.threshold() == 0.5  # static fallback below min_samples
    for s in stream[199:]:
        target.observe(float(s))
    assert len(target) == 2000
    fresh = rng.beta(5, 2, size=20000)
    policy = TierPolicy(["cheap", "strong"], [0.5])
    strong = np.mean([policy.choose(float(s), target.thresholds()).tier == "strong"
                      for s in fresh[:4000]])
    assert abs(strong - 0.3) < 0.03
    assert abs(np.mean(fresh < target.threshold()) - 0.3) < 0.03

    # the traffic shifts to harder requests: the window follows it
    for s in rng.beta(2, 5, size=2000):
        target.observe(float(s))
    assert abs(np.mean(rng.beta(2, 5, size=20000) < target.threshold()) - 0.3) < 0.03


def test_cost_target_with_three_tiers_and_edges() -> None:
    target = CostTarget((0.5, 0.3, 0.2), window=1000, min_samples=10, fallback=(0.8, 0.4))
    assert target.thresholds() == (0.8, 0.4)
    rng = np.random.default_rng(1)
    for s in rng.random(1000):
        target.observe(float(s))
    t1, t2 = target.thresholds()
    assert t1 > t2
    policy = TierPolicy(["s", "m", "l"], [0.8, 0.4])
    picks = [policy.choose(float(s), (t1, t2)).index for s in rng.random(20000)]
    shares = np.bincount(picks, minlength=3) / len(picks)
    np.testing.assert_allclose(shares, [0.5, 0.3, 0.2], atol=0.03)

    everything_strong = CostTarget.strong_share(1.0, min_samples=1)
    for s in (0.2, 0.9, 0.9):
        everything_strong.observe(s)
    assert TWO_TIERS.choose(0.9, everything_strong.thresholds()).tier == "strong"
    with pytest.raises(ValueError, match="sum to 1"):
        CostTarget((0.5, 0.6), fallback=(0.5,))


def test_cost_target_is_thread_safe() -> None:
    target = CostTarget.strong_share(0.5, window=500, min_samples=1)

    def feed(seed: int) -> None:
        rng = np.random.default_rng(seed)
        for s in rng.random(2000):
            target.observe(float(s))
            target.thresholds()

    threads = [threading.Thread(target=feed, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(target) == 500
    assert target._sorted == sorted(target._arrivals)


def test_budget_share_maps_to_traffic_share() -> None:
    # spend 30% of all-strong when a cheap call costs 2% of a strong one
    x = traffic_share_for_budget(0.3, 0.02)
    assert x == pytest.approx((0.3 - 0.02) / 0.98)
    assert x + (1 - x) * 0.02 == pytest.approx(0.3)
    assert traffic_share_for_budget(0.01, 0.02) == 0.0


# --------------------------------------------------------------------- cli


@pytest.fixture()
def runner() -> Iterator[CliRunner]:
    yield CliRunner()


def test_cli_train_and_inspect(runner: CliRunner, tmp_path: Path) -> None:
    out = tmp_path / "router.json"
    result = runner.invoke(router_cli, ["train", str(FIXTURE), "--out", str(out),
                                        "--kind", "logistic"])
    assert result.exit_code == 0, result.output
    assert "trained logistic router on 38 examples" in result.output
    assert "dev (held out" in result.output and "auc" in result.output
    model = RouterModel.load(out)
    assert model.kind == "logistic" and model.training["data"] == "tiny.jsonl"
    assert f"version {model.version[:12]}" in result.output

    shown = runner.invoke(router_cli, ["inspect", str(out)])
    assert shown.exit_code == 0, shown.output
    info = json.loads(shown.output)
    assert info["version"] == model.version and info["embedder"] == model.embedder
    assert info["params"]["w"] == [model.dim + len(FEATURE_NAMES)]


def test_cli_reports_bad_data_and_bad_files(runner: CliRunner, tmp_path: Path) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "hi", "cheap_ok": 1}\n')
    result = runner.invoke(router_cli, ["train", str(bad), "--out", str(tmp_path / "r.json")])
    assert result.exit_code != 0
    assert f"{bad}:1:" in result.output and "'cheap_ok' must be true or false" in result.output
    junk = tmp_path / "junk.json"
    junk.write_text("{}")
    shown = runner.invoke(router_cli, ["inspect", str(junk)])
    assert shown.exit_code != 0 and "format_version" in shown.output


# ------------------------------------------- out of distribution, combined


def _clusters(n: int = 400, dim: int = 16, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Two well separated groups of unit vectors (training-like, unlike)."""
    rng = np.random.default_rng(seed)
    def group(axis: int) -> np.ndarray:
        x = rng.normal(scale=0.25, size=(n, dim))
        x[:, axis] += 1.0
        return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)
    return group(0), group(1)


def test_ood_reference_tells_training_like_vectors_from_others() -> None:
    from seawall.routing.complexity.ood import fit_reference

    known, other = _clusters()
    ref = fit_reference(known[:300], known[300:], centroids=16, quantile=0.05)
    assert ref.centroids.shape == (16, 16) and ref.centroids.dtype == np.float16
    assert ref.n_reference == 300
    # about the quantile of unseen training-like rows falls below the cut-off
    assert 0.0 <= 1 - ref.familiar(known[300:]).mean() <= 0.1
    assert ref.familiar(other).mean() < 0.02
    assert ref.similarity(known[0]).shape == (1,)
    with pytest.raises(ValueError, match="quantile"):
        fit_reference(known, known, quantile=1.0)
    # more centroids than a quarter of the rows are not fitted
    assert fit_reference(known[:40], known[40:60], centroids=512).centroids.shape[0] == 10


def _with_ood(model: RouterModel, vectors: np.ndarray, quantile: float = 0.05) -> RouterModel:
    from dataclasses import replace

    from seawall.routing.complexity.ood import fit_reference

    return replace(model, ood=fit_reference(vectors[:150], vectors[150:], centroids=8,
                                            quantile=quantile))


def test_ood_reference_round_trips_and_is_part_of_the_version(tmp_path: Path) -> None:
    model, vectors, feats = _synthetic()
    with_ood = _with_ood(model, vectors)
    assert with_ood.version != model.version  # the reference is content
    path = tmp_path / "r.json"
    with_ood.save(path)
    loaded = RouterModel.load(path)
    assert loaded.version == with_ood.version and loaded.ood is not None
    assert loaded.ood.cutoff == pytest.approx(with_ood.ood.cutoff)  # type: ignore[union-attr]
    np.testing.assert_array_equal(loaded.ood.centroids,
                                  with_ood.ood.centroids)  # type: ignore[union-attr]
    assert RouterModel.load(_saved(model, tmp_path)).ood is None  # optional
    assert loaded.describe()["ood"]["centroids"] == 8

    doc = json.loads(path.read_text())
    doc["ood"]["cutoff"] = 0.1
    path.write_text(json.dumps(doc))
    with pytest.raises(RouterModelError, match="does not match its version"):
        RouterModel.load(path)
    doc["ood"]["centroids"]["shape"] = [8, 15]
    doc.pop("version")
    path.write_text(json.dumps(doc))
    with pytest.raises(RouterModelError, match="ood"):
        RouterModel.load(path)


def _saved(model: RouterModel, tmp_path: Path) -> Path:
    path = tmp_path / "plain.json"
    model.save(path)
    return path


def test_combined_router_uses_the_model_on_familiar_prompts_and_rules_elsewhere() -> None:
    from seawall.routing.complexity.combined import CombinedRouter

    model, vectors, feats = _synthetic()
    rules = RulesRouter()
    with pytest.raises(RouterModelError, match="out-of-distribution reference"):
        CombinedRouter(model, rules)
    known, other = _clusters()
    combined = CombinedRouter(_with_ood(model, known), rules)
    familiar = combined.decide(known[0], feats[0])
    assert familiar.source == "learned"
    assert familiar.score == pytest.approx(model.score(known[0], feats[0]), abs=1e-6)
    assert "familiar" in familiar.reason

    stranger = other[0]  # nothing like the reference prompts
    greeting = text_features(GREETING)
    unfamiliar = combined.decide(stranger, greeting)
    assert unfamiliar.source == "rules" and unfamiliar.similarity < combined.cutoff
    assert unfamiliar.score == pytest.approx(rules.decide(GREETING).score)
    assert unfamiliar.reason.startswith("rules (unfamiliar")
    # the cut-off is a setting: -1 trusts the model everywhere
    trusting = CombinedRouter(combined.model, rules, cutoff=-1.0)
    assert trusting.decide(stranger, greeting).source == "learned"

    scores, mask = combined.score_batch(np.stack([known[0], stranger]),
                                        np.stack([feats[0], greeting]), [0.1, 0.2])
    assert mask.tolist() == [True, False]
    assert scores[0] == pytest.approx(familiar.score, abs=1e-6) and scores[1] == 0.2


def test_source_weights_balance_each_source_classes() -> None:
    from seawall.routing.complexity.train import source_weights

    w = source_weights(["a"] * 4 + ["b"] * 4 + ["c"] * 2, [1, 1, 1, 0, 1, 0, 0, 0, 1, 1])
    assert w[:3].sum() == pytest.approx(w[3]) == pytest.approx(2.0)  # a: 3 ok vs 1 not
    assert w[4] == pytest.approx(w[5:8].sum()) == pytest.approx(2.0)
    assert w[8:].tolist() == [1.0, 1.0]  # one class only: unchanged
    assert w.sum() == pytest.approx(10.0)


def test_train_router_stores_an_ood_reference_unless_told_not_to() -> None:
    examples = load_examples(FIXTURE)
    rng = np.random.default_rng(0)

    def embed(texts: list[str]) -> np.ndarray:
        x = rng.normal(size=(len(texts), 8)).astype(np.float32)
        return x / np.linalg.norm(x, axis=1, keepdims=True)

    model = train_router(examples, TrainSettings(kind="logistic"), embed=embed,
                         embedder="test")
    assert model.ood is not None and model.ood.centroids.shape[1] == 8
    assert model.training["ood"]["centroids"] == model.ood.centroids.shape[0]
    assert model.training["sources"] == {"tiny.jsonl": 38}
    bare = train_router(examples, TrainSettings(kind="logistic", ood_centroids=0), embed=embed,
                        embedder="test")
    assert bare.ood is None


def test_cli_trains_on_several_sources(runner: CliRunner, tmp_path: Path) -> None:
    other = tmp_path / "exams.jsonl"
    other.write_text("\n".join(json.dumps({"prompt": f"Exam question {i}: what is {i} + {i}?",
                                           "cheap_ok": i % 3 != 0}) for i in range(30)))
    out = tmp_path / "router.json"
    result = runner.invoke(router_cli, ["train", str(FIXTURE), str(other), "--out", str(out),
                                        "--kind", "logistic", "--ood-centroids", "8"])
    assert result.exit_code == 0, result.output
    assert "trained logistic router on 68 examples" in result.output
    assert "out-of-distribution reference: 8 centroids" in result.output
    model = RouterModel.load(out)
    assert model.training["sources"] == {"exams.jsonl": 30, "tiny.jsonl": 38}
    assert model.training["settings"]["balance_sources"] is True
    info = json.loads(runner.invoke(router_cli, ["inspect", str(out)]).output)
    assert info["ood"]["centroids"] == 8 and -1 <= info["ood"]["cutoff"] <= 1
