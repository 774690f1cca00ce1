"""Trace-record redaction (guardrails.redact_traces, on by default) of one
record, in isolation: the shared gateway harness's request (a 1 KB prompt
with no personal data) and a short answer, through the same RecordRedactor
the record stage calls.

    .venv/bin/python bench/redaction_record.py [--n 3000]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
import timeit
from pathlib import Path

from seawall.config import Settings
from seawall.guardrails.policy import Policies
from seawall.guardrails.redact import RecordRedactor

BODY = Path(__file__).resolve().parent.parent.parent / "shared/bench/gateway/lib/request.json"
ANSWER = "Most of the extra tail latency is queueing in the gateway's event loop: " * 3


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=3000)
    n = ap.parse_args().n
    settings = Settings.model_validate({})
    redactor = RecordRedactor(settings.guardrails, Policies(settings.guardrails))
    messages = json.loads(BODY.read_text())["messages"]

    async def records() -> float:
        start = time.perf_counter()
        for _ in range(n):
            await redactor(messages, ANSWER, None)
        return time.perf_counter() - start

    best = min(asyncio.run(records()) for _ in range(3))
    text = messages[-1]["content"]
    print(f"| what | µs |\n|---|---:|\n| one record ({sum(len(m['content']) for m in messages)}"
          f" + {len(ANSWER)} chars), best of 3 x {n} | {best / n * 1e6:.1f} |")
    for find in redactor.find:
        name = getattr(find, "__name__", type(find).__name__)
        us = min(timeit.repeat(lambda f=find: list(f(text)), number=1000, repeat=3)) / 1000 * 1e6
        print(f"| {name} on the prompt ({len(text)} chars) | {us:.1f} |")


if __name__ == "__main__":
    main()
