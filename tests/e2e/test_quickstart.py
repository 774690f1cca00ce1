"""The README quickstart, as a new user runs it: `seawall serve` with no
config (the real local model and embedder), the official openai SDK,
`seawall traces tail`, `seawall doctor`, and a clean SIGTERM shutdown."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import openai
import pytest

from tests.servers import free_port, wait_until_ready

SEAWALL = [sys.executable, "-m", "seawall.cli"]


Served = tuple[str, Path, subprocess.Popen[str]]


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    cwd = tmp_path_factory.mktemp("quickstart")
    port = free_port()
    env = {**os.environ, "SEAWALL_CONFIG": ""}
    proc = subprocess.Popen([*SEAWALL, "serve", "--port", str(port)], cwd=cwd, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    url = f"http://127.0.0.1:{port}"
    wait_until_ready(url, proc, within_s=120)
    yield url, cwd, proc
    if proc.poll() is None:
        proc.kill()


@pytest.mark.slow
def test_quickstart_with_the_local_model(served: Served) -> None:
    url, cwd, proc = served
    client = openai.OpenAI(base_url=url + "/v1", api_key="unused-on-loopback", max_retries=0)
    reply = client.chat.completions.create(
        model="local", messages=[{"role": "user", "content": "Name three colours."}],
        max_tokens=12, temperature=0)
    assert reply.choices[0].message.content and reply.usage and reply.usage.completion_tokens > 0
    text = "".join(c.choices[0].delta.content or "" for c in client.chat.completions.create(
        model="local", messages=[{"role": "user", "content": "Count to five."}], stream=True,
        max_tokens=12) if c.choices)
    assert text.strip()
    vec = client.embeddings.create(model="all-MiniLM-L6-v2", input=["hello", "world"])
    assert len(vec.data) == 2 and len(vec.data[0].embedding) == 384

    # The README's RAG step: `seawall ingest` beside the running server (its
    # default tenant is the keyless loopback caller's), then a grounded answer.
    docs = cwd / "docs"
    docs.mkdir()
    (docs / "deploys.md").write_text("# Deploys\n\n## Rollback\n\nTo roll back, run "
                                     "`deploy rollback --to previous`.\n")
    ingest = subprocess.run([*SEAWALL, "ingest", "docs", "--collection", "handbook"], cwd=cwd,
                            capture_output=True, text=True, timeout=120,
                            env={**os.environ, "SEAWALL_CONFIG": ""})
    assert ingest.returncode == 0 and "1 added" in ingest.stderr, ingest.stderr
    grounded = client.chat.completions.create(
        model="local", messages=[{"role": "user", "content": "How do I roll back?"}],
        max_tokens=12, temperature=0, extra_body={"rag": {"collection": "handbook"}})
    citations = grounded.model_extra["citations"]  # type: ignore[index]
    assert citations[0]["source"] == "docs/deploys.md"
    assert citations[0]["heading_path"] == ["Deploys", "Rollback"]

    # A clean stop: SIGTERM lets the server drain and flush its trace records.
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(30) == 0
    tail = subprocess.run([*SEAWALL, "traces", "tail", "--json", "-n", "10"], cwd=cwd,
                          capture_output=True, text=True, timeout=60, env={**os.environ,
                                                                           "SEAWALL_CONFIG": ""})
    rows = [json.loads(line) for line in tail.stdout.splitlines()]
    chat = [r for r in rows if r["endpoint"] == "chat.completions"]
    assert len(chat) == 3 and all(r["status"] == 200 for r in chat)
    assert chat[0]["deployment"] == "local/SmolLM2-135M-Instruct"
    assert chat[0]["tenant"] == "anonymous" and chat[0]["output"]
    rag = json.loads(chat[2]["rag"])
    assert rag["collection"] == "handbook" and "deploy rollback" in rag["chunks"][0]["text"]
    assert any(r["endpoint"] == "embeddings" for r in rows)


def test_doctor_reports_a_bad_config(tmp_path: Path) -> None:
    bad = tmp_path / "seawall.yaml"
    bad.write_text("models:\n  gpt-4o: {provider: openai}\n")
    out = subprocess.run([*SEAWALL, "doctor", "--config", str(bad)], capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 2
    assert "models.gpt-4o.provider: no provider named 'openai'" in out.stderr


def test_doctor_checks_a_good_config(tmp_path: Path) -> None:
    good = tmp_path / "seawall.yaml"
    good.write_text(f"data_dir: {tmp_path / 'data'}\nproviders:\n  f: {{type: fake}}\n"
                    "models:\n  m: {provider: f}\n")
    out = subprocess.run([*SEAWALL, "doctor", "--config", str(good), "--port",
                          str(free_port())], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr
    for line in ("data dir: ok", "store: ok", "port: ok", "token counter: ok", "provider f: ok"):
        assert line in out.stdout
