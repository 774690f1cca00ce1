"""Re-rankers: HTTP against the real fake upstream (TEI and Cohere formats),
MaxSim on the real MiniLM embedder, and the ONNX cross-encoder on tiny real
graphs built here (no cross-encoder weights exist offline)."""

from __future__ import annotations

import asyncio
import math
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from seawall.ml.assets import minilm_tokenizer_path
from seawall.ml.embedder import Embedder
from seawall.providers.fake_server import lexical_score
from seawall.rag.rerank import (
    HttpReranker,
    MaxSimReranker,
    OnnxCrossEncoder,
    Reranker,
    RerankError,
    build_reranker,
)
from tests.servers import FakeUpstreamClient, closed_port, run_asgi_in_thread, start_fake_upstream

QUERY = "reset my account password"
PASSAGES = [
    "The weather in Paris is sunny.",                        # 0 of 4 query words
    "Reset your password from the account page.",            # 3 of 4
    "My account was locked.",                                # 2 of 4
    "To reset my account password, open Settings.",          # 4 of 4
    "Password rules: twelve characters.",                    # 1 of 4
]


def ranking(scores: list[float]) -> list[int]:
    return sorted(range(len(scores)), key=lambda i: -scores[i])


@pytest.fixture
def fake(upstream: FakeUpstreamClient) -> FakeUpstreamClient:
    upstream.reset()
    return upstream


# -- HTTP ----------------------------------------------------------------------


@pytest.mark.parametrize("api", ["tei", "cohere"])
async def test_http_scores_follow_the_lexical_score_in_input_order(
        fake: FakeUpstreamClient, api: Any) -> None:
    reranker = HttpReranker(fake.base_url + "/", api=api, model="rr-test")
    try:
        scores = await reranker.score(QUERY, PASSAGES)
    finally:
        await reranker.close()
    assert scores == [lexical_score(QUERY, p) for p in PASSAGES]
    assert ranking(scores) == [3, 1, 2, 4, 0]
    calls = fake.calls()
    assert calls["completed"] == 1
    if api == "tei":
        assert calls["paths"] == ["/rerank"]
        assert calls["requests"][0] == {"query": QUERY, "texts": PASSAGES, "raw_scores": False}
    else:
        assert calls["paths"] == ["/v1/rerank"]
        assert calls["requests"][0] == {"model": "rr-test", "query": QUERY,
                                        "documents": PASSAGES, "top_n": len(PASSAGES)}


@pytest.mark.parametrize("api", ["tei", "cohere"])
async def test_http_batches_keep_alignment(fake: FakeUpstreamClient, api: Any) -> None:
    passages = [f"passage {i} " + " ".join(["reset", "account", "password"][: i % 4])
                for i in range(11)]
    reranker = HttpReranker(fake.base_url, api=api, max_batch=4)
    try:
        scores = await reranker.score(QUERY, passages)
    finally:
        await reranker.close()
    assert scores == [lexical_score(QUERY, p) for p in passages]
    calls = fake.calls()
    assert calls["completed"] == 3
    field = "texts" if api == "tei" else "documents"
    assert sorted(len(r[field]) for r in calls["requests"]) == [3, 4, 4]


async def test_http_session_is_reused_and_recreated_after_close(
        fake: FakeUpstreamClient) -> None:
    reranker = HttpReranker(fake.base_url)
    try:
        await reranker.score(QUERY, PASSAGES[:2])
        session = reranker._session
        await reranker.score(QUERY, PASSAGES[2:])
        assert reranker._session is session
        peers = fake.calls()["peers"]
        assert peers[0] == peers[1]  # one keep-alive connection
        await reranker.close()
        assert await reranker.score(QUERY, PASSAGES[:1]) == [0.0]
    finally:
        await reranker.close()
    assert await reranker.score(QUERY, []) == []


async def test_http_error_status_raises_rerank_error(fake: FakeUpstreamClient) -> None:
    fake.script(default={"error_status": 503})
    reranker = HttpReranker(fake.base_url, api="cohere")
    try:
        with pytest.raises(RerankError, match=r"/v1/rerank answered HTTP 503") as info:
            await reranker.score(QUERY, PASSAGES)
    finally:
        await reranker.close()
    assert info.value.status == 503
    assert info.value.url == fake.base_url + "/v1/rerank"
    assert fake.calls()["failed"] == 1


async def test_http_one_failed_batch_fails_the_call(fake: FakeUpstreamClient) -> None:
    fake.script(queue=[{}, {"error_status": 429}])
    reranker = HttpReranker(fake.base_url, max_batch=2)
    try:
        with pytest.raises(RerankError, match="429"):
            await reranker.score(QUERY, PASSAGES)
    finally:
        await reranker.close()


async def test_http_cut_short_body_raises_rerank_error(fake: FakeUpstreamClient) -> None:
    fake.script(default={"malformed_after_chunks": 0})
    reranker = HttpReranker(fake.base_url)
    try:
        with pytest.raises(RerankError, match="not JSON"):
            await reranker.score(QUERY, PASSAGES)
    finally:
        await reranker.close()


async def test_http_timeout_and_refused_connection_raise_rerank_error(
        fake: FakeUpstreamClient) -> None:
    fake.script(default={"hang": True})
    reranker = HttpReranker(fake.base_url, timeout_s=0.3)
    try:
        with pytest.raises(RerankError, match="failed") as info:
            await reranker.score(QUERY, PASSAGES)
        assert info.value.status is None
    finally:
        await reranker.close()
    refused = HttpReranker(f"http://127.0.0.1:{closed_port()}")
    try:
        with pytest.raises(RerankError, match=f"127.0.0.1:{closed_port()}/rerank"):
            await refused.score(QUERY, PASSAGES)
    finally:
        await refused.close()


async def test_http_bearer_auth() -> None:
    url, stop = start_fake_upstream(api_key="secret")
    good = HttpReranker(url, api_key="secret")
    bad = HttpReranker(url, api_key="wrong")
    try:
        assert len(await good.score(QUERY, PASSAGES)) == len(PASSAGES)
        with pytest.raises(RerankError) as info:
            await bad.score(QUERY, PASSAGES)
        assert info.value.status == 401
    finally:
        await good.close()
        await bad.close()
        stop()


def _replying(body: Any) -> Starlette:
    async def rerank(request: Request) -> JSONResponse:
        return JSONResponse(body)

    return Starlette(routes=[Route("/rerank", rerank, methods=["POST"]),
                             Route("/v1/rerank", rerank, methods=["POST"])])


@pytest.mark.parametrize(("api", "body"), [
    ("tei", [{"index": 0, "score": 0.5}]),                            # index 1 missing
    ("tei", [{"index": 0, "score": 0.5}, {"index": 7, "score": 1}]),  # out of range
    ("tei", {"results": []}),                                         # the other format
    ("cohere", {"results": [{"index": 0, "relevance_score": 1}, {"index": 1}]}),
    ("cohere", [{"index": 0, "score": 1}, {"index": 1, "score": 1}]),
])
async def test_http_malformed_reply_raises_rerank_error(api: Any, body: Any) -> None:
    with run_asgi_in_thread(_replying(body)) as url:
        reranker = HttpReranker(url, api=api)
        try:
            with pytest.raises(RerankError, match="no usable"):
                await reranker.score("q", ["a", "b"])
        finally:
            await reranker.close()


def test_http_url_and_options() -> None:
    assert HttpReranker("http://h:1/").url == "http://h:1/rerank"
    assert HttpReranker("http://h:1", api="cohere").url == "http://h:1/v1/rerank"
    assert HttpReranker("http://h/v2/rerank", api="cohere").url == "http://h/v2/rerank"
    assert HttpReranker("http://h/rerank/").url == "http://h/rerank"
    for bad in ({"api": "grpc"}, {"max_batch": 0}, {"timeout_s": 0}):
        with pytest.raises(ValueError):
            HttpReranker("http://h", **bad)
    with pytest.raises(ValueError, match="http"):
        HttpReranker("h:1")


# -- MaxSim on the real embedder -----------------------------------------------


@pytest.fixture(scope="module")
def embedder() -> Iterator[Embedder]:
    e = Embedder()
    e.warm_up()
    yield e


def test_token_vectors_drop_special_tokens_and_are_unit(embedder: Embedder) -> None:
    short, longer = embedder.token_vectors(["Hello, world!", "a much longer text than that"])
    assert short.shape == (4, embedder.dim)  # hello , world !  (no [CLS], [SEP], [PAD])
    assert longer.shape == (6, embedder.dim)
    for v in (short, longer):
        assert v.dtype == np.float32
        np.testing.assert_allclose(np.linalg.norm(v, axis=1), 1.0, atol=1e-5)
    (alone,) = embedder.token_vectors(["Hello, world!"])  # padding changes nothing
    np.testing.assert_allclose(alone, short, atol=1e-4)
    (words,) = embedder.token_vectors(["Hello, world!"], skip_punctuation=True)
    np.testing.assert_allclose(words, short[[0, 2]], atol=1e-6)
    assert embedder.token_vectors([]) == []
    assert embedder.token_vectors(["?!"], skip_punctuation=True)[0].shape == (0, embedder.dim)


def test_token_vectors_leave_embed_unchanged(embedder: Embedder) -> None:
    before = embedder.embed(["How do I reset my password?"])
    embedder.token_vectors(["How do I reset my password?"])
    np.testing.assert_array_equal(embedder.embed(["How do I reset my password?"]), before)


@pytest.mark.parametrize(("query", "relevant", "distractors"), [
    ("How do I reset my password?",
     "To reset your password, open Settings, choose Security and click Reset password.",
     ["Our office is closed on public holidays.",
      "Passwords must be at least twelve characters long.",
      "You can change the display language under Settings."]),
    ("who wrote the novel Dune",
     "Dune is a 1965 science-fiction novel by American author Frank Herbert.",
     ["Dune (2021) is a film directed by Denis Villeneuve.",
      "Sand dunes form where wind deposits sand in deserts.",
      "Isaac Asimov wrote the Foundation series."]),
    ("what does error E4012 mean",
     "E4012: the upload exceeded the 25 MB attachment limit.",
     ["E4021: the session token expired; sign in again.",
      "Error codes starting with E4 are client errors.",
      "Most errors can be fixed by restarting the application."]),
    ("error connection refused when starting postgres",
     "If psql reports connection refused, the PostgreSQL server is not running.",
     ["PostgreSQL supports JSONB columns with GIN indexes.",
      "The error permission denied means the user lacks privileges.",
      "Starting a business requires a plan and funding."]),
])
async def test_maxsim_ranks_the_relevant_passage_first(
        embedder: Embedder, query: str, relevant: str, distractors: list[str]) -> None:
    reranker = MaxSimReranker(embedder, batch_size=2)  # batches and length-sorting too
    for at in (0, len(distractors)):
        passages = [*distractors[:at], relevant, *distractors[at:]]
        scores = await reranker.score(query, passages)
        assert len(scores) == len(passages)
        assert ranking(scores)[0] == at
        assert all(-1.0 <= s <= 1.0 for s in scores)


async def test_maxsim_edge_cases(embedder: Embedder) -> None:
    reranker = MaxSimReranker(embedder)
    assert isinstance(reranker, Reranker)
    assert await reranker.score("anything", []) == []
    assert await reranker.score("???", ["a passage", "another"]) == [0.0, 0.0]
    assert (await reranker.score("hello", ["", "hello"]))[0] == 0.0
    truncated = MaxSimReranker(embedder, max_length=1)  # compares "the" only
    (full,) = await reranker.score("paris", ["the city of paris"])
    (cut,) = await truncated.score("paris", ["the city of paris"])
    assert cut < full
    await reranker.close()
    with pytest.raises(ValueError):
        MaxSimReranker(embedder, max_length=0)


# -- ONNX cross-encoder on tiny real graphs ------------------------------------


def _tokenizer() -> Any:
    from tokenizers import Tokenizer

    return Tokenizer.from_file(str(minilm_tokenizer_path()))


PARIS = _tokenizer().token_to_id("paris")


def _graph(path: Path, *, outputs: int = 1, inputs: tuple[str, ...] = (
        "input_ids", "attention_mask", "token_type_ids"), passage_only: bool = False) -> Path:
    """logits = how many times "paris" occurs (in the passage segment only, with
    ``passage_only``: token_type_ids == 1), shape (b, 1), or (b, 2) as [0, count]."""
    import onnx
    from onnx import TensorProto, helper

    nodes = [
        helper.make_node("Equal", ["input_ids", "paris"], ["hit"]),
        helper.make_node("Cast", ["hit"], ["hitf"], to=TensorProto.FLOAT),
    ]
    counted = "hitf"
    if passage_only:
        nodes += [helper.make_node("Cast", ["token_type_ids"], ["typef"], to=TensorProto.FLOAT),
                  helper.make_node("Mul", ["hitf", "typef"], ["counted"])]
        counted = "counted"
    sum_out = "count" if outputs == 2 else "logits"
    nodes.append(helper.make_node("ReduceSum", [counted, "axes"], [sum_out], keepdims=1))
    if outputs == 2:
        nodes += [helper.make_node("Mul", ["count", "zero"], ["zeros"]),
                  helper.make_node("Concat", ["zeros", "count"], ["logits"], axis=1)]
    graph = helper.make_graph(
        nodes, "toy-cross-encoder",
        [helper.make_tensor_value_info(n, TensorProto.INT64, ["b", "s"]) for n in inputs],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["b", outputs])],
        initializer=[helper.make_tensor("paris", TensorProto.INT64, [], [PARIS]),
                     helper.make_tensor("axes", TensorProto.INT64, [1], [1]),
                     helper.make_tensor("zero", TensorProto.FLOAT, [], [0.0])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8  # what any onnxruntime >= 1.18 reads
    onnx.checker.check_model(model)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))
    return path


@pytest.fixture
def toy_dir(tmp_path: Path) -> Path:
    pytest.importorskip("onnx")
    shutil.copy(minilm_tokenizer_path(), tmp_path / "tokenizer.json")
    return tmp_path


CITY = ["Berlin is big.", "Paris, Paris and Paris!", "I love Paris.", "paris or Paris"]


async def test_cross_encoder_single_logit(toy_dir: Path) -> None:
    encoder = OnnxCrossEncoder(_graph(toy_dir / "model.onnx"), batch_size=3)
    assert isinstance(encoder, Reranker)
    encoder.warm_up()  # tokenizer.json found next to the model
    scores = await encoder.score("where is the louvre?", CITY)
    assert scores == [0.0, 3.0, 1.0, 2.0]
    assert ranking(scores) == [1, 3, 2, 0]
    assert await encoder.score("q", []) == []
    await encoder.close()


async def test_cross_encoder_two_class_softmax(toy_dir: Path) -> None:
    encoder = OnnxCrossEncoder(_graph(toy_dir / "m2.onnx", outputs=2))
    scores = await encoder.score("louvre", CITY)
    for s, count in zip(scores, [0, 3, 1, 2], strict=True):
        assert s == pytest.approx(1 / (1 + math.exp(-count)), rel=1e-6)  # softmax([0, c])[1]


async def test_cross_encoder_pairs_and_truncates_the_passage(toy_dir: Path) -> None:
    model = _graph(toy_dir / "typed.onnx", passage_only=True)
    encoder = OnnxCrossEncoder(model, toy_dir / "tokenizer.json")
    # "paris" in the query is segment 0: only the passage's occurrences count.
    assert await encoder.score("paris paris", ["paris", "rome"]) == [1.0, 0.0]
    short = OnnxCrossEncoder(model, max_length=12)
    late = "one two three four five six seven eight nine ten paris"
    assert await short.score("where", ["paris " + late, late]) == [1.0, 0.0]
    # A query longer than max_length alone: falls back to longest-first truncation.
    long_query = " ".join(["word"] * 40)
    assert await short.score(long_query, ["paris", "rome"]) == [1.0, 0.0]


async def test_cross_encoder_feeds_only_the_declared_inputs(toy_dir: Path) -> None:
    encoder = OnnxCrossEncoder(_graph(toy_dir / "ids.onnx", inputs=("input_ids",)))
    assert await encoder.score("q", ["paris", "x"]) == [1.0, 0.0]


def test_cross_encoder_missing_files(tmp_path: Path, toy_dir: Path) -> None:
    with pytest.raises(FileNotFoundError, match="cross-encoder model_path.*absent.onnx"):
        OnnxCrossEncoder(tmp_path / "absent.onnx").warm_up()
    lonely = _graph(tmp_path / "lonely" / "model.onnx")
    with pytest.raises(FileNotFoundError, match="tokenizer.json"):
        OnnxCrossEncoder(lonely).warm_up()
    with pytest.raises(FileNotFoundError, match="nope.json"):
        OnnxCrossEncoder(lonely, tmp_path / "nope.json").warm_up()
    with pytest.raises(ValueError):
        OnnxCrossEncoder(lonely, batch_size=0)


def test_cross_encoder_rejects_a_graph_it_cannot_feed(toy_dir: Path) -> None:
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("Identity", ["pixel_values"], ["logits"])], "not-text",
        [helper.make_tensor_value_info("pixel_values", TensorProto.FLOAT, ["b", 1])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["b", 1])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.save(model, str(toy_dir / "vision.onnx"))
    with pytest.raises(ValueError, match="pixel_values"):
        OnnxCrossEncoder(toy_dir / "vision.onnx").warm_up()


# -- configuration ---------------------------------------------------------------


def test_build_reranker_kinds(tmp_path: Path) -> None:
    embedder = Embedder()  # only configuration: nothing loads
    assert build_reranker(None, embedder) is None
    assert build_reranker({"kind": "none"}, embedder) is None
    maxsim = build_reranker({"kind": "maxsim", "max_length": 128}, embedder)
    assert isinstance(maxsim, MaxSimReranker)
    assert maxsim.embedder is embedder and maxsim.max_length == 128
    http = build_reranker({"kind": "http", "url": "http://h:9", "api": "cohere",
                           "model": "m", "max_batch": 8}, embedder)
    assert isinstance(http, HttpReranker)
    assert (http.url, http.model, http.max_batch) == ("http://h:9/v1/rerank", "m", 8)
    onnx = build_reranker({"kind": "onnx", "model_path": str(tmp_path / "m.onnx"),
                           "tokenizer_path": str(tmp_path / "t.json")}, embedder)
    assert isinstance(onnx, OnnxCrossEncoder)
    assert onnx.tokenizer_path == tmp_path / "t.json"
    for r in (maxsim, http, onnx):
        assert isinstance(r, Reranker)
        assert r.name


@pytest.mark.parametrize(("spec", "message"), [
    ({"kind": "colbert"}, "unknown reranker kind 'colbert': valid kinds are maxsim, http, "
                          "onnx, none"),
    ({}, "unknown reranker kind None"),
    ({"kind": "http"}, "needs url"),
    ({"kind": "onnx"}, "needs model_path"),
    ({"kind": "maxsim", "url": "http://h"}, "unknown option.*url.*valid: max_length"),
    ({"kind": "http", "url": "http://h", "api": "grpc"}, "api must be"),
    (["maxsim"], "mapping"),
])
def test_build_reranker_errors(spec: Any, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        build_reranker(spec, Embedder())


async def test_local_rerankers_do_not_block_the_loop(embedder: Embedder) -> None:
    reranker = MaxSimReranker(embedder)
    ticks = 0

    async def tick() -> None:
        nonlocal ticks
        while True:
            ticks += 1
            await asyncio.sleep(0.001)

    ticker = asyncio.create_task(tick())
    try:
        await reranker.score("q", ["some passage text " * 40] * 16)
    finally:
        ticker.cancel()
    assert ticks > 3
