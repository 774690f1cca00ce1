#!/usr/bin/env python3
"""End-to-end latency of a response-cache hit through the gateway, against a
miss and against a model with the cache off, on the fake upstream.

What runs (every subprocess is stopped at the end, also on an error or Ctrl-C):

* two fake upstreams (``python -m seawall.providers.fake_server``), both
  answering exactly ``max_tokens`` (100) words (``--fill-max-tokens``):
  "instant" (no delay) and "realistic" (TTFT 0.3 s, then 50 words/s);
* ``seawall serve`` with the cache on (``cache: {enabled: true}``, defaults:
  the semantic threshold, the false-hit guard), anonymous loopback auth,
  trace records on (the default), data in a temp dir, and four models:
  ``cached-instant`` / ``cached`` (cache on; instant / realistic fake) and
  ``uncached-instant`` / ``uncached`` (the same with ``cache: {enabled: false}``).

Sequential requests (one at a time, one keep-alive httpx client), each
scenario plain and streamed, N requests each:

(a) miss, instant fake: a distinct question to ``cached-instant`` (the
    answer is stored: these entries serve (c) and (d));
(b) miss, realistic fake: a distinct question to ``cached``;
(c) exact hit: a question of (a) again;
(d) semantic hit: a paraphrase of a question of (a) (QQP duplicate pairs
    whose embeddings' cosine is >= the default threshold + 0.01 and that the
    false-hit guard accepts);
(e) baseline: distinct questions to ``uncached-instant`` / ``uncached``.

Every response's ``x-seawall-cache`` header is checked (hit / semantic-hit /
miss; none for a cache-disabled model): requests that did not get the
expected status are counted and left out of the numbers. Streams report the
time to the first content token (TTFT) as well as the total. Questions
within one cached model are chosen < 0.85 apart from each other, so a miss
cannot turn into a semantic hit on another benchmark question.

Questions: the QQP duplicate-pairs sample (/work/shared/data/qqp_gptcache,
read in place, research data: never copied into the repo).

Usage (from the repo root; ~10 min with the defaults)::

    .venv/bin/python bench/cache_latency.py
    .venv/bin/python bench/cache_latency.py --n 100 --n-slow 20    # quicker
    .venv/bin/python bench/cache_latency.py --help

Results: printed, and written to bench/results/cache-latency-<YYYY-MM-DD-HHMM>.md.
"""

from __future__ import annotations

import argparse
import contextlib
import gzip
import importlib.metadata
import json
import os
import platform
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import numpy.typing as npt

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # run as a script: make `seawall` importable
    sys.path.insert(0, str(ROOT))

DATA = Path("/work/shared/data/qqp_gptcache/qqp_pairs.jsonl.gz")
RESULTS = ROOT / "bench" / "results"
VENV_BIN = Path(sys.executable).parent
MAX_TOKENS = 100
PAIR_MARGIN = 0.01  # paraphrase pairs for semantic hits: cosine >= threshold + this
APART_MAX_COS = 0.85  # questions of one cached model stay this far apart
PINNING = "gateway on core 0, both fakes and this client on core 1"
F32 = npt.NDArray[np.float32]

_T0 = time.monotonic()


def log(msg: str) -> None:
    print(f"[{time.monotonic() - _T0:6.1f}s] {msg}", file=sys.stderr, flush=True)


# ------------------------------------------------------------------ questions


@dataclass(slots=True)
class QuestionSets:
    stored: list[str]  # (a) misses, then (c) exact hits; plain half, stream half
    paraphrases: list[str]  # (d): paraphrases[i] matches stored[i]
    slow: list[str]  # (b) misses on the realistic fake
    baseline: list[str]  # (e), both uncached models
    warm: list[str]


def read_pairs(path: Path, seed: int) -> list[tuple[str, str, bool]]:
    rows = []
    with gzip.open(path, "rt") as f:
        for line in f:
            r = json.loads(line)
            rows.append((r["question1"].strip(), r["question2"].strip(), bool(r["is_duplicate"])))
    order = np.random.default_rng(seed).permutation(len(rows))
    return [rows[i] for i in order]


class Picker:
    """Greedy choice of questions kept APART_MAX_COS apart from each other."""

    def __init__(self, dim: int = 384) -> None:
        self.vectors = np.zeros((0, dim), dtype=np.float32)
        self.texts: set[str] = set()

    def fits(self, text: str, vector: F32) -> bool:
        if text in self.texts or len(text) < 12:
            return False
        return not len(self.vectors) or float((self.vectors @ vector).max()) < APART_MAX_COS

    def take(self, text: str, vector: F32) -> None:
        self.texts.add(text)
        self.vectors = np.vstack([self.vectors, vector[None, :]])


def pair_min_cos() -> float:
    """Least cosine of a semantic-hit pair: the default threshold + a margin."""
    from seawall.config import SemanticCacheSettings

    return SemanticCacheSettings().threshold + PAIR_MARGIN


def choose_questions(path: Path, n: int, n_slow: int, seed: int) -> QuestionSets:
    """Pairs for (a)/(c)/(d) and distinct single questions for the rest."""
    from seawall.cache.guard import FalseHitGuard
    from seawall.ml.embedder import Embedder

    embedder = Embedder()
    embedder.warm_up()
    guard = FalseHitGuard(None)
    min_cos = pair_min_cos()
    rows = read_pairs(path, seed)
    want_pairs, want_single = 2 * n, 2 * n_slow + 4 * n + 10
    picked, other = Picker(), Picker()
    used: set[str] = set()
    stored, paraphrases, singles = [], [], []
    batch = 256
    for start in range(0, len(rows), batch):
        chunk = rows[start:start + batch]
        vecs = embedder.embed([t for r in chunk for t in r[:2]])
        for i, (q1, q2, dup) in enumerate(chunk):
            v1, v2 = vecs[2 * i], vecs[2 * i + 1]
            if (dup and len(stored) < want_pairs and q2 not in used and q1 not in used
                    and float(v1 @ v2) >= min_cos - 0.02 and guard.check(q2, q1) is None):
                # The int8 model's output depends a little on the batch (padding moves
                # its activation ranges): check with the gateway's batch of one.
                v1, v2 = embedder.embed([q1])[0], embedder.embed([q2])[0]
                if float(v1 @ v2) >= min_cos and picked.fits(q1, v1):
                    picked.take(q1, v1)
                    stored.append(q1)
                    paraphrases.append(q2)
            elif not dup and len(singles) < want_single and q1 not in used and other.fits(q1, v1):
                other.take(q1, v1)
                singles.append(q1)
            used.update((q1, q2))
        if len(stored) >= want_pairs and len(singles) >= want_single:
            break
    if len(stored) < want_pairs or len(singles) < want_single:
        raise SystemExit(f"not enough questions: {len(stored)} pairs, {len(singles)} others")
    slow, rest = singles[: 2 * n_slow], singles[2 * n_slow:]
    return QuestionSets(stored, paraphrases, slow, rest[: 4 * n], rest[4 * n:])


# ------------------------------------------------------------------ processes


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass(slots=True)
class Processes:
    procs: list[tuple[str, subprocess.Popen[bytes], Path]] = field(default_factory=list)

    def start(self, name: str, cmd: list[str], logs: Path, cpu: str | None) -> None:
        if cpu is not None and shutil.which("taskset"):
            cmd = ["taskset", "-c", cpu, *cmd]
        out = logs / f"{name}.log"
        with out.open("wb") as f:
            proc = subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT, cwd=ROOT,
                                    start_new_session=True)
        self.procs.append((name, proc, out))
        log(f"started {name} (pid {proc.pid}): {' '.join(cmd)}")

    def stop(self) -> None:
        for name, proc, _ in reversed(self.procs):
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(10)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(5)
            log(f"stopped {name} (exit {proc.returncode})")

    def check_alive(self) -> None:
        for name, proc, out in self.procs:
            if proc.poll() is not None:
                raise RuntimeError(f"{name} exited ({proc.returncode}):\n{out.read_text()}")


def wait_ready(url: str, procs: Processes, within_s: float = 60.0) -> None:
    deadline = time.monotonic() + within_s
    while True:
        with contextlib.suppress(httpx.TransportError):
            if httpx.get(url, timeout=2).status_code == 200:
                return
        procs.check_alive()
        if time.monotonic() > deadline:
            raise RuntimeError(f"{url} not ready after {within_s}s")
        time.sleep(0.1)


def gateway_config(tmp: Path, port: int, instant: int, realistic: int) -> str:
    return f"""\
data_dir: {tmp / "data"}
server: {{host: 127.0.0.1, port: {port}, log_level: warning}}
auth: {{allow_anonymous_loopback: true}}
cache: {{enabled: true}}
providers:
  instant: {{type: openai, base_url: "http://127.0.0.1:{instant}/v1", api_key: unused}}
  realistic: {{type: openai, base_url: "http://127.0.0.1:{realistic}/v1", api_key: unused}}
models:
  cached-instant: {{provider: instant, model: fake-model}}
  cached: {{provider: realistic, model: fake-model}}
  uncached-instant: {{provider: instant, model: fake-model, cache: {{enabled: false}}}}
  uncached: {{provider: realistic, model: fake-model, cache: {{enabled: false}}}}
"""


@contextlib.contextmanager
def running_stack(args: argparse.Namespace, tmp: Path) -> Iterator[tuple[str, str]]:
    """Both fakes and the gateway; yields (gateway url, config text)."""
    procs = Processes()
    fake = [sys.executable, "-m", "seawall.providers.fake_server", "--fill-max-tokens"]
    ports = {name: free_port() for name in ("instant", "realistic", "gateway")}
    config = gateway_config(tmp, ports["gateway"], ports["instant"], ports["realistic"])
    (tmp / "seawall.yaml").write_text(config)
    pin_fake, pin_gw = ("1", "0") if args.pin else (None, None)
    try:
        procs.start("fake-instant", [*fake, "--port", str(ports["instant"])], tmp, pin_fake)
        procs.start("fake-realistic", [*fake, "--port", str(ports["realistic"]), "--ttft-s",
                                       str(args.ttft_s), "--tokens-per-s",
                                       str(args.tokens_per_s)], tmp, pin_fake)
        procs.start("seawall", [str(VENV_BIN / "seawall"), "serve", "--config",
                                str(tmp / "seawall.yaml")], tmp, pin_gw)
        for name in ("instant", "realistic"):
            wait_ready(f"http://127.0.0.1:{ports[name]}/v1/models", procs)
        gateway = f"http://127.0.0.1:{ports['gateway']}"
        wait_ready(gateway + "/ready", procs)
        yield gateway, config
    finally:
        procs.stop()


# ------------------------------------------------------------------ requests


@dataclass(slots=True)
class Sample:
    status: str  # x-seawall-cache ("-" when absent)
    total_s: float
    ttft_s: float | None = None
    words: int = 0


def body(model: str, question: str, stream: bool) -> dict[str, Any]:
    out: dict[str, Any] = {"model": model, "max_tokens": MAX_TOKENS, "temperature": 0,
                           "stream": stream,
                           "messages": [{"role": "user", "content": question}]}
    if stream:
        out["stream_options"] = {"include_usage": True}
    return out


def send_plain(client: httpx.Client, model: str, question: str) -> Sample:
    t0 = time.perf_counter()
    r = client.post("/v1/chat/completions", json=body(model, question, False))
    total = time.perf_counter() - t0
    r.raise_for_status()
    text = r.json()["choices"][0]["message"]["content"] or ""
    return Sample(r.headers.get("x-seawall-cache", "-"), total, words=len(text.split()))


def send_stream(client: httpx.Client, model: str, question: str) -> Sample:
    t0 = time.perf_counter()
    ttft = None
    parts: list[str] = []
    done = False
    with client.stream("POST", "/v1/chat/completions", json=body(model, question, True)) as r:
        r.raise_for_status()
        status = r.headers.get("x-seawall-cache", "-")
        for line in r.iter_lines():
            if not line.startswith("data: "):
                continue
            data = line[6:]
            if data == "[DONE]":
                done = True
                break
            for choice in json.loads(data).get("choices") or ():
                content = (choice.get("delta") or {}).get("content")
                if content:
                    ttft = ttft if ttft is not None else time.perf_counter() - t0
                    parts.append(content)
    total = time.perf_counter() - t0
    if not done:
        raise RuntimeError(f"stream for {question!r} ended without [DONE]")
    return Sample(status, total, ttft, len("".join(parts).split()))


@dataclass(slots=True)
class Scenario:
    name: str
    model: str
    expect: str
    questions: list[str]
    stream: bool
    samples: list[Sample] = field(default_factory=list)

    @property
    def good(self) -> list[Sample]:
        return [s for s in self.samples if s.status == self.expect]

    @property
    def wrong(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for s in self.samples:
            if s.status != self.expect:
                out[s.status] = out.get(s.status, 0) + 1
        return out


def run_scenario(client: httpx.Client, sc: Scenario) -> None:
    send = send_stream if sc.stream else send_plain
    for q in sc.questions:
        sample = send(client, sc.model, q)
        if sample.status != sc.expect:
            log(f"  {sc.name}: {sample.status}, not {sc.expect}, for {q!r}")
        sc.samples.append(sample)
    bad = f", unexpected: {sc.wrong}" if sc.wrong else ""
    log(f"{sc.name} ({'stream' if sc.stream else 'plain'}): {len(sc.good)}/{len(sc.samples)} "
        f"{sc.expect}{bad}")


def scenarios(qs: QuestionSets, n: int, n_slow: int) -> list[Scenario]:
    """In run order: the stored questions' misses come before their hits."""
    out = []
    for k, stream in enumerate((False, True)):
        own = slice(k * n, (k + 1) * n)
        slow = slice(k * n_slow, (k + 1) * n_slow)
        base = qs.baseline[2 * k * n:(2 * k + 1) * n]
        base_slow = qs.baseline[(2 * k + 1) * n:(2 * k + 1) * n + n_slow]
        out += [
            Scenario("(a) miss, instant fake", "cached-instant", "miss", qs.stored[own], stream),
            Scenario("(b) miss, realistic fake", "cached", "miss", qs.slow[slow], stream),
            Scenario("(c) exact hit", "cached-instant", "hit", qs.stored[own], stream),
            Scenario("(d) semantic hit", "cached-instant", "semantic-hit",
                     qs.paraphrases[own], stream),
            Scenario("(e) cache off, instant fake", "uncached-instant", "-", base, stream),
            Scenario("(e) cache off, realistic fake", "uncached", "-", base_slow, stream),
        ]
    return out


def warm_up(client: httpx.Client, questions: Sequence[str]) -> None:
    """Connections, the embedder's first runs, every model once each way."""
    models = ("cached-instant", "cached", "uncached-instant", "uncached")
    for i, q in enumerate(questions):
        send_plain(client, models[i % 4], q)
        send_stream(client, models[i % 4], q + " ")


# ------------------------------------------------------------------ report


def pct(values: Sequence[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q)) * 1000.0


def version(dist: str) -> str:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return "?"


def machine_facts() -> str:
    cpu = "?"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    def git(*a: str) -> str:
        return subprocess.run(["git", "-C", str(ROOT), *a], capture_output=True, text=True,
                              check=False).stdout.strip()

    commit = git("rev-parse", "--short", "HEAD")
    if commit and git("status", "--porcelain", "--", "seawall"):
        commit += " + uncommitted changes in seawall/"
    return (f"- Machine: {platform.system()} {platform.release()}, {os.cpu_count()} CPUs "
            f"({cpu}); Python {platform.python_version()}; httpx {version('httpx')}; "
            f"seawall {commit or '?'} (shared machine: other jobs may have run)")


def table(results: list[Scenario]) -> list[str]:
    out = ["| scenario | mode | x-seawall-cache | n ok | p50 ms | p99 ms | TTFT p50 ms "
           "| TTFT p99 ms | words | unexpected |",
           "| --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | --- |"]
    for sc in results:
        good = sc.good
        wrong = ", ".join(f"{k}: {v}" for k, v in sc.wrong.items()) or "0"
        if not good:
            out.append(f"| {sc.name} | {'stream' if sc.stream else 'plain'} | {sc.expect} | 0 "
                       f"| - | - | - | - | - | {wrong} |")
            continue
        total = [s.total_s for s in good]
        ttft = [s.ttft_s for s in good if s.ttft_s is not None]
        tt = f"{pct(ttft, 50):.1f} | {pct(ttft, 99):.1f}" if sc.stream and ttft else "- | -"
        words = int(np.median([s.words for s in good]))
        out.append(f"| {sc.name} | {'stream' if sc.stream else 'plain'} | {sc.expect} | "
                   f"{len(good)} | {pct(total, 50):.1f} | {pct(total, 99):.1f} | {tt} | "
                   f"{words} | {wrong} |")
    return out


def summary(results: list[Scenario]) -> list[str]:
    """Hit vs miss, p50, per mode."""
    out = []
    for stream in (False, True):
        by = {sc.name: sc for sc in results if sc.stream == stream}

        def p50(name: str, by: dict[str, Scenario] = by) -> float:
            good = by[name].good
            return pct([s.total_s for s in good], 50) if good else float("nan")

        hit, sem = p50("(c) exact hit"), p50("(d) semantic hit")
        miss_i, off_i = p50("(a) miss, instant fake"), p50("(e) cache off, instant fake")
        miss_r, off_r = p50("(b) miss, realistic fake"), p50("(e) cache off, realistic fake")
        out.append(f"- {'stream' if stream else 'plain'}: exact hit {hit:.1f} ms, semantic "
                   f"hit {sem:.1f} ms vs realistic miss {miss_r:.0f} ms "
                   f"({miss_r / hit:.0f}x / {miss_r / sem:.0f}x faster); a miss costs "
                   f"{miss_i - off_i:+.1f} ms over cache-off on the instant fake "
                   f"({miss_r - off_r:+.1f} ms on the realistic one); a semantic hit costs "
                   f"{sem - hit:+.1f} ms over an exact hit (p50s)")
    return out


def report(results: list[Scenario], args: argparse.Namespace, config: str, facts: str) -> str:
    lines = [
        f"# Response cache: hit vs miss through the gateway, {time.strftime('%Y-%m-%d %H:%M')}",
        "", facts,
        f"- Command: `{' '.join(['.venv/bin/python', 'bench/cache_latency.py', *sys.argv[1:]])}`",
        f"- Fakes: instant (answers at once) and realistic (TTFT {args.ttft_s} s, "
        f"{args.tokens_per_s:g} words/s); both answer exactly max_tokens = {MAX_TOKENS} words",
        f"- Pinning: {PINNING if args.pin else 'none'}",
        "- Sequential requests, one keep-alive httpx client; latency = request sent -> whole "
        "body read; TTFT = first content delta. Only requests with the expected "
        "`x-seawall-cache` status are counted ('-' = no header: cache-disabled model).",
        f"- Questions: QQP (research data, read in place); semantic hits are QQP duplicates "
        f"with embedding cosine >= {pair_min_cos():.2f} (default threshold + {PAIR_MARGIN}) "
        f"that the false-hit guard accepts; each "
        f"cached model's questions are < {APART_MAX_COS} apart", "",
        *table(results), "", *summary(results), "",
        "Config:", "", "```yaml", config.rstrip(), "```", "",
    ]
    return "\n".join(lines)


# ------------------------------------------------------------------ main


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=300,
                   help="requests per fast scenario and mode (default 300)")
    p.add_argument("--n-slow", type=int, default=60,
                   help="requests per scenario on the realistic fake, per mode (default 60)")
    p.add_argument("--ttft-s", type=float, default=0.3, help="realistic fake's TTFT")
    p.add_argument("--tokens-per-s", type=float, default=50.0,
                   help="realistic fake's output rate")
    p.add_argument("--pin", action=argparse.BooleanOptionalAction, default=True,
                   help="taskset: gateway on core 0, fakes on core 1 (default on)")
    p.add_argument("--seed", type=int, default=3)
    p.add_argument("--data", type=Path, default=DATA)
    p.add_argument("--no-write", action="store_true", help="print only, no results file")
    return p.parse_args(argv)


def main() -> None:
    args = parse_args()
    facts = machine_facts()  # the code measured is the code at the start
    log("choosing questions (embedding QQP pairs)")
    qs = choose_questions(args.data, args.n, args.n_slow, args.seed)
    results = scenarios(qs, args.n, args.n_slow)
    if args.pin and hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {1})
    tmp = Path(tempfile.mkdtemp(prefix="seawall-cache-latency-"))
    try:
        with running_stack(args, tmp) as (gateway, config), \
                httpx.Client(base_url=gateway, timeout=60) as client:
            warm_up(client, qs.warm)
            for sc in results:
                run_scenario(client, sc)
                time.sleep(0.5)  # misses store their answers off the request path
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    text = report(results, args, config, facts)
    print(text)
    if not args.no_write:
        RESULTS.mkdir(parents=True, exist_ok=True)
        path = RESULTS / f"cache-latency-{time.strftime('%Y-%m-%d-%H%M')}.md"
        path.write_text(text)
        log(f"written to {path.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
