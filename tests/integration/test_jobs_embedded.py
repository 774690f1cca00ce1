"""The embedded default: jobs run inside the gateway, on the SQLite queue,
and ``seawall jobs`` steers them from another process while it serves."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from tests.gateway import run_gateway


def sw(conf: Path, *args: str, ok: bool = True) -> subprocess.CompletedProcess[str]:
    r = subprocess.run([sys.executable, "-m", "seawall.cli", "jobs", *args, "-c", str(conf)],
                       capture_output=True, text=True, timeout=120)
    if ok:
        assert r.returncode == 0, (args, r.stdout, r.stderr)
    return r


def show(conf: Path, job_id: str) -> dict[str, Any]:
    return json.loads(sw(conf, "show", job_id).stdout)  # type: ignore[no-any-return]


def wait_state(conf: Path, job_id: str, state: str, within_s: float = 60) -> dict[str, Any]:
    deadline = time.monotonic() + within_s
    while True:
        job = show(conf, job_id)
        if job["state"] == state or time.monotonic() > deadline:
            assert job["state"] == state, job
            return job
        time.sleep(0.2)


def test_jobs_run_in_the_gateway_and_the_cli_steers_them(tmp_path: Path) -> None:
    config = {"providers": {"f": {"type": "fake"}}, "models": {"m": {"provider": "f"}},
              "jobs": {"lease_s": 0.6, "poll_s": 0.05}}
    conf = tmp_path / "cli.yaml"
    conf.write_text(json.dumps({"data_dir": str(tmp_path / "data"), **config}))
    with run_gateway(config, tmp_path) as gw:
        assert gw.services.job_runner is not None
        quick = sw(conf, "enqueue", "sleep", "--payload", '{"seconds": 0, "result": 1}')
        done = wait_state(conf, quick.stdout.strip(), "succeeded")
        assert done["result"]["result"] == 1
        assert done["result"]["worker"] == gw.services.job_runner.owner

        slow = sw(conf, "enqueue", "sleep", "--payload", '{"seconds": 600}').stdout.strip()
        wait_state(conf, slow, "running")
        assert "its runner stops it" in sw(conf, "cancel", slow).stdout
        wait_state(conf, slow, "cancelled")

        bad = sw(conf, "enqueue", "sleep", "--payload", '{"fail": "permanent"}').stdout.strip()
        failed = wait_state(conf, bad, "failed")
        assert failed["error"] == "sleep: asked to fail"
        assert bad in sw(conf, "retry", bad).stdout
        wait_state(conf, bad, "failed")
        listed = [json.loads(line) for line in
                  sw(conf, "list", "--state", "failed", "--json").stdout.splitlines()]
        assert [j["id"] for j in listed] == [bad]
        assert "queued 0, running 0" in sw(conf, "list").stderr

        later = sw(conf, "enqueue", "sleep", "--delay-s", "3600").stdout.strip()
        assert "cancelled" in sw(conf, "cancel", later).stdout
        r = sw(conf, "retry", quick.stdout.strip(), ok=False)
        assert r.returncode == 1 and "no dead, failed or cancelled job" in r.stderr
        assert "no job" in sw(conf, "show", "job_missing", ok=False).stderr
        assert "not JSON" in sw(conf, "enqueue", "sleep", "--payload", "{", ok=False).stderr
