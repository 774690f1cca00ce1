"""``seawall serve --workers N``: N processes on one port, supervised.

Real processes on the shared store (Postgres + Redis): the port answers while
a worker is killed and replaced, and SIGTERM to the parent drains every
worker and exits 0. With SQLite the flag is refused with a clear message.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import openai

from tests.servers import FakeUpstreamClient, serve_process
from tests.services import PostgresServer, RedisServer, create_database


def _children(pid: int) -> set[int]:
    """The worker processes (not multiprocessing's resource tracker)."""
    out = subprocess.run(["ps", "-o", "pid=", "--ppid", str(pid)], capture_output=True,
                         text=True).stdout
    # The whole command line from /proc: ps cuts it at its output width, which
    # a long install path pushes "resource_tracker" past.
    return {int(p) for p in out.split() if "resource_tracker" not in _cmdline(int(p))}


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except FileNotFoundError:
        return "resource_tracker"  # gone already: not a worker to count


def test_workers_share_a_port_are_replaced_when_killed_and_drain_on_sigterm(
        tmp_path: Path, pg_server: PostgresServer, pg_template: str,
        redis_server: RedisServer, upstream: FakeUpstreamClient) -> None:
    upstream.reset()
    db = create_database(pg_server, template=pg_template)
    url, proc, _ = serve_process(tmp_path, upstream, args=("--workers", "2"),
                                 store={"kind": "postgres", "url": db},
                                 redis={"url": redis_server.url(9)})
    try:
        client = openai.OpenAI(base_url=url + "/v1", api_key="unused-on-loopback", max_retries=0)
        workers = _children(proc.pid)
        assert len(workers) == 2, workers
        for i in range(20):
            client.chat.completions.create(model="m", messages=[{"role": "user",
                                                                  "content": f"hi {i}"}])
        victim = min(workers)
        subprocess.run(["kill", "-9", str(victim)], check=True)
        deadline = time.monotonic() + 60
        while True:  # the port keeps answering (the other worker), the dead one is replaced
            now = _children(proc.pid)
            if len(now) == 2 and victim not in now:
                try:
                    if httpx.get(url + "/ready", timeout=5).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
            assert time.monotonic() < deadline, now
            time.sleep(0.2)
        client.chat.completions.create(model="m", messages=[{"role": "user", "content": "x"}])
        workers = _children(proc.pid)
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(60)
        assert code == 0, proc.stdout.read()[-3000:] if proc.stdout else ""
        assert not [p for p in workers if Path(f"/proc/{p}").exists()
                    and "zombie" not in Path(f"/proc/{p}/status").read_text().lower()]
    finally:
        if proc.poll() is None:
            proc.kill()


def test_workers_end_when_their_supervisor_is_killed(
        tmp_path: Path, pg_server: PostgresServer, pg_template: str,
        upstream: FakeUpstreamClient) -> None:
    db = create_database(pg_server, template=pg_template)
    url, proc, _ = serve_process(tmp_path, upstream, args=("--workers", "2"),
                                 store={"kind": "postgres", "url": db})
    workers = _children(proc.pid)
    assert len(workers) == 2
    proc.kill()
    proc.wait(10)
    deadline = time.monotonic() + 60
    while [p for p in workers if _alive(p)]:
        assert time.monotonic() < deadline, "workers outlived their supervisor"
        time.sleep(0.2)


def _alive(pid: int) -> bool:
    try:
        return "zombie" not in Path(f"/proc/{pid}/status").read_text().lower()
    except FileNotFoundError:
        return False


def test_workers_with_the_embedded_store_are_refused_with_a_reason(tmp_path: Path) -> None:
    conf = tmp_path / "seawall.yaml"
    conf.write_text(json.dumps({"data_dir": str(tmp_path / "data")}))
    r = subprocess.run([sys.executable, "-m", "seawall.cli", "serve", "--config", str(conf),
                        "--workers", "2"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 2
    assert "--workers above 1 needs store.kind: postgres" in r.stderr
