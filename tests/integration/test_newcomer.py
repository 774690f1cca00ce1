"""The newcomer's first hour (issue 14): commands find the same store from any
folder and say which one they use; a 401 on loopback says why; `seawall doctor`
really reaches the upstreams; `seawall ingest --url` feeds a running gateway."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
import yaml

from tests.gateway import Running, run_gateway
from tests.servers import (
    FakeUpstreamClient,
    blackhole_listener,
    closed_port,
    free_port,
    run_asgi_in_thread,
    wait_until_ready,
)

pytestmark = pytest.mark.timeout(240)

MASTER = "sk-master-newcomer"
FIXTURES = Path(__file__).parent.parent / "fixtures" / "rag"


def cli(args: list[str], cwd: Path, **env: str) -> subprocess.CompletedProcess[str]:
    """``seawall ARGS`` run from ``cwd``, with no config or home from the outer
    environment unless given."""
    return subprocess.run([sys.executable, "-m", "seawall.cli", *args], cwd=cwd,
                          capture_output=True, text=True, timeout=180,
                          env={**os.environ, "SEAWALL_CONFIG": "", "SEAWALL_HOME": "", **env})


def write(path: Path, config: dict[str, Any]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(config))
    return path


# -- one store, named by every command -------------------------------------------


def test_commands_use_the_config_folders_store_from_any_folder(tmp_path: Path) -> None:
    conf = write(tmp_path / "proj" / "seawall.yaml",
                 {"data_dir": "data", "providers": {"f": {"type": "fake"}},
                  "models": {"m": {"provider": "f"}}})
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    store = conf.parent / "data"

    made = cli(["keys", "create", "--name", "from-elsewhere", "-c", str(conf)], elsewhere)
    assert made.returncode == 0, made.stderr
    assert f"using store {store} (data_dir in {conf})" in made.stderr
    assert not (elsewhere / "data").exists()
    listed = cli(["keys", "list", "-c", "proj/seawall.yaml"], tmp_path)
    assert "from-elsewhere" in listed.stdout, listed.stderr
    assert f"using store {store} " in listed.stderr

    # No config file: $SEAWALL_HOME, else .seawall in the working directory, said so.
    home = cli(["keys", "list"], elsewhere, SEAWALL_HOME=str(store))
    assert "from-elsewhere" in home.stdout and "($SEAWALL_HOME)" in home.stderr
    bare = cli(["traces", "tail"], elsewhere)
    assert bare.returncode == 0, bare.stderr
    assert f"using store {elsewhere / '.seawall'} (no config file" in bare.stderr


def test_serve_logs_the_store_at_start(tmp_path: Path, upstream: FakeUpstreamClient) -> None:
    port = free_port()
    conf = write(tmp_path / "seawall.yaml", {
        "server": {"port": port, "log_level": "info"},
        "providers": {"up": {"type": "openai", "base_url": upstream.base_url + "/v1"}},
        "models": {"m": {"provider": "up"}}})
    proc = subprocess.Popen([sys.executable, "-m", "seawall.cli", "serve", "-c", str(conf)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            cwd=tmp_path.parent, env={**os.environ, "SEAWALL_CONFIG": "",
                                                      "SEAWALL_HOME": ""})
    wait_until_ready(f"http://127.0.0.1:{port}", proc, within_s=60)
    proc.terminate()
    out, _ = proc.communicate(timeout=60)
    assert f"using store {tmp_path / '.seawall'} (beside {conf})" in out, out


# -- why a loopback caller gets a 401 --------------------------------------------------


@pytest.fixture(scope="module")
def locked(upstream: FakeUpstreamClient, tmp_path_factory: pytest.TempPathFactory
           ) -> Iterator[Running]:
    config = {"auth": {"master_key": MASTER},
              "providers": {"f": {"type": "openai", "base_url": upstream.base_url + "/v1"}},
              "models": {"m": {"provider": "f", "model": "fake-1"}}}
    with run_gateway(config, tmp_path_factory.mktemp("locked")) as running:
        yield running


def test_a_401_on_loopback_says_the_master_key_turned_anonymous_access_off(
        locked: Running) -> None:
    quickstart = openai.OpenAI(base_url=locked.url + "/v1", api_key="unused-on-loopback",
                               max_retries=0)
    with pytest.raises(openai.AuthenticationError) as e:
        quickstart.chat.completions.create(model="m",
                                           messages=[{"role": "user", "content": "hi"}])
    message = e.value.body["message"]  # type: ignore[index]
    # The quickstart's placeholder means "no key" (seawall.pipeline.stages.NO_KEY).
    assert message.startswith("Missing API key.")
    assert "auth.master_key set, so anonymous loopback access is off" in message
    assert "auth.allow_anonymous_loopback: true" in message
    r = httpx.post(locked.url + "/v1/chat/completions", json={"model": "m", "messages": []})
    assert r.status_code == 401
    assert r.json()["error"]["message"].startswith("Missing API key. This gateway has "
                                                   "auth.master_key set")
    ok = httpx.post(locked.url + "/v1/chat/completions", headers={"authorization":
                    f"Bearer {MASTER}"}, json={"model": "m", "messages": [
                        {"role": "user", "content": "hi"}]})
    assert ok.status_code == 200, ok.text


# -- doctor reaches the upstreams ------------------------------------------------------


def _doctor(tmp_path: Path, providers: dict[str, Any], *flags: str
            ) -> subprocess.CompletedProcess[str]:
    conf = write(tmp_path / "seawall.yaml", {"data_dir": "data", "providers": providers})
    return cli(["doctor", "-c", str(conf), "--skip-models", "--port", str(free_port()),
                *flags], tmp_path)


def test_doctor_reaches_each_upstream(tmp_path: Path, upstream: FakeUpstreamClient) -> None:
    out = _doctor(tmp_path, {
        "up": {"type": "openai", "base_url": upstream.base_url + "/v1", "api_key": "k"},
        "claude": {"type": "anthropic", "base_url": upstream.base_url, "api_key": "k"}})
    assert out.returncode == 0, out.stdout + out.stderr
    assert f"provider up: ok (openai, {upstream.base_url}/v1/models answered 200)" in out.stdout
    assert f"provider claude: ok (anthropic, {upstream.base_url}/v1/models answered 200)" \
        in out.stdout


async def _refuse_key(request: Any) -> Any:
    from starlette.responses import JSONResponse

    return JSONResponse({"error": {"message": "Incorrect API key provided: sk-bad"}},
                        status_code=401)


def test_doctor_says_what_failed_and_exits_non_zero(tmp_path: Path,
                                                    upstream: FakeUpstreamClient) -> None:
    from starlette.applications import Starlette
    from starlette.routing import Route

    dead = f"http://127.0.0.1:{closed_port()}/v1"
    locked = Starlette(routes=[Route("/v1/models", _refuse_key)])
    with run_asgi_in_thread(locked) as locked_url, blackhole_listener() as (host, port):
        silent = f"http://{host}:{port}/v1"
        providers = {"gone": {"type": "openai", "base_url": dead},
                     "wrong-path": {"type": "openai", "base_url": upstream.base_url},
                     "bad-key": {"type": "openai", "base_url": locked_url + "/v1",
                                 "api_key": "sk-bad"},
                     "silent": {"type": "anthropic", "base_url": silent}}
        out = _doctor(tmp_path, providers)
    assert out.returncode == 1, out.stdout
    assert f"provider gone: FAIL (openai, {dead}/models: connection refused" in out.stdout
    assert "provider wrong-path: FAIL (openai, " in out.stdout
    assert "/models: 404 no such path (check base_url" in out.stdout
    assert ("/v1/models: 401 the upstream refused the API key (check api_key); said: "
            '{"error":{"message":"Incorrect API key provided: sk-bad"}}') in out.stdout
    assert f"provider silent: FAIL (anthropic, http://{host}:{port}/v1/models: no answer " \
        "within 5s (timeout))" in out.stdout
    offline = _doctor(tmp_path, providers, "--no-network")
    assert offline.returncode == 0, offline.stdout
    assert f"provider gone: not contacted (--no-network; openai at {dead})" in offline.stdout


# -- ingest --url ------------------------------------------------------------------------


def _rag_config(upstream: FakeUpstreamClient) -> dict[str, Any]:
    return {
        "auth": {"master_key": MASTER},
        # The last batch (with a 34 kB PDF) overdraws this budget by a few
        # seconds' worth: the client must wait out the 429 and retry.
        "rag": {"ingest_bytes_per_minute_per_tenant": 40_000},
        "providers": {"f": {"type": "openai", "base_url": upstream.base_url + "/v1"}},
        "models": {"m": {"provider": "f", "model": "fake-1"}},
    }


def test_ingest_url_feeds_a_running_gateway_in_batches(upstream: FakeUpstreamClient,
                                                       tmp_path: Path) -> None:
    docs = tmp_path / "docs"
    shutil.copytree(FIXTURES, docs)
    (docs / "broken.pdf").write_bytes(b"not a pdf at all")
    with run_gateway(_rag_config(upstream), tmp_path) as gw:
        anonymous = cli(["ingest", "docs", "-C", "laptop", "--url", gw.url], tmp_path)
        assert anonymous.returncode == 1
        assert "401 Missing API key. This gateway has auth.master_key set" in anonymous.stderr
        assert "Traceback" not in anonymous.stderr

        run = cli(["ingest", "docs", "-C", "laptop", "--url", gw.url + "/v1",
                   "--batch-files", "2", "-m", "origin=laptop"], tmp_path,
                  SEAWALL_API_KEY=MASTER)
        assert run.returncode == 1, run.stderr  # one file failed, the rest stored
        rows = {line.split("\t")[3]: line.split("\t") for line in run.stdout.splitlines()}
        assert set(rows) == {f"docs/{p.name}" for p in docs.iterdir()}
        assert rows["docs/broken.pdf"][0] == "failed"
        assert "400" in rows["docs/broken.pdf"][4]
        for name in ("handbook.md", "page.html", "report.html", "report.pdf"):
            assert rows[f"docs/{name}"][:2] == ["added", "1"], rows[f"docs/{name}"]
        assert rows["docs/records.jsonl"][0] == "added" and int(rows["docs/records.jsonl"][1]) > 1
        assert "429" in run.stderr and "waiting" in run.stderr  # the byte quota, waited out
        assert "failed docs/broken.pdf" in run.stderr and "1 failed" in run.stderr

        r = httpx.post(gw.url + "/v1/collections/laptop/search",
                       headers={"authorization": f"Bearer {MASTER}"},
                       json={"query": "which Python version does Seawall need to install?",
                             "filter": {"origin": "laptop"}}, timeout=60)
        assert r.status_code == 200, r.text
        assert r.json()["data"][0]["source"] == "docs/handbook.md"


def test_ingest_url_waits_for_the_tenants_ingestion_slot(upstream: FakeUpstreamClient,
                                                         tmp_path: Path) -> None:
    """The per-tenant slot is refused before the body is read: with a large
    batch the server may close while the client still sends, and the 429 is
    lost; either way the client waits and sends the batch again."""
    config = {**_rag_config(upstream), "rag": {"max_concurrent_ingests_per_tenant": 1}}
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "a.md").write_text("# Otters\n\nSea otters hold hands while they sleep.")
    (docs / "big.pdf").write_bytes(b"%PDF-1.4\n" + b"x" * (6 << 20))  # refused once read
    release = threading.Event()

    def held_body() -> Iterator[bytes]:
        yield b'{"documents": ['
        release.wait(120)
        yield b'{"source": "held.md", "text": "# Held\\n\\nA slow upload."}]}'

    with run_gateway(config, tmp_path) as gw:
        holder = threading.Thread(target=lambda: httpx.post(
            gw.url + "/v1/collections/slot/documents", content=held_body(), timeout=120,
            headers={"authorization": f"Bearer {MASTER}", "content-type": "application/json"}))
        holder.start()
        try:
            deadline = time.monotonic() + 30
            while gw.services.rag.quota.by_tenant.get("default") != 1:
                assert time.monotonic() < deadline, "the slow upload never took its slot"
                time.sleep(0.05)
            proc = subprocess.Popen(
                [sys.executable, "-m", "seawall.cli", "ingest", "docs", "-C", "slot",
                 "--url", gw.url, "--key", MASTER], cwd=tmp_path, text=True,
                stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                env={**os.environ, "SEAWALL_CONFIG": "", "SEAWALL_HOME": ""})
            assert proc.stderr is not None
            seen = ""
            while "waiting" not in seen:
                line = proc.stderr.readline()
                assert line, f"the client never waited:\n{seen}"
                seen += line
        finally:
            release.set()
            holder.join(120)
        out, err = proc.communicate(timeout=180)
    assert proc.returncode == 1, seen + err
    rows = {line.split("\t")[3]: line.split("\t") for line in out.splitlines()}
    assert rows["docs/a.md"][0] == "added"
    assert rows["docs/big.pdf"][0] == "failed" and "400" in rows["docs/big.pdf"][4]
