#!/usr/bin/env python3
"""How far can a judge be trusted? Seawall's judge rubrics, asked through the
gateway's own provider layer (the same ``judge_one`` the judge jobs run),
scored against human-checked labels from RouteLLM's evaluation data.

* GSM8K (``routellm_eval/gsm8k``): each question has a GPT-4-1106 (strong)
  and a Mixtral-8x7B (weak) answer, labelled correct or not. The judge's
  ``correctness`` score (reference-free: the dataset gives no reference
  answer) should separate correct from wrong answers: AUROC (0.5 = chance,
  1.0 = perfect), over both models' answers.
* MT-Bench (``routellm_eval/mt_bench``): GPT-4's single-answer 1-10 scores of
  both models' first-turn answers. The judge's ``helpfulness`` score should
  rank answers like GPT-4 does: Spearman's rho.

A fixed random subsample (``--seed``) keeps the run short on a shared CPU;
95% confidence intervals come from a percentile bootstrap (2,000 resamples).
A verdict the judge could not give (malformed, after ``--attempts`` tries)
counts as the scale's midpoint (3/5), and the coverage column says how often
that happened. Verdicts are cached in a JSONL file (``--cache``) so an
interrupted run resumes.

Usage (from the repo root; the local model by default)::

    nice -n 19 .venv/bin/python bench/judge_validity.py                # SmolLM2-135M
    .venv/bin/python bench/judge_validity.py --config my.yaml --model gpt-4o-mini
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import json
import os
import random
import re
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from seawall.config import Settings, load_settings, parse_settings  # noqa: E402
from seawall.providers.registry import ModelRegistry  # noqa: E402
from seawall.quality.judge_call import JudgeCaller  # noqa: E402
from seawall.quality.judging import JudgeFailed, Rubric, judge_one  # noqa: E402
from seawall.quality.rubrics import JudgeItem  # noqa: E402
from seawall.routing.router import Router  # noqa: E402

DATA = Path(os.environ.get("SEAWALL_EVAL_DATA_ROOT", "/work/shared/data")) / "routellm_eval"
STRONG, WEAK = "gpt-4-1106-preview", "mistralai/Mixtral-8x7B-Instruct-v0.1"
MAX_CHARS = 2500  # per text given to the judge (prefill dominates on a shared CPU)
MIDPOINT = 3.0


def gsm8k_items(n: int, seed: int) -> list[dict[str, Any]]:
    with open(DATA / "gsm8k" / "gsm8k_responses.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    rng = random.Random(seed)
    picked = rng.sample(rows, n // 2)  # both answers of each question
    out = []
    for i, r in enumerate(picked):
        for who in (STRONG, WEAK):
            out.append({"id": f"gsm8k-{i}-{'strong' if who == STRONG else 'weak'}",
                        "input": r["prompt"], "output": r[f"{who}_response"].strip(),
                        "label": r[who] == "True"})
    return out


_Q = re.compile(r"\[Question\]\n(.*?)\n\n\[The Start of", re.S)
_A = re.compile(r"\[The Start of Assistant's Answer\]\n(.*?)\n\[The End of Assistant's Answer\]",
                re.S)


def mtbench_items(n: int, seed: int) -> list[dict[str, Any]]:
    rows = [json.loads(line) for line in
            (DATA / "mt_bench" / "judgements.jsonl").read_text().splitlines()]
    first = [r for r in rows if r["turn"] == 1 and r["score"] >= 1]
    rng = random.Random(seed)
    out = []
    for r in rng.sample(first, n):
        q, a = _Q.search(r["user_prompt"]), _A.search(r["user_prompt"])
        assert q and a, r["question_id"]
        out.append({"id": f"mtbench-{r['question_id']}-{r['model'].split('/')[-1]}",
                    "input": q.group(1).strip(), "output": a.group(1).strip(),
                    "label": float(r["score"])})
    return out


def auroc(scores: np.ndarray, labels: np.ndarray) -> float:
    """P(score of a correct answer > score of a wrong one), ties count half."""
    pos, neg = scores[labels], scores[~labels]
    if len(pos) == 0 or len(neg) == 0:
        return float("nan")
    greater = (pos[:, None] > neg[None, :]).sum()
    ties = (pos[:, None] == neg[None, :]).sum()
    return float((greater + 0.5 * ties) / (len(pos) * len(neg)))


def _ranks(x: np.ndarray) -> np.ndarray:
    order = np.argsort(x, kind="mergesort")
    ranks = np.empty(len(x))
    ranks[order] = np.arange(len(x), dtype=float)
    for v in np.unique(x):  # average ranks over ties
        idx = x == v
        ranks[idx] = ranks[idx].mean()
    return ranks


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    ra, rb = _ranks(a), _ranks(b)
    if ra.std() == 0 or rb.std() == 0:
        return float("nan")
    return float(np.corrcoef(ra, rb)[0, 1])


def bootstrap(stat: Any, x: np.ndarray, y: np.ndarray, seed: int,
              n: int = 2000) -> tuple[float, float]:
    rng = np.random.default_rng(seed)
    vals = []
    for _ in range(n):
        i = rng.integers(0, len(x), len(x))
        v = stat(x[i], y[i])
        if v == v:  # not nan
            vals.append(v)
    if not vals:
        return float("nan"), float("nan")
    lo, hi = np.percentile(vals, [2.5, 97.5])
    return float(lo), float(hi)


def local_settings(n_threads: int) -> Settings:
    return parse_settings({
        "providers": {"local": {"type": "local", "n_ctx": 4096, "n_threads": n_threads}},
        "models": {"local": {"provider": "local", "model": "SmolLM2-135M-Instruct"}},
        "resilience": {"timeouts": {"total_s": 600, "first_token_s": 600, "idle_s": 600},
                       "retries": {"max_attempts": 1}},
    })


async def judge_all(settings: Settings, model: str, items: list[dict[str, Any]],
                    cache: Path, attempts: int, max_tokens: int,
                    structured: bool, reasoning_chars: int) -> dict[str, dict[str, Any]]:
    done: dict[str, dict[str, Any]] = {}
    if cache.exists():
        for line in cache.read_text().splitlines():
            d = json.loads(line)
            if d["model"] == model:
                done[f"{d['id']}/{d['rubric']}"] = d
    todo = [it for it in items if f"{it['id']}/{it['rubric']}" not in done]
    if not todo:
        return done
    registry = ModelRegistry(settings)
    router = Router(registry, settings.resilience)
    await registry.start()
    caller = JudgeCaller(registry, router)
    try:
        with cache.open("a") as out:
            for k, it in enumerate(todo):
                rubric = it["rubric"]
                item = JudgeItem(it["input"][:MAX_CHARS], it["output"][:MAX_CHARS])
                t0 = time.monotonic()
                rec: dict[str, Any] = {"id": it["id"], "model": model, "rubric": rubric,
                                       "score": None, "error": None, "cost_usd": 0.0}
                for _ in range(attempts):
                    try:
                        j = await judge_one(caller, None, model, Rubric(rubric), item,
                                            timeout_s=600, max_tokens=max_tokens,
                                            json_schema=structured,
                                            reasoning_chars=reasoning_chars)
                    except JudgeFailed as e:
                        rec["error"] = str(e)[:300]
                        continue
                    rec.update(score=j.score, error=None, reasoning=j.reasoning[:300],
                               cost_usd=j.cost_usd)
                    break
                rec["s"] = round(time.monotonic() - t0, 2)
                out.write(json.dumps(rec) + "\n")
                out.flush()
                done[f"{it['id']}/{rubric}"] = rec
                print(f"  {rubric} {k + 1}/{len(todo)} {it['id']}: {rec['score']} "
                      f"({rec['s']}s){' ' + rec['error'][:60] if rec['error'] else ''}",
                      file=sys.stderr, flush=True)
    finally:
        await registry.close()
    return done


def summarize(items: list[dict[str, Any]], verdicts: dict[str, dict[str, Any]],
              kind: str, seed: int) -> dict[str, Any]:
    items = [it for it in items if f"{it['id']}/{it['rubric']}" in verdicts]  # partial run
    got = [verdicts[f"{it['id']}/{it['rubric']}"] for it in items]
    scores = np.array([g["score"] if g["score"] is not None else MIDPOINT for g in got])
    ok = np.array([g["score"] is not None for g in got])
    if kind == "auroc":
        labels = np.array([bool(it["label"]) for it in items])
        value, ci = auroc(scores, labels), bootstrap(auroc, scores, labels, seed)
        parsed = auroc(scores[ok], labels[ok]) if ok.any() else float("nan")
    else:
        labels = np.array([float(it["label"]) for it in items])
        value, ci = spearman(scores, labels), bootstrap(spearman, scores, labels, seed)
        parsed = spearman(scores[ok], labels[ok]) if ok.sum() > 2 else float("nan")
    secs = [g.get("s", 0.0) for g in got]
    return {"n": len(items), "value": value, "ci95": ci, "coverage": float(ok.mean()),
            "value_parsed_only": parsed, "mean_s": float(np.mean(secs)),
            "score_counts": {str(k): int(v) for k, v in zip(*np.unique(scores,
                                                                        return_counts=True),
                                                            strict=True)}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--config", help="a Seawall config with the judge model (default: the "
                    "local model only)")
    ap.add_argument("--model", default="local", help="the judge: a chat model in the config")
    ap.add_argument("--gsm8k", type=int, default=150, help="GSM8K answers (half strong, half weak)")
    ap.add_argument("--mtbench", type=int, default=80, help="MT-Bench first-turn answers")
    ap.add_argument("--seed", type=int, default=16)
    ap.add_argument("--attempts", type=int, default=2, help="tries per verdict (as a job retries)")
    ap.add_argument("--max-tokens", type=int, default=160)
    ap.add_argument("--reasoning-chars", type=int, default=40, help="cap on the verdict's "
                    "reasoning with structured output (decoding time on a shared CPU)")
    ap.add_argument("--no-json-schema", action="store_true", help="ask for the verdict in "
                    "the prompt only (default: also as structured output)")
    ap.add_argument("--threads", type=int, default=2, help="llama.cpp threads (local model)")
    ap.add_argument("--cache", default="bench/results/judge_validity_verdicts.jsonl")
    ap.add_argument("--out", default="bench/results/judge_validity.json")
    ap.add_argument("--report-only", action="store_true", help="judge nothing: summarize "
                    "the cached verdicts (of an interrupted run)")
    args = ap.parse_args()
    settings = load_settings(args.config) if args.config else local_settings(args.threads)
    cache = Path(args.cache)
    cache.parent.mkdir(parents=True, exist_ok=True)
    gsm = gsm8k_items(args.gsm8k, args.seed)
    mtb = mtbench_items(args.mtbench, args.seed)
    t0 = time.monotonic()
    for it in gsm:
        it["rubric"] = "correctness"
    for it in mtb:
        it["rubric"] = "helpfulness"
    # Interleaved, so an interrupted run (--report-only) still covers both sets.
    both = [it for pair in zip(gsm, mtb + [None] * len(gsm), strict=False) for it in pair if it]
    verdicts = asyncio.run(judge_all(settings, args.model, [] if args.report_only else both,
                                     cache, args.attempts, args.max_tokens,
                                     not args.no_json_schema, args.reasoning_chars))
    res = {"judge_model": args.model, "seed": args.seed, "minutes": (time.monotonic() - t0) / 60,
           "gsm8k_correctness_auroc": summarize(gsm, verdicts, "auroc", args.seed),
           "mtbench_helpfulness_spearman": summarize(mtb, verdicts, "spearman", args.seed)}
    Path(args.out).write_text(json.dumps(res, indent=2))
    print(f"\nJudge validity, judge model {args.model!r} (seed {args.seed})\n")
    print("| benchmark | n | metric | value | 95% CI | verdicts parsed | value on parsed only "
          "| s/verdict |")
    print("|---|---|---|---|---|---|---|---|")
    for name, key, metric in (("GSM8K correctness", "gsm8k_correctness_auroc", "AUROC"),
                              ("MT-Bench helpfulness", "mtbench_helpfulness_spearman",
                               "Spearman rho vs GPT-4")):
        r = res[key]
        print(f"| {name} | {r['n']} | {metric} | {r['value']:.3f} | "
              f"{r['ci95'][0]:.3f} .. {r['ci95'][1]:.3f} | {r['coverage']:.0%} | "
              f"{r['value_parsed_only']:.3f} | {r['mean_s']:.1f} |")
    print("\nscore counts:", {k: res[k]["score_counts"] for k in
                              ("gsm8k_correctness_auroc", "mtbench_helpfulness_spearman")})


if __name__ == "__main__":
    main()
