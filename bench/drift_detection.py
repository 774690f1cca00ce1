#!/usr/bin/env python3
"""Drift detection on real prompts: how many requests after a change of
traffic Seawall's drift tests alert, and how often they alert when nothing
changed.

Data (read in place, ``SEAWALL_EVAL_DATA_ROOT``, default /work/shared/data):
ShareGPT first-turn prompts (``sharegpt_first_turn``) as the normal traffic;
MMLU test-split questions (``routellm_eval/mmlu``, sha1(prompt) starting c-f)
and GSM8K word problems (``routellm_eval/gsm8k``) as the traffic it switches to.

Detector: exactly ``seawall.quality.drift.compare`` on the inputs (MiniLM
embeddings, cut at 64 tokens here to keep the run short on a shared machine,
and input length in o200k tokens) with the defaults of ``quality.drift``
(alpha 0.01 per evaluation over all tests, Bonferroni; an alert after 2
drifted evaluations in a row, resolved after 2 clean ones), except
``permutations`` (1000: the smallest p-value 1/1001 is still below the
Bonferroni level 0.005). Windows count requests instead of seconds: the
reference is the first ``--reference`` requests of a stream (the live
reference window is the 7 days before the recent hour), the recent window
the last ``--recent`` requests, evaluated every ``--step`` requests.

- Detection delay: streams of ShareGPT that switch to MMLU (or GSM8K) at a
  known request; the delay is the number of requests from the switch to the
  alert (``--switch-streams`` shuffles each).
- False alarms: streams that never switch (random orders of ShareGPT
  prompts other than the reference's); alerts fired, per 10,000 requests.

Usage: nice .venv/bin/python bench/drift_detection.py [--sharegpt 2400] [--json out]
"""

from __future__ import annotations

import argparse
import csv
import gzip
import hashlib
import json
import os
import time
from pathlib import Path
from typing import Any

import numpy as np

from seawall.quality import drift

DATA = Path(os.environ.get("SEAWALL_EVAL_DATA_ROOT", "/work/shared/data"))
CACHE = Path(os.environ.get("SEAWALL_BENCH_CACHE", "/tmp/seawall-drift-bench"))


def sharegpt(n: int, rng: np.random.Generator) -> list[str]:
    path = DATA / "sharegpt_first_turn" / "sharegpt_first_turn_pairs.jsonl.gz"
    with gzip.open(path, "rt") as f:
        prompts = [json.loads(line)["prompt"] for line in f]
    prompts = [p for p in prompts if p.strip()]
    idx = rng.choice(len(prompts), size=min(n, len(prompts)), replace=False)
    return [prompts[i] for i in idx]


def mmlu(n: int, rng: np.random.Generator) -> list[str]:
    out = []
    for f in sorted((DATA / "routellm_eval" / "mmlu" / "responses").glob("*.csv")):
        with f.open(newline="") as fh:
            for row in csv.DictReader(fh):
                p = row["prompt"]
                if hashlib.sha1(p.encode()).hexdigest()[0] in "cdef":  # the test split
                    out.append(p)
    idx = rng.choice(len(out), size=n, replace=False)
    return [out[i] for i in idx]


def gsm8k(n: int, rng: np.random.Generator) -> list[str]:
    with (DATA / "routellm_eval" / "gsm8k" / "gsm8k_responses.csv").open(newline="") as fh:
        out = [row["prompt"] for row in csv.DictReader(fh)]
    idx = rng.choice(len(out), size=n, replace=False)
    return [out[i] for i in idx]


def features(texts: list[str], name: str, max_tokens: int) -> tuple[np.ndarray, np.ndarray]:
    """(embeddings, token lengths), cached on disk by content."""
    from seawall.ml.embedder import Embedder
    from seawall.ml.tokens import TokenCounter

    digest = hashlib.sha1(("\n\x00".join(texts) + str(max_tokens)).encode()).hexdigest()[:16]
    path = CACHE / f"{name}-{digest}.npz"
    if path.exists():
        d = np.load(path)
        return d["emb"], d["lens"]
    emb = Embedder(max_length=max_tokens, threads=1)
    tokens = TokenCounter()
    tokens.warm_up()
    t0 = time.time()
    vecs = [emb.embed([t[:drift.MAX_TEXT] for t in texts[i:i + 32]])
            for i in range(0, len(texts), 32)]
    print(f"  embedded {len(texts)} {name} prompts in {time.time() - t0:.0f}s", flush=True)
    e = np.vstack(vecs).astype(np.float64)
    lens = np.array([tokens.count(t) for t in texts], dtype=np.float64)
    CACHE.mkdir(parents=True, exist_ok=True)
    np.savez(path, emb=e, lens=lens)
    return e, lens


def _sample(emb: np.ndarray, lens: np.ndarray) -> drift.Sample:
    n = len(lens)
    return drift.Sample(input_len=lens, output_len=np.zeros(n), refusal=np.zeros(n, bool),
                        script=[], scores=np.array([]), ratings=np.array([]),
                        input_emb=emb, output_emb=None)


def run_stream(emb: np.ndarray, lens: np.ndarray, args: argparse.Namespace,
               rng: np.random.Generator) -> tuple[list[tuple[int, str]], int, int]:
    """Evaluate a stream as the evaluator would: (request index, firing |
    resolved) of each alert change, evaluations, drifted evaluations."""
    ref = _sample(emb[:args.reference], lens[:args.reference])
    streak, firing, changes, runs, hits = 0, False, [], 0, 0
    for end in range(args.reference + args.recent, len(lens) + 1, args.step):
        cur = _sample(emb[end - args.recent:end], lens[end - args.recent:end])
        _, _, drifted = drift.compare(ref, cur, alpha=args.alpha,
                                      permutations=args.permutations,
                                      min_samples=50, rng=rng)
        runs, hits = runs + 1, hits + drifted
        streak = max(streak, 0) + 1 if drifted else min(streak, 0) - 1
        if not firing and streak >= args.consecutive:
            firing = True
            changes.append((end, "firing"))
        elif firing and streak <= -args.consecutive:
            firing = False
            changes.append((end, "resolved"))
    return changes, runs, hits


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sharegpt", type=int, default=2400, help="ShareGPT prompts embedded")
    ap.add_argument("--switch-to", type=int, default=300, help="MMLU / GSM8K prompts each")
    ap.add_argument("--reference", type=int, default=300)
    ap.add_argument("--recent", type=int, default=100)
    ap.add_argument("--step", type=int, default=50)
    ap.add_argument("--before-switch", type=int, default=200,
                    help="ShareGPT requests after the reference, before the switch")
    ap.add_argument("--switch-streams", type=int, default=10)
    ap.add_argument("--null-streams", type=int, default=5)
    ap.add_argument("--alpha", type=float, default=0.01)
    ap.add_argument("--permutations", type=int, default=1000)
    ap.add_argument("--consecutive", type=int, default=2)
    ap.add_argument("--max-tokens", type=int, default=64)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    rng = np.random.default_rng(args.seed)
    print("loading and embedding prompts (cached after the first run)", flush=True)
    sg_e, sg_l = features(sharegpt(args.sharegpt, rng), "sharegpt", args.max_tokens)
    targets = {"MMLU": features(mmlu(args.switch_to, rng), "mmlu", args.max_tokens),
               "GSM8K": features(gsm8k(args.switch_to, rng), "gsm8k", args.max_tokens)}
    t0 = time.process_time()
    evaluations = 0
    result: dict[str, Any] = {"config": vars(args) | {"json": None}, "switch": {}}
    for name, (t_e, t_l) in targets.items():
        delays, missed = [], 0
        for _ in range(args.switch_streams):
            sg = rng.permutation(len(sg_l))[:args.reference + args.before_switch]
            tg = rng.permutation(len(t_l))
            e = np.vstack([sg_e[sg], t_e[tg]])
            ln = np.concatenate([sg_l[sg], t_l[tg]])
            switch = args.reference + args.before_switch
            changes, runs, _ = run_stream(e, ln, args, rng)
            evaluations += runs
            early = [c for c in changes if c[0] <= switch]
            fired = [i for i, what in changes if what == "firing" and i > switch]
            if early:
                print(f"  {name}: alert before the switch at {early}", flush=True)
            if fired:
                delays.append(fired[0] - switch)
            else:
                missed += 1
        result["switch"][name] = {
            "streams": args.switch_streams, "missed": missed,
            "delay_median": float(np.median(delays)) if delays else None,
            "delay_min": min(delays) if delays else None,
            "delay_max": max(delays) if delays else None}
        print(f"ShareGPT -> {name}: detection delay (requests) median "
              f"{result['switch'][name]['delay_median']}, range "
              f"{result['switch'][name]['delay_min']}-{result['switch'][name]['delay_max']}, "
              f"missed {missed}/{args.switch_streams}", flush=True)
    alarms, requests, null_runs, null_hits = 0, 0, 0, 0
    for _ in range(args.null_streams):
        order = rng.permutation(len(sg_l))
        changes, runs, hits = run_stream(sg_e[order], sg_l[order], args, rng)
        evaluations += runs
        null_runs, null_hits = null_runs + runs, null_hits + hits
        alarms += sum(1 for _, what in changes if what == "firing")
        requests += len(order) - args.reference
    result["null"] = {"requests": requests, "alerts": alarms,
                      "alerts_per_10k": alarms / requests * 10_000,
                      "evaluations": null_runs, "drifted_evaluations": null_hits}
    result["cpu_s_per_evaluation"] = (time.process_time() - t0) / max(evaluations, 1)
    print(f"No switch: {alarms} alerts in {requests} requests after the reference = "
          f"{result['null']['alerts_per_10k']:.2f} per 10,000 requests; single evaluations "
          f"drifted: {null_hits}/{null_runs} (alpha {args.alpha})", flush=True)
    print(f"CPU per evaluation (MMD {args.permutations} permutations on "
          f"{args.reference}+{args.recent} points, KS): "
          f"{result['cpu_s_per_evaluation'] * 1000:.0f} ms", flush=True)
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
