"""Re-rankers: re-score the passages retrieval found against the query, behind
one small interface so the RAG pipeline does not care where the scores come from.

* :class:`MaxSimReranker`: the offline default, needing no weights beyond the
  embedder's: ColBERT-style late interaction over MiniLM's token vectors.
* :class:`OnnxCrossEncoder`: an operator-supplied cross-encoder exported to ONNX
  (e.g. ``cross-encoder/ms-marco-MiniLM-L-6-v2`` via optimum): the most accurate
  local option, at one transformer pass per (query, passage) pair.
* :class:`HttpReranker`: a rerank server (Hugging Face text-embeddings-inference,
  or the Cohere format that Jina and vLLM also speak).

Local models do their CPU work in :func:`asyncio.to_thread`, so the event loop
keeps serving while they run. :func:`build_reranker` turns a config dict into one.
"""

from __future__ import annotations

import asyncio
import inspect
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal, Protocol, runtime_checkable

import numpy as np
import numpy.typing as npt

from seawall.ml.assets import require_file
from seawall.ml.embedder import Embedder
from seawall.ml.onnx import cpu_session

__all__ = [
    "HttpReranker",
    "MaxSimReranker",
    "OnnxCrossEncoder",
    "RerankError",
    "Reranker",
    "build_reranker",
]


@runtime_checkable
class Reranker(Protocol):
    """Scores passages for a query: one float per passage, in the passages'
    order, higher = more relevant. Scores compare within one call only (their
    scale differs between implementations)."""

    name: str

    def warm_up(self) -> None:
        """Load models now rather than on the first query (no-op over HTTP)."""

    async def score(self, query: str, passages: Sequence[str]) -> list[float]: ...

    async def close(self) -> None:
        """Release connections / sessions."""


class RerankError(RuntimeError):
    """A rerank server failed or answered something we cannot use. ``status``
    is the HTTP status (None when no answer came: refused, cut, timed out)."""

    def __init__(self, message: str, *, url: str, status: int | None = None) -> None:
        super().__init__(message)
        self.url = url
        self.status = status


# -- over HTTP ---------------------------------------------------------------


class HttpReranker:
    """A remote rerank endpoint. ``api="tei"``: ``POST {url}/rerank`` with
    ``texts``; ``api="cohere"``: ``POST {url}/v1/rerank`` with ``documents``
    (Cohere, Jina, vLLM). A ``url`` already ending in ``/rerank`` is used as is.
    Passages go in batches of ``max_batch``, sent concurrently (servers cap a
    request's size: TEI's ``--max-client-batch-size``, 32 by default). The
    client session is made on first use and kept for keep-alive, so a reranker
    belongs to one event loop."""

    def __init__(self, url: str, *, api: Literal["tei", "cohere"] = "tei",
                 model: str | None = None, api_key: str | None = None,
                 timeout_s: float = 10.0, max_batch: int = 32) -> None:
        if api not in ("tei", "cohere"):
            raise ValueError(f"api must be 'tei' or 'cohere', not {api!r}")
        if not timeout_s > 0:
            raise ValueError("timeout_s must be positive")
        if max_batch <= 0:
            raise ValueError("max_batch must be positive")
        base = url.rstrip("/")
        if not base.startswith(("http://", "https://")):
            raise ValueError(f"url must be an http(s) URL, not {url!r}")
        if not base.endswith("/rerank"):
            base += "/rerank" if api == "tei" else "/v1/rerank"
        self.url = base
        self.api = api
        self.model = model
        self.name = f"http-{api}"
        self.timeout_s = timeout_s
        self.max_batch = max_batch
        self._headers = {"content-type": "application/json"}
        if api_key:
            self._headers["authorization"] = f"Bearer {api_key}"
        self._session: Any = None

    def warm_up(self) -> None:
        """Nothing to load: the session needs a running loop, so it is made lazily."""

    async def score(self, query: str, passages: Sequence[str]) -> list[float]:
        if not passages:
            return []
        batches = [list(passages[i:i + self.max_batch])
                   for i in range(0, len(passages), self.max_batch)]
        tasks = [asyncio.ensure_future(self._score_batch(query, b)) for b in batches]
        try:
            results = await asyncio.gather(*tasks)
        except BaseException:  # one batch failed (or we were cancelled): stop the others
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            raise
        return [s for batch in results for s in batch]

    async def close(self) -> None:
        session, self._session = self._session, None
        if session is not None:
            await session.close()

    def _client(self) -> Any:
        import aiohttp

        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=self.timeout_s), headers=self._headers)
        return self._session

    def _body(self, query: str, texts: list[str]) -> dict[str, Any]:
        if self.api == "tei":
            return {"query": query, "texts": texts, "raw_scores": False}
        body: dict[str, Any] = {"query": query, "documents": texts, "top_n": len(texts)}
        if self.model is not None:
            body["model"] = self.model
        return body

    async def _score_batch(self, query: str, texts: list[str]) -> list[float]:
        import aiohttp
        import orjson

        try:
            async with self._client().post(self.url, data=orjson.dumps(
                    self._body(query, texts))) as resp:
                raw = await resp.read()
                if resp.status >= 400:
                    detail = raw[:300].decode(errors="replace")
                    raise RerankError(f"rerank server {self.url} answered HTTP {resp.status}: "
                                      f"{detail}", url=self.url, status=resp.status)
        except (aiohttp.ClientError, TimeoutError) as e:
            raise RerankError(f"rerank request to {self.url} failed: {e!r}",
                              url=self.url) from e
        try:
            reply = orjson.loads(raw)
        except orjson.JSONDecodeError as e:
            raise RerankError(f"rerank server {self.url} sent a body that is not JSON: "
                              f"{raw[:100]!r}", url=self.url, status=resp.status) from e
        return self._parse(reply, len(texts), resp.status)

    def _parse(self, reply: Any, n: int, status: int) -> list[float]:
        """Scores in input order from ``[{index, score}]`` (TEI) or
        ``{"results": [{index, relevance_score}]}`` (Cohere), in any order."""
        items, key = ((reply, "score") if self.api == "tei" else
                      (reply.get("results") if isinstance(reply, dict) else None,
                       "relevance_score"))
        scores: list[float | None] = [None] * n
        for item in items if isinstance(items, list) else ():
            index = item.get("index") if isinstance(item, dict) else None
            value = item.get(key) if isinstance(item, dict) else None
            if (isinstance(index, int) and 0 <= index < n and isinstance(value, int | float)
                    and not isinstance(value, bool)):
                scores[index] = float(value)
        missing = [i for i, s in enumerate(scores) if s is None]
        if missing:
            raise RerankError(f"rerank server {self.url} sent no usable {key!r} for "
                              f"{len(missing)} of {n} passages (first: index {missing[0]})",
                              url=self.url, status=status)
        return [s for s in scores if s is not None]


# -- local cross-encoder -----------------------------------------------------

_INT_TYPES: dict[str, type[np.integer[Any]]] = {
    "tensor(int64)": np.int64, "tensor(int32)": np.int32}
_INPUTS = ("input_ids", "attention_mask", "token_type_ids")


class OnnxCrossEncoder:
    """A cross-encoder in ONNX: reads query and passage together, so it sees
    their interactions (the best local precision, at a full model pass per
    passage). ``tokenizer.json`` is looked for next to the model unless given.
    Output ``(b, 1)`` is the score; ``(b, 2)`` is a classifier whose class 1
    means relevant (softmax probability). Files are checked in :meth:`warm_up`."""

    name = "onnx-cross-encoder"

    def __init__(self, model_path: str | Path, tokenizer_path: str | Path | None = None, *,
                 max_length: int = 512, batch_size: int = 16,
                 threads: int | None = None) -> None:
        if max_length <= 0 or batch_size <= 0:
            raise ValueError("max_length and batch_size must be positive")
        if threads is not None and threads <= 0:
            raise ValueError("threads must be positive (or None for onnxruntime's default)")
        self.model_path = Path(model_path)
        self.tokenizer_path = (Path(tokenizer_path) if tokenizer_path
                               else self.model_path.parent / "tokenizer.json")
        self.max_length = max_length
        self.batch_size = batch_size
        self.threads = threads
        self._session: Any = None
        self._tokenizer: Any = None
        self._fallback: Any = None  # longest-first truncation, for queries too long alone
        self._inputs: dict[str, type[np.integer[Any]]] = {}
        self._output = ""
        self._lock = threading.Lock()

    def warm_up(self) -> None:
        """Load the graph and the tokenizer. Idempotent."""
        if self._session is not None:
            return
        with self._lock:
            if self._session is not None:
                return

            model = require_file(self.model_path, "cross-encoder model_path")
            if not self.tokenizer_path.expanduser().is_file():
                raise FileNotFoundError(
                    f"cross-encoder tokenizer_path: no file at {self.tokenizer_path} (pass "
                    f"tokenizer_path, or put the model's tokenizer.json next to {model.name})")
            self._tokenizer = self._load_tokenizer("only_second")
            self._fallback = self._load_tokenizer("longest_first")

            session = cpu_session(model, self.threads)
            inputs = {i.name: i.type for i in session.get_inputs()}
            unknown = sorted(set(inputs) - set(_INPUTS))
            if "input_ids" not in inputs or unknown:
                raise ValueError(f"{model}: a cross-encoder takes {', '.join(_INPUTS)}; "
                                 f"this graph declares {sorted(inputs)}")
            outputs = [o.name for o in session.get_outputs()]
            self._inputs = {k: _INT_TYPES.get(v, np.int64) for k, v in inputs.items()}
            self._output = "logits" if "logits" in outputs else outputs[0]
            self._session = session

    def _load_tokenizer(self, strategy: str) -> Any:
        from tokenizers import Tokenizer

        tokenizer = Tokenizer.from_file(str(self.tokenizer_path.expanduser()))
        try:
            tokenizer.enable_truncation(max_length=self.max_length, strategy=strategy)
        except (ValueError, TypeError):  # a tokenizers without that strategy
            tokenizer.enable_truncation(max_length=self.max_length)
        # Pad to the longest pair of the batch (an exported tokenizer.json often
        # pads to a fixed length), with the model's own pad token.
        padding = tokenizer.padding or {}
        pad_token = padding.get("pad_token") or next(
            (t for t in ("[PAD]", "<pad>") if tokenizer.token_to_id(t) is not None), "[PAD]")
        pad_id = padding.get("pad_id", tokenizer.token_to_id(pad_token) or 0)
        tokenizer.enable_padding(pad_id=pad_id, pad_token=pad_token)
        return tokenizer

    async def score(self, query: str, passages: Sequence[str]) -> list[float]:
        if not passages:
            return []
        return await asyncio.to_thread(self._score, query, list(passages))

    async def close(self) -> None:
        """Nothing held but memory: the session goes with the object."""

    def _score(self, query: str, passages: list[str]) -> list[float]:
        self.warm_up()
        # Similar lengths together: less padding, so less wasted compute.
        order = sorted(range(len(passages)), key=lambda i: len(passages[i]))
        scores = [0.0] * len(passages)
        for start in range(0, len(order), self.batch_size):
            batch = order[start:start + self.batch_size]
            for i, s in zip(batch, self._score_batch(query, [passages[i] for i in batch]),
                            strict=True):
                scores[i] = s
        return scores

    def _score_batch(self, query: str, passages: list[str]) -> list[float]:
        pairs = [(query, p) for p in passages]
        try:
            encodings = self._tokenizer.encode_batch(pairs)
        except Exception:  # only_second fails when the query alone is too long
            encodings = self._fallback.encode_batch(pairs)
        columns = {"input_ids": [e.ids for e in encodings],
                   "attention_mask": [e.attention_mask for e in encodings],
                   "token_type_ids": [e.type_ids for e in encodings]}
        feeds = {k: np.array(columns[k], dtype=dtype) for k, dtype in self._inputs.items()}
        (logits,) = self._session.run([self._output], feeds)
        return _relevance(np.asarray(logits, dtype=np.float64), self.model_path)


def _relevance(logits: npt.NDArray[np.float64], model: Path) -> list[float]:
    """One relevance per row: the logit of a 1-output head, P(class 1) of a 2-way one."""
    if logits.ndim == 2 and logits.shape[1] == 2:
        shifted = logits - logits.max(axis=1, keepdims=True)
        probs = np.exp(shifted) / np.exp(shifted).sum(axis=1, keepdims=True)
        return [float(p) for p in probs[:, 1]]
    if logits.ndim == 2 and logits.shape[1] == 1:
        return [float(v) for v in logits[:, 0]]
    if logits.ndim == 1:
        return [float(v) for v in logits]
    raise ValueError(f"{model}: expected logits of shape (batch, 1) or (batch, 2), "
                     f"got {logits.shape}")


# -- late interaction on the embedder ----------------------------------------


class MaxSimReranker:
    """ColBERT-style MaxSim over the embedder's token vectors: for each query
    token, the best cosine with any passage token, averaged over the query's
    tokens (the mean ranks exactly like the sum, the query being the same for
    every passage, but stays in [-1, 1] whatever the query's length).
    Punctuation is skipped on both sides: "?" would otherwise match every
    question mark. Costs about one embedding pass over the passages.

    ``max_length`` caps the passage tokens compared; what the model reads is
    bounded by the embedder's own ``max_length``."""

    name = "maxsim"

    def __init__(self, embedder: Embedder, *, max_length: int = 256,
                 batch_size: int = 16) -> None:
        if max_length <= 0 or batch_size <= 0:
            raise ValueError("max_length and batch_size must be positive")
        self.embedder = embedder
        self.max_length = max_length
        self.batch_size = batch_size

    def warm_up(self) -> None:
        self.embedder.warm_up()

    async def score(self, query: str, passages: Sequence[str]) -> list[float]:
        if not passages:
            return []
        return await asyncio.to_thread(self._score, query, list(passages))

    async def close(self) -> None:
        """The embedder is shared: its owner closes it."""

    def _score(self, query: str, passages: list[str]) -> list[float]:
        (q,) = self.embedder.token_vectors([query], skip_punctuation=True)
        order = sorted(range(len(passages)), key=lambda i: len(passages[i]))
        scores = [0.0] * len(passages)
        if len(q) == 0:  # nothing but punctuation: no evidence for any passage
            return scores
        for start in range(0, len(order), self.batch_size):
            batch = order[start:start + self.batch_size]
            vectors = self.embedder.token_vectors([passages[i] for i in batch],
                                                  skip_punctuation=True)
            for i, tokens in zip(batch, vectors, strict=True):
                p = tokens[:self.max_length]
                scores[i] = float((q @ p.T).max(axis=1).mean()) if len(p) else 0.0
        return scores


# -- configuration -------------------------------------------------------------

_KINDS: dict[str, type[Any]] = {
    "maxsim": MaxSimReranker, "http": HttpReranker, "onnx": OnnxCrossEncoder}


def build_reranker(spec: Mapping[str, Any] | None, embedder: Embedder) -> Reranker | None:
    """The reranker a config dict describes: ``{"kind": "maxsim" | "http" |
    "onnx" | "none", **constructor options}``; None or kind "none": no re-ranking.
    Unknown kinds or options are a ValueError that lists the valid ones."""
    if spec is None:
        return None
    if not isinstance(spec, Mapping):
        raise ValueError(f"a reranker spec is a mapping with a 'kind', not {spec!r}")
    options = dict(spec)
    kind = options.pop("kind", None)
    valid = ", ".join([*_KINDS, "none"])
    if kind == "none":
        return None
    cls = _KINDS.get(kind) if isinstance(kind, str) else None
    if cls is None:
        raise ValueError(f"unknown reranker kind {kind!r}: valid kinds are {valid}")
    params = dict(inspect.signature(cls).parameters)
    params.pop("embedder", None)
    unknown = sorted(set(options) - set(params))
    if unknown:
        raise ValueError(f"reranker kind {kind!r}: unknown option(s) {', '.join(unknown)}; "
                         f"valid: {', '.join(params)}")
    missing = [n for n, p in params.items()
               if p.default is inspect.Parameter.empty and n not in options]
    if missing:
        raise ValueError(f"reranker kind {kind!r} needs {', '.join(missing)}")
    reranker: Reranker = cls(embedder, **options) if cls is MaxSimReranker else cls(**options)
    return reranker
