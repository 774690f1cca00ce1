"""Hostile connections against a real `seawall serve` process: what they cost it.

Starts `seawall serve` (default server settings, an in-process fake model)
on a free loopback port, then runs each abuse in turn while a probe asks
/health every 50 ms, and prints per abuse: the server's RSS before, its peak
(VmHWM, since start) and 2 s after, and the probe's median and worst latency.

    .venv/bin/python bench/conn_abuse.py [--clients 200]

Abuses: 10 MB bodies declared by Content-Length, 10 MB chunked bodies, 64 MB
headers, 20,000-header floods. Runs for about a minute; loopback only.
"""

from __future__ import annotations

import argparse
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path

import httpx
import yaml

MB = b"a" * (1 << 20)
CHUNK = b"100000\r\n" + MB + b"\r\n"


def status(pid: int, field: str) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    return float("nan")


def send_until_cut(port: int, head: bytes, chunks: Iterable[bytes]) -> None:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
            s.sendall(head)
            for c in chunks:
                s.sendall(c)
            while s.recv(65536):
                pass
    except OSError:
        pass


def post(extra: bytes) -> bytes:
    return (b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\n"
            b"content-type: application/json\r\n" + extra + b"\r\n")


ABUSES: dict[str, Callable[[int], None]] = {
    "10 MB declared bodies": lambda port: send_until_cut(
        port, post(b"content-length: 10485760\r\n"), (MB for _ in range(10))),
    "10 MB chunked bodies": lambda port: send_until_cut(
        port, post(b"transfer-encoding: chunked\r\n"), (CHUNK for _ in range(10))),
    "64 MB headers": lambda port: send_until_cut(
        port, b"GET /health HTTP/1.1\r\nx-big: ", (MB for _ in range(64))),
    "20,000 headers": lambda port: send_until_cut(
        port, b"GET /health HTTP/1.1\r\n",
        (b"".join(b"x-%d: v\r\n" % (i * 1000 + j) for j in range(1000)) for i in range(20))),
}


def probe(url: str, lat: list[float], stop: threading.Event) -> None:
    """GET /health every 50 ms until ``stop``; latencies into ``lat``."""
    while not stop.is_set():
        t0 = time.monotonic()
        try:
            httpx.get(url + "/health", timeout=30)
            lat.append(time.monotonic() - t0)
        except httpx.HTTPError:
            lat.append(float("inf"))
        stop.wait(0.05)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--clients", type=int, default=200, help="concurrent clients per abuse")
    ap.add_argument("--only", help="run only the abuses whose name contains this")
    args = ap.parse_args()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    d = Path(tempfile.mkdtemp())
    cfg = {"data_dir": str(d / "data"), "auth": {"allow_anonymous_loopback": True},
           "observe": {"json_logs": False},
           "providers": {"fake": {"type": "fake"}}, "models": {"m": {"provider": "fake"}}}
    (d / "seawall.yaml").write_text(yaml.safe_dump(cfg))
    proc = subprocess.Popen([sys.executable, "-m", "seawall.cli", "serve", "--config",
                             str(d / "seawall.yaml"), "--port", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(600):
            try:
                if httpx.get(url + "/ready").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        print(f"| abuse ({args.clients} clients) | RSS before MB | peak MB | after MB "
              "| probe p50 ms | probe max ms | took s |")
        print("|---|---:|---:|---:|---:|---:|---:|")
        for name, abuse in ABUSES.items():
            if args.only and args.only not in name:
                continue
            before = status(proc.pid, "VmRSS")
            lat: list[float] = []
            stop = threading.Event()
            p = threading.Thread(target=probe, args=(url, lat, stop))
            p.start()
            t0 = time.monotonic()
            threads = [threading.Thread(target=abuse, args=(port,)) for _ in range(args.clients)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            took = time.monotonic() - t0
            time.sleep(2)
            stop.set()
            p.join()
            print(f"| {name} | {before:.0f} | {status(proc.pid, 'VmHWM'):.0f} | "
                  f"{status(proc.pid, 'VmRSS'):.0f} | {statistics.median(lat) * 1000:.0f} | "
                  f"{max(lat) * 1000:.0f} | {took:.1f} |")
    finally:
        proc.terminate()
        proc.wait(30)


if __name__ == "__main__":
    main()
