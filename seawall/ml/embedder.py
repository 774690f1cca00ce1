"""Sentence embeddings on the CPU with onnxruntime: no torch, no network.

The default model is all-MiniLM-L6-v2 with int8 weights (384 dimensions),
pooled the way sentence-transformers pools it: mean over the real tokens
(attention mask), then L2-normalised, so a dot product is a cosine.
"""

from __future__ import annotations

import threading
import unicodedata
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from seawall.ml.assets import minilm_onnx_path, minilm_tokenizer_path, require_file
from seawall.ml.onnx import cpu_session

__all__ = ["Embedder"]

FloatArray = npt.NDArray[np.float32]


class Embedder:
    """Text -> unit vectors. ``__init__`` only records configuration; the model
    loads in :meth:`warm_up` (or on first use). ``embed`` may be called from many
    threads at once: an onnxruntime session supports concurrent ``run``."""

    def __init__(
        self,
        model_path: str | Path | None = None,
        tokenizer_path: str | Path | None = None,
        max_length: int = 256,
        threads: int | None = None,
    ) -> None:
        if max_length <= 0:
            raise ValueError("max_length must be positive")
        if threads is not None and threads <= 0:
            raise ValueError("threads must be positive (or None for onnxruntime's default)")
        self.model_path = Path(model_path) if model_path else None
        self.tokenizer_path = Path(tokenizer_path) if tokenizer_path else None
        self.max_length = max_length
        self.threads = threads
        self._session: Any = None
        self._tokenizer: Any = None
        self._input_names: tuple[str, ...] = ()
        self._output_name = ""
        self._dim = 0
        self._lock = threading.Lock()
        self._base: Embedder | None = None

    def with_max_length(self, max_length: int) -> Embedder:
        """The same model, cutting inputs at another length: one ONNX session in
        memory however many parts of the process embed (cache, routing, RAG)."""
        other = Embedder(self.model_path, self.tokenizer_path, max_length, self.threads)
        other._base = self
        return other

    @property
    def ready(self) -> bool:
        return self._session is not None

    def warm_up(self) -> None:
        """Load the ONNX graph and the tokenizer (~0.1-0.3 s). Idempotent."""
        if self._session is not None:
            return
        with self._lock:
            if self._session is not None:
                return
            from tokenizers import Tokenizer

            if self._base is not None:
                self._base.warm_up()
            model = (require_file(self.model_path, "embedder model_path")
                     if self.model_path else minilm_onnx_path())
            vocab = (require_file(self.tokenizer_path, "embedder tokenizer_path")
                     if self.tokenizer_path else minilm_tokenizer_path())

            tokenizer = Tokenizer.from_file(str(vocab))
            # The shipped tokenizer.json pads every input to a fixed 128; pad to
            # the longest in the batch instead and truncate at our max_length.
            tokenizer.enable_truncation(max_length=self.max_length)
            pad_id = tokenizer.token_to_id("[PAD]")
            tokenizer.enable_padding(pad_id=pad_id if pad_id is not None else 0,
                                     pad_token="[PAD]" if pad_id is not None else "<pad>")

            session = (self._base._session if self._base is not None
                       else cpu_session(model, self.threads))

            inputs = tuple(i.name for i in session.get_inputs())
            if "input_ids" not in inputs:
                raise ValueError(f"{model}: the ONNX graph has no input_ids input ({inputs})")
            outputs = session.get_outputs()
            names = [o.name for o in outputs]
            # Token embeddings: last_hidden_state (or token_embeddings) of shape (b, s, d).
            out = next((o for o in outputs if o.name in ("last_hidden_state", "token_embeddings")),
                       next((o for o in outputs if len(o.shape) == 3), None))
            if out is None:
                raise ValueError(f"{model}: no token-embedding output among {names}")
            dim = out.shape[-1]
            self._tokenizer = tokenizer
            self._input_names = inputs
            self._output_name = out.name
            self._dim = dim if isinstance(dim, int) else 0
            self._session = session
        if self._dim == 0:  # symbolic dimension in the graph: ask the model once
            self._dim = int(self.embed(["dimension probe"]).shape[1])

    @property
    def dim(self) -> int:
        """Vector width (384 for MiniLM); loads the model if needed."""
        self.warm_up()
        return self._dim

    def _encode(self, texts: Sequence[str]) -> tuple[dict[str, npt.NDArray[np.int64]], int]:
        return self._feeds(self._tokenizer.encode_batch(list(texts)))

    def _feeds(self, encodings: list[Any]) -> tuple[dict[str, npt.NDArray[np.int64]], int]:
        """The graph's inputs for a tokenised batch, and its real-token count."""
        ids = np.array([e.ids for e in encodings], dtype=np.int64)
        mask = np.array([e.attention_mask for e in encodings], dtype=np.int64)
        feeds = {"input_ids": ids, "attention_mask": mask}
        if "token_type_ids" in self._input_names:
            feeds["token_type_ids"] = np.array([e.type_ids for e in encodings], dtype=np.int64)
        feeds = {k: v for k, v in feeds.items() if k in self._input_names}
        return feeds, int(mask.sum())

    def embed_with_tokens(self, texts: Sequence[str]) -> tuple[FloatArray, int]:
        """Unit vectors (float32, shape ``(n, dim)``) and the tokens the model read
        (special tokens included, after truncation): one tokenizer pass for both."""
        self.warm_up()
        if not texts:
            return np.zeros((0, self._dim), dtype=np.float32), 0
        feeds, tokens = self._encode(texts)
        (hidden,) = self._session.run([self._output_name], feeds)
        mask = feeds["attention_mask"][:, :, None].astype(np.float32)
        summed = (np.asarray(hidden, dtype=np.float32) * mask).sum(axis=1)
        pooled = summed / np.clip(mask.sum(axis=1), 1e-9, None)
        norms = np.linalg.norm(pooled, axis=1, keepdims=True)
        vectors: FloatArray = (pooled / np.clip(norms, 1e-12, None)).astype(np.float32)
        return vectors, tokens

    def embed(self, texts: Sequence[str]) -> FloatArray:
        """Unit vectors for ``texts`` (one ONNX run; callers choose the batch size)."""
        return self.embed_with_tokens(texts)[0]

    def token_vectors(self, texts: Sequence[str], *,
                      skip_punctuation: bool = False) -> list[FloatArray]:
        """Per text, the unit vectors of its real tokens (shape ``(t, dim)``, in
        order; [CLS]/[SEP]/padding dropped, and tokens made only of punctuation
        with ``skip_punctuation``): the input of late-interaction (MaxSim)
        re-ranking. One ONNX run, so callers choose the batch size."""
        self.warm_up()
        if not texts:
            return []
        encodings = self._tokenizer.encode_batch(list(texts))
        feeds, _ = self._feeds(encodings)
        (hidden,) = self._session.run([self._output_name], feeds)
        hidden = np.asarray(hidden, dtype=np.float32)
        out: list[FloatArray] = []
        for row, enc in zip(hidden, encodings, strict=True):
            keep = [i for i, (m, special, token) in enumerate(
                        zip(enc.attention_mask, enc.special_tokens_mask, enc.tokens, strict=True))
                    if m and not special and not (skip_punctuation and _punctuation(token))]
            vectors = row[keep]
            norms = np.linalg.norm(vectors, axis=1, keepdims=True)
            out.append((vectors / np.clip(norms, 1e-12, None)).astype(np.float32))
        return out

    def count_tokens(self, texts: Sequence[str]) -> int:
        """Tokens the model would read for ``texts`` (with [CLS]/[SEP], truncated)."""
        self.warm_up()
        if not texts:
            return 0
        return sum(sum(e.attention_mask) for e in self._tokenizer.encode_batch(list(texts)))


def _punctuation(token: str) -> bool:
    """A token made only of punctuation ("?", or "##." / "▁?" with a subword marker)."""
    text = token.removeprefix("##").lstrip("\u2581\u0120")
    return bool(text) and all(unicodedata.category(c).startswith("P") for c in text)
