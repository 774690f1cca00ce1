"""What the guardrails add to one request: the stage's work before the model
(policy lookup, scan, mask), restoring the answer's chunks, the output scan
after it, and the trace-record redaction, in microseconds of CPU per request.

Configurations: ``off`` (no policy, redact_traces false: the stage returns at
once), ``default`` (no policy: only the trace records are redacted, on by
default), ``mask`` (input mask of email/phone + block of card/secret + flag
of ip, output flag of everything). Prompts: a short one without any value,
a short one with an email and a phone number, and a 20 KB document.

    python bench/guardrails_overhead.py [--n 2000]

Run on an idle machine for absolute figures; the differences between rows
are the point.
"""

from __future__ import annotations

import argparse
import asyncio
import copy
import itertools
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import msgspec  # noqa: E402

from seawall.api.wire import ChatCompletionRequest  # noqa: E402
from seawall.config import GuardrailSettings  # noqa: E402
from seawall.guardrails.policy import Policies  # noqa: E402
from seawall.guardrails.redact import RecordRedactor  # noqa: E402
from seawall.guardrails.stage import GuardrailStage  # noqa: E402
from seawall.observe.metrics import Metrics  # noqa: E402
from seawall.pipeline.context import RequestContext  # noqa: E402
from seawall.providers.base import make_chunk  # noqa: E402

PROMPTS = {
    "short, no PII": "What is the capital of France? Answer in one sentence, please.",
    # A different number each request: phone verdicts are remembered (by hash) for repeats.
    "short, PII": "Write to ana.lopez@example.com or call +1 415-555-{n:04d} about the refund.",
    "20 KB document": ("The quarterly report covers revenue, costs and outlook for the "
                       "region; growth was steady and margins improved. " * 180)[:20_000],
}

CONFIGS: dict[str, dict[str, Any]] = {
    "off": {"redact_traces": False},
    "default (redact records)": {},
    "mask + block + flag": {
        "input": {"email": "mask", "phone": "mask", "credit_card": "block", "secret": "block",
                  "ip": "flag"},
        "output": {d: "flag" for d in ("email", "phone", "credit_card", "iban", "national_id",
                                       "secret", "ip")},
    },
}


def _answer(text: str) -> list[dict[str, Any]]:
    words = text.split(" ")
    chunks = [make_chunk("c", "m", 0, {"content": (" " if i else "") + w})
              for i, w in enumerate(words[:200])]
    chunks.append(make_chunk("c", "m", 0, {}, "stop"))
    return chunks


async def one(stage: GuardrailStage, redact: RecordRedactor | None, prompt: str) -> None:
    raw = {"model": "m", "messages": [{"role": "user", "content": prompt}]}
    ctx = RequestContext(endpoint="chat.completions", raw=raw, model="m",
                         request=msgspec.convert(raw, ChatCompletionRequest))
    await stage.before(ctx)
    assert ctx.raw is not None
    sent = ctx.raw["messages"][0]["content"]

    async def upstream() -> Any:
        for c in _answer(sent):
            yield c

    async for item in stage.wrap(ctx, upstream()):
        ctx.gatherer.add_item(item)
    await stage.after(ctx)
    if redact is not None:
        await redact(copy.copy(raw["messages"]), ctx.gatherer.text, None)


async def measure(n: int) -> list[tuple[str, str, float, float]]:
    rows = []
    counter = itertools.count()
    for cname, cfg in CONFIGS.items():
        settings = GuardrailSettings.model_validate(cfg)
        policies = Policies(settings)
        stage = GuardrailStage(settings, policies, Metrics())
        redact = RecordRedactor(settings, policies) if settings.redact_traces else None
        for pname, prompt in PROMPTS.items():
            reps = n if len(prompt) < 1000 else max(50, n // 20)
            samples = []
            for _ in range(3):
                t0 = time.perf_counter()
                for _ in range(reps):
                    n = next(counter) % 10_000
                    await one(stage, redact, prompt.replace("{n:04d}", f"{n:04d}"))
                samples.append((time.perf_counter() - t0) / reps * 1e6)
            rows.append((cname, pname, min(samples), statistics.median(samples)))
    return rows


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=2000)
    args = ap.parse_args()
    rows = asyncio.run(measure(args.n))
    base = {p: best for c, p, best, _ in rows if c == "off"}
    print("| guardrails | prompt | us/request (best of 3) | median | added vs off |")
    print("| --- | --- | ---: | ---: | ---: |")
    for c, p, best, med in rows:
        print(f"| {c} | {p} | {best:.1f} | {med:.1f} | {best - base[p]:+.1f} |")
    print("\n(the 'off' rows include this harness: building the request and relaying "
          "an answer of up to 200 chunks)")


if __name__ == "__main__":
    main()
