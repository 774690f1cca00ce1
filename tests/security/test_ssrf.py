"""Server-side request forgery: the gateway itself never fetches a URL that
a client gives it.

The URLs a request can carry, and where each goes (read from the code):
* chat ``image_url`` parts (OpenAI wire) and Anthropic ``image`` blocks with
  ``source.type: url``: passed to the upstream model as they are (the
  anthropic provider turns an ``image_url`` into a ``url`` source); the
  upstream may fetch them, the gateway does not;
* Responses ``input_image.image_url`` and ``input_file.file_url``: translated
  into chat parts, or refused; never fetched;
* RAG documents: text or uploaded bytes only; ``source`` is a label (its
  extension picks the parser), and a ``url`` field is refused;
* batch lines: ``url`` must be the batch's endpoint path, never a URL;
* model names, ``x-seawall-*`` headers, ``traceparent``: names, not URLs.
Provider, reranker and webhook URLs come from the operator's config only.

The test points every one of them at a listener it runs on loopback and
asserts that, after all requests are answered, nothing connected to it."""

from __future__ import annotations

import io
import json
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from tests.gateway import Running, run_gateway
from tests.security.conftest import config, make_tenant
from tests.servers import FakeUpstreamClient

pytestmark = pytest.mark.timeout(120)


class Listener:
    """A TCP listener on loopback that counts connections (and answers none)."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.connections = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                continue
            self.connections += 1
            conn.close()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(2)
        self.sock.close()


@pytest.fixture
def listener() -> Iterator[Listener]:
    it = Listener()
    try:
        yield it
    finally:
        it.close()


@pytest.fixture(scope="module")
def gw2(upstream: FakeUpstreamClient, tmp_path_factory: pytest.TempPathFactory
        ) -> Iterator[Running]:
    cfg = config(upstream)
    cfg["providers"]["claude"] = {"type": "anthropic", "base_url": upstream.base_url,
                                  "api_key": "x"}
    cfg["models"]["claude"] = {"provider": "claude", "model": "claude-test"}
    with run_gateway(cfg, tmp_path_factory.mktemp("ssrf")) as running:
        yield running


def test_the_gateway_never_fetches_a_client_given_url(
        gw2: Running, upstream: FakeUpstreamClient, listener: Listener) -> None:
    t = make_tenant(gw2, "ssrf")
    h = t.http
    url = f"http://127.0.0.1:{listener.port}/secret.png"
    image = {"type": "image_url", "image_url": {"url": url}}
    answers: list[tuple[str, int]] = []

    def send(what: str, method: str, path: str, **kw: Any) -> Any:
        r = h.request(method, path, **kw)
        answers.append((what, r.status_code))
        assert r.status_code < 500, (what, r.text[:300])
        return r

    for model in ("m", "claude"):
        send(f"chat {model}", "POST", "/v1/chat/completions", json={
            "model": model, "messages": [{"role": "user", "content": [
                {"type": "text", "text": "what is this?"}, image]}]})
    send("messages", "POST", "/v1/messages", json={
        "model": "claude", "max_tokens": 20, "messages": [{"role": "user", "content": [
            {"type": "image", "source": {"type": "url", "url": url}},
            {"type": "text", "text": "what is this?"}]}]})
    send("responses image", "POST", "/v1/responses", json={
        "model": "m", "input": [{"role": "user", "content": [
            {"type": "input_text", "text": "hi"}, {"type": "input_image", "image_url": url}]}]})
    send("responses file", "POST", "/v1/responses", json={
        "model": "m", "input": [{"role": "user", "content": [
            {"type": "input_file", "file_url": url}]}]})
    send("rag url field", "POST", "/v1/collections/c/documents",
         json={"documents": [{"url": url}]})
    send("rag source", "POST", "/v1/collections/c/documents",
         json={"documents": [{"source": url, "text": "see the link"}]})
    send("rag text", "POST", "/v1/collections/c/documents",
         json={"documents": [{"source": "links.md", "text": f"![x]({url}) <img src='{url}'>",
                              "format": "markdown"}]})
    send("rag html", "POST", "/v1/collections/c/documents",
         files={"files": ("page.html", f"<html><img src='{url}'><a href='{url}'>x</a>"
                          f"<link rel=stylesheet href='{url}'></html>".encode())})
    line = json.dumps({"custom_id": "1", "method": "POST", "url": url,
                       "body": {"model": "m", "messages": [{"role": "user", "content": "x"}]}})
    f = send("file", "POST", "/v1/files", files={"file": ("b.jsonl", io.BytesIO(line.encode()))},
             data={"purpose": "batch"}).json()
    send("batch", "POST", "/v1/batches", json={"input_file_id": f["id"],
                                               "endpoint": "/v1/chat/completions",
                                               "completion_window": "24h"})
    send("model as url", "POST", "/v1/chat/completions", json={
        "model": url, "messages": [{"role": "user", "content": "x"}]})
    send("headers", "POST", "/v1/chat/completions", headers={
        "x-forwarded-host": f"127.0.0.1:{listener.port}", "referer": url,
        "traceparent": "00-" + "a" * 32 + "-" + "b" * 16 + "-01"},
        json={"model": "m", "messages": [{"role": "user", "content": url}]})
    # The image URLs did reach the upstream model unchanged (the test can fail).
    sent = json.dumps(upstream.calls()["requests"])
    assert url in sent
    assert sum(1 for _, s in answers if s == 200) >= 6, answers
    time.sleep(1.0)  # a background fetch (a batch line, a job) would have come by now
    assert listener.connections == 0, answers
