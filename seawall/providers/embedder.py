"""The in-process embedding model (all-MiniLM-L6-v2 int8 ONNX by default).

Inference runs in worker threads (onnxruntime releases the GIL), never on the
event loop. ``max_concurrency`` bounds how many batches run at once, since
each run already uses several cores; ``max_batch`` bounds one run's padding
and memory. Inputs are sorted by length before batching so a batch's short
texts are not padded to a long one's length, then put back in order.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import numpy as np

from seawall.api.wire import EmbeddingInputs
from seawall.config import EmbedderProviderSettings
from seawall.errors import InvalidRequest, ServiceUnavailable
from seawall.ml.assets import minilm_onnx_path, minilm_tokenizer_path, require_file
from seawall.ml.embedder import Embedder
from seawall.ml.tokens import load_encoding
from seawall.providers.base import Embeddings, Provider, ProviderStatus

__all__ = ["EmbedderProvider"]


class EmbedderProvider(Provider):
    """Embeddings from a local ONNX sentence-embedding model."""

    type = "embedder"
    supports_tools = False

    def __init__(self, name: str, settings: EmbedderProviderSettings) -> None:
        super().__init__(name)
        self.settings = settings
        model: Path = (require_file(settings.model_path, f"providers.{name}.model_path")
                       if settings.model_path else minilm_onnx_path())
        vocab: Path = (require_file(settings.tokenizer_path, f"providers.{name}.tokenizer_path")
                       if settings.tokenizer_path else minilm_tokenizer_path())
        self.embedder = Embedder(model_path=model, tokenizer_path=vocab)
        # The packaged model: the process may hand over the embedder it already
        # has (app.Services), so MiniLM is in memory once.
        self.packaged = settings.model_path is None and settings.tokenizer_path is None
        self._limit: asyncio.Semaphore | None = None
        self._state = "not started"

    async def start(self) -> None:
        if self._limit is not None:
            return
        self._state = "loading"
        try:
            await asyncio.to_thread(self.embedder.warm_up)
        except Exception as e:
            self._state = f"failed to load: {e}"
            raise
        self._limit = asyncio.Semaphore(self.settings.max_concurrency)
        self._state = "ready"

    async def close(self) -> None:
        self._limit = None
        self._state = "closed"

    def status(self) -> ProviderStatus:
        return ProviderStatus(ready=self._limit is not None, detail=self._state,
                              extra={"model_path": str(self.embedder.model_path),
                                     "dim": self.embedder.dim if self.embedder.ready else None})

    async def embed(self, inputs: EmbeddingInputs, model: str,
                    connect_timeout_s: float | None = None) -> Embeddings:
        limit = self._limit
        if limit is None:
            raise ServiceUnavailable(
                f"The embedding model {self.name!r} is {self._state}; retry shortly.",
                retry_after=1)
        if not inputs:
            return Embeddings(vectors=[], prompt_tokens=0)
        texts: list[str]
        if all(isinstance(t, str) for t in inputs):
            texts = inputs  # type: ignore[assignment]
        else:  # decoding grows with the input: off the event loop
            texts = await asyncio.to_thread(self._decode, inputs)
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        step = self.settings.max_batch
        parts: list[np.ndarray] = []
        tokens = 0
        for start in range(0, len(order), step):
            batch = [texts[i] for i in order[start:start + step]]
            async with limit:
                vectors, used = await asyncio.to_thread(self.embedder.embed_with_tokens, batch)
            parts.append(vectors)
            tokens += used
        stacked = np.concatenate(parts) if len(parts) > 1 else parts[0]
        result = np.empty_like(stacked)
        result[np.asarray(order)] = stacked
        return Embeddings(vectors=result.tolist(), prompt_tokens=tokens)

    def _decode(self, inputs: EmbeddingInputs) -> list[str]:
        """Inputs sent as token ids, back to text with ``token_encoding`` (the
        tokenizer the client used: the embedder has its own, so ids cannot be
        fed to it as they are)."""
        enc = load_encoding(self.settings.token_encoding)
        out: list[str] = []
        for i, item in enumerate(inputs):
            if isinstance(item, str):
                out.append(item)
                continue
            try:
                out.append(enc.decode(list(item)))  # type: ignore[arg-type]
            except KeyError as e:
                raise InvalidRequest(
                    f"input[{i}] has a token id that {self.settings.token_encoding} does not "
                    f"have ({e.args[0] if e.args else e}); providers.{self.name}.token_encoding "
                    "names the encoding token ids are decoded with.",
                    param=f"input[{i}]", code="invalid_token_ids") from None
        return out
