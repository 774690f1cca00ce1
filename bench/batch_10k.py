#!/usr/bin/env python3
"""A 10,000-line batch through the gateway against the fake upstream.

Starts the fake upstream (``python -m seawall.providers.fake_server``, no
delay) and ``seawall serve`` (embedded SQLite store, anonymous loopback,
``batches.concurrency`` as given), uploads N chat lines with the official
``openai`` SDK, creates the batch, polls it to the end while sampling the
gateway's RSS (/proc/PID/status VmRSS), then downloads the output file and
checks every custom_id is there exactly once. Every subprocess is stopped at
the end, also on an error.

Usage (from the repo root; ~1-2 min on 2 shared cores)::

    .venv/bin/python bench/batch_10k.py [--lines 10000] [--concurrency 8]

Results: printed and written to bench/results/batch-10k-<YYYY-MM-DD-HHMM>.md.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.cache_latency import VENV_BIN, Processes, free_port, wait_ready  # noqa: E402

RESULTS = ROOT / "bench" / "results"


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


async def direct(url: str, args: argparse.Namespace) -> None:
    import httpx

    todo = iter(range(args.lines))
    async with httpx.AsyncClient(timeout=60) as http:
        async def worker() -> None:
            for i in todo:
                r = await http.post(url, json={"model": "m", "max_tokens": 16, "messages": [
                    {"role": "user", "content": f"line {i}"}]})
                r.raise_for_status()
        await asyncio.gather(*(worker() for _ in range(args.concurrency)))


def main() -> None:
    import openai

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--lines", type=int, default=10_000)
    ap.add_argument("--concurrency", type=int, default=8)
    ap.add_argument("--direct", action="store_true",
                    help="baseline: the same lines as direct requests, concurrency at a time, "
                         "no batch (what the gateway's RSS does without the Batch API)")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        up, gw = free_port(), free_port()
        (tmp / "seawall.yaml").write_text(f"""\
data_dir: {tmp / "data"}
server: {{host: 127.0.0.1, port: {gw}, log_level: warning}}
auth: {{allow_anonymous_loopback: true}}
batches: {{concurrency: {args.concurrency}}}
providers:
  up: {{type: openai, base_url: "http://127.0.0.1:{up}/v1", api_key: unused}}
models:
  m: {{provider: up, model: fake-model}}
""")
        procs = Processes()
        try:
            procs.start("fake", [sys.executable, "-m", "seawall.providers.fake_server",
                                 "--port", str(up)], tmp, None)
            procs.start("seawall", [str(VENV_BIN / "seawall"), "serve", "--config",
                                    str(tmp / "seawall.yaml")], tmp, None)
            wait_ready(f"http://127.0.0.1:{up}/v1/models", procs)
            wait_ready(f"http://127.0.0.1:{gw}/ready", procs)
            pid = procs.procs[1][1].pid
            client = openai.OpenAI(base_url=f"http://127.0.0.1:{gw}/v1", api_key="x")
            data = "".join(json.dumps({
                "custom_id": f"r{i}", "method": "POST", "url": "/v1/chat/completions",
                "body": {"model": "m", "messages": [{"role": "user", "content": f"line {i}"}],
                         "max_tokens": 16}}) + "\n" for i in range(args.lines)).encode()
            rss_start = rss_mb(pid)
            if args.direct:
                t0 = time.monotonic()
                asyncio.run(direct(f"http://127.0.0.1:{gw}/v1/chat/completions", args))
                print(f"direct: {args.lines} requests in {time.monotonic() - t0:.1f} s, "
                      f"RSS {rss_start:.0f} -> {rss_mb(pid):.0f} MB")
                return
            f = client.files.create(file=("in.jsonl", io.BytesIO(data)), purpose="batch")
            t0 = time.monotonic()
            b = client.batches.create(input_file_id=f.id, endpoint="/v1/chat/completions",
                                      completion_window="24h")
            samples = [rss_start]
            while b.status not in ("completed", "failed", "cancelled"):
                time.sleep(1)
                b = client.batches.retrieve(b.id)
                samples.append(rss_mb(pid))
                procs.check_alive()
            wall = time.monotonic() - t0
            rss_end = rss_mb(pid)
            out = client.files.content(b.output_file_id).text if b.output_file_id else ""
            seen = Counter(json.loads(x)["custom_id"] for x in out.splitlines() if x)
            complete = seen == Counter(f"r{i}" for i in range(args.lines))
        finally:
            procs.stop()
    rc = b.request_counts
    assert rc is not None
    report = f"""# Batch of {args.lines} lines ({time.strftime('%Y-%m-%d %H:%M')} UTC)

`bench/batch_10k.py`: `seawall serve` (embedded SQLite) in front of the fake
upstream (no delay), `batches.concurrency: {args.concurrency}`, 2 shared cores.

| measure | value |
|---|---|
| status | {b.status} |
| request_counts | total {rc.total}, completed {rc.completed}, failed {rc.failed} |
| wall time (create → completed) | {wall:.1f} s ({args.lines / wall:.0f} lines/s) |
| gateway RSS before upload | {rss_start:.0f} MB |
| gateway RSS peak during the batch | {max(samples):.0f} MB |
| gateway RSS at the end | {rss_end:.0f} MB |
| every custom_id in the output exactly once | {complete} |
"""
    print(report)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"batch-10k-{time.strftime('%Y-%m-%d-%H%M')}.md").write_text(report)


if __name__ == "__main__":
    main()
