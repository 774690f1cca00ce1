"""Prometheus metrics in a registry of the app's own (no global state).

Label values never come from the client: a model name is a label only if it
is configured (``models``, ``routes``), anything else is counted as
``unknown``; error types and codes are the gateway's own identifiers. So the
number of series is bounded by the configuration, whatever clients send.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable, Iterable
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from seawall.observe.records import TraceRecord

# Latency buckets from 5 ms to 2 min: covers a cache hit and a long generation.
_LATENCY = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 30, 60, 120)
_RAG = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5)
# Verifier time per candidate: microseconds usually, a millisecond at most.
_VERIFY = (0.00001, 0.000025, 0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.01)
_TTFT = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30)

UNKNOWN = "unknown"  # the label of every model name that is not configured
_IDENTIFIER = re.compile(r"[a-z0-9_.:/\-]{1,64}\Z")


def safe_label(value: str) -> str:
    """``value`` if it looks like one of our identifiers (an error code), else
    ``other``: a last guard, should a client's text ever reach a label."""
    return value if _IDENTIFIER.match(value) else "other"


class Metrics:
    def __init__(self, models: Iterable[str] = ()) -> None:
        """``models``: the configured model (and route) names, the only model
        label values besides ``unknown``."""
        self.models = frozenset(models)
        self._children: dict[tuple[str, str, str, int], tuple[Any, ...]] = {}
        self.registry = CollectorRegistry()
        r = self.registry
        labels = ("endpoint", "model", "deployment")
        self.requests = Counter("seawall_requests", "Requests answered, by HTTP status.",
                                (*labels, "status"), registry=r)
        self.errors = Counter("seawall_errors", "Failed requests, by error type and code.",
                              (*labels, "type", "code"), registry=r)
        self.latency = Histogram("seawall_request_duration_seconds",
                                 "Time from request to the last byte of the answer.",
                                 labels, buckets=_LATENCY, registry=r)
        self.ttft = Histogram("seawall_time_to_first_token_seconds",
                              "Time from request to the first content token.",
                              labels, buckets=_TTFT, registry=r)
        self.tokens = Counter("seawall_tokens", "Tokens processed.",
                              ("model", "deployment", "kind"), registry=r)
        self.cost = Counter("seawall_cost_usd", "Spend in USD from the configured price table.",
                            ("model", "deployment"), registry=r)
        self.inflight = Gauge("seawall_inflight_requests", "Requests being served now.",
                              registry=r)
        self.trace_queue = Gauge("seawall_trace_queue_depth",
                                 "Trace records in memory, not yet written "
                                 "to the store or the journal (queued, being written or "
                                 "held).", registry=r)
        self.trace_spilled = Counter("seawall_trace_records_spilled",
                                     "Trace records written to the local journal instead "
                                     "of the store (store slow, down or queue full).", registry=r)
        self.trace_held = Gauge("seawall_trace_records_held", "Trace records held in memory "
                                "because neither the store nor the journal can take them.",
                                registry=r)
        self.trace_dropped = Counter("seawall_trace_records_dropped", "Trace records lost: "
                                     "store, journal and memory buffer were all full.",
                                     registry=r)
        self.trace_quarantined = Counter("seawall_trace_records_quarantined", "Torn or "
                                         "corrupt journal lines moved to traces.quarantine "
                                         "at replay.", registry=r)
        self.background_restarts = Counter("seawall_background_restarts", "Background tasks "
                                           "restarted after an unexpected error.", ("task",),
                                           registry=r)
        # Change notices between replicas (seawall/store/bus.py).
        self.bus_events = Counter("seawall_change_notices", "Change notices by kind and "
                                  "result: sent, received (from another replica), lost "
                                  "(Redis did not take it).", ("kind", "result"), registry=r)
        self.bus_disconnects = Counter("seawall_change_bus_disconnects", "Times the change "
                                       "notice subscription lost Redis (each followed by a "
                                       "resync once back).", registry=r)
        self.trace_written = Counter("seawall_trace_records_written",
                                     "Trace records written to the store.", registry=r)
        self.spans_dropped = Counter("seawall_spans_dropped",
                                     "Spans not exported because the OTLP collector "
                                     "could not keep up.", registry=r)
        self.rate_limited = Counter("seawall_rate_limited", "Requests refused by a rate limit "
                                    "or by admission control.", ("limit",), registry=r)
        self.budget_thresholds = Counter(
            "seawall_budget_thresholds", "Budgets that passed 50, 80 or 100% of their limit "
            "in a period, by kind (key, tenant); each budget counted once per threshold "
            "and period per process.", ("kind", "threshold"), registry=r)
        self.redis_errors = Counter("seawall_redis_errors", "Redis calls that failed or timed "
                                    "out, by what needed them (limits, budgets).", ("what",),
                                    registry=r)
        self.redis_fallbacks = Counter("seawall_redis_fallbacks", "Decisions made on "
                                       "per-process state because Redis was unreachable "
                                       "(redis.fail_open).", ("what",), registry=r)
        # Connections (seawall/serving.py).
        self.connections = Gauge("seawall_open_connections", "Client connections open now.",
                                 registry=r)
        self.connections_closed = Counter("seawall_connections_closed", "Client connections "
                                          "closed by a connection limit.", ("limit",),
                                          registry=r)
        # Resilience.
        self.attempts = Counter("seawall_upstream_attempts", "Upstream attempts by outcome "
                                "(ok, an error code, cancelled, hedge_lost).",
                                ("deployment", "outcome"), registry=r)
        self.degraded = Counter("seawall_degraded", "Requests answered by a degraded mode.",
                                ("model", "mode"), registry=r)
        self.circuit_state = Gauge("seawall_circuit_state", "Circuit breaker state per "
                                   "deployment: 0 closed, 1 open, 2 half-open.",
                                   ("deployment",), registry=r)
        self.circuit_transitions = Counter("seawall_circuit_transitions", "Breaker state "
                                           "changes, by the state entered.",
                                           ("deployment", "state"), registry=r)
        self.retry_budget_refused = Counter("seawall_retry_budget_refused", "Retries or "
                                            "fallbacks not made because the process-wide "
                                            "retry budget was spent.", registry=r)
        self.deployment_inflight = Gauge("seawall_deployment_inflight", "Upstream attempts "
                                         "in flight per deployment.", ("deployment",),
                                         registry=r)
        self.feedback = Counter("seawall_feedback", "Answers rated (POST /v1/feedback), "
                                "by the sign of the score; a user's replacement is not "
                                "counted again.", ("score_sign",), registry=r)
        # Judges (docs/quality.md): labels are configured judge and rubric names.
        self.judge_sampled = Counter("seawall_judge_sampled", "Answers sampled for a judge.",
                                     ("judge",), registry=r)
        self.judge_scores = Counter("seawall_judge_scores", "Judge verdicts stored, by "
                                    "status: ok, failed (after its retries), not_applicable.",
                                    ("judge", "rubric", "status"), registry=r)
        self.judge_score = Histogram("seawall_judge_score", "Judge scores as a fraction of "
                                     "the rubric's scale (1.0 = best).", ("judge", "rubric"),
                                     buckets=(0.2, 0.4, 0.6, 0.8, 0.9, 1.0), registry=r)
        self.judge_cost = Counter("seawall_judge_cost_usd", "What judge calls cost, apart "
                                  "from clients' spend.", ("judge",), registry=r)
        self.judge_skipped = Counter("seawall_judge_skipped", "Sampled answers not judged: "
                                     "over_budget, queue_full, pending_full.",
                                     ("judge", "reason"), registry=r)
        # Response cache.
        self.cache_requests = Counter("seawall_cache_requests", "Chat requests by what the "
                                      "cache did: hit, semantic_hit, coalesced, miss, quarantined, "
                                      "bypass.",
                                      ("model", "result"), registry=r)
        self.cache_guard_rejections = Counter(
            "seawall_cache_guard_rejections", "Semantic candidates the false-hit guard or "
            "the verifier refused, by the check that refused them.", ("model", "check"),
            registry=r)
        self.cache_verify_seconds = Histogram(
            "seawall_cache_verify_seconds", "Time the verifier took per semantic candidate "
            "the guard passed.", buckets=_VERIFY, registry=r)
        self.cache_saved_tokens = Counter("seawall_cache_saved_tokens", "Tokens not spent "
                                          "upstream because the cache answered.", ("model",),
                                          registry=r)
        self.cache_saved_usd = Counter("seawall_cache_saved_usd", "Spend avoided because the "
                                       "cache answered (the original answer's cost).",
                                       ("model",), registry=r)
        self.cache_entries = Gauge("seawall_cache_entries", "Entries in the response cache.",
                                   registry=r)
        self.cache_quarantined = Counter("seawall_cache_quarantined", "Cache entries "
                                         "quarantined (no longer served), by reason: "
                                         "feedback, judge.", ("reason",), registry=r)
        self.cache_evictions = Counter("seawall_cache_evictions", "Cache entries removed, by "
                                       "reason: lru, expired.", ("reason",), registry=r)
        self.rag_search = Histogram("seawall_rag_search_seconds", "RAG search time by phase: "
                                    "embed, bm25, dense, rerank, total.", ("phase",),
                                    buckets=_RAG, registry=r)
        self.rag_ingested = Counter("seawall_rag_documents", "Documents through ingestion, by "
                                    "outcome: added, replaced, unchanged.", ("status",),
                                    registry=r)
        self.rag_index_builds = Counter("seawall_rag_index_loads", "Collection indexes made "
                                        "ready: built (from rows) or loaded (saved).", ("how",),
                                        registry=r)
        self.experiment_requests = Counter("seawall_experiment_requests", "Requests per "
                                           "experiment arm and outcome (ok, error).",
                                           ("experiment", "variant", "outcome"), registry=r)
        self.experiment_weight = Gauge("seawall_experiment_weight", "A canary's traffic share "
                                       "per arm, in percent.", ("experiment", "variant"),
                                       registry=r)
        self.route_decisions = Counter("seawall_route_decisions", "Routed requests by the "
                                       "tier (model) chosen.", ("route", "model"), registry=r)
        self.route_score = Histogram("seawall_route_score", "The router's P(cheap tier is good "
                                     "enough) per request.", ("route",),
                                     buckets=tuple(i / 10 for i in range(1, 11)), registry=r)
        # Job queue (seawall/jobs/): the depth gauges read the shared queue, so
        # every process reports the same figure (take max, not sum, across them).
        self.jobs_queued = Gauge("seawall_jobs_queued", "Jobs waiting to run, by kind.",
                                 ("kind",), registry=r)
        self.jobs_running = Gauge("seawall_jobs_running", "Jobs running under a lease, by "
                                  "kind.", ("kind",), registry=r)
        self.jobs_oldest_age = Gauge("seawall_jobs_oldest_queued_seconds", "How long the "
                                     "oldest runnable queued job has waited.", registry=r)
        self.jobs_finished = Counter("seawall_jobs", "Job runs in this process by kind and "
                                     "outcome: succeeded, retried, failed, dead, cancelled, "
                                     "lost (lease taken over), released (runner stopping).",
                                     ("kind", "outcome"), registry=r)
        self.job_duration = Histogram("seawall_job_duration_seconds", "Time a job run took, "
                                      "by kind.", ("kind",), buckets=_LATENCY, registry=r)
        self._before_render: list[Callable[[], None]] = []
        self._attempt_children: dict[tuple[str, str], Any] = {}

    def model_label(self, model: str) -> str:
        """The label for a model name a client sent: itself if configured."""
        return model if model in self.models else UNKNOWN

    def _series(self, endpoint: str, model: str, deployment: str, status: int) -> tuple[Any, ...]:
        """The labelled children for one label combination, looked up once."""
        key = (endpoint, model, deployment, status)
        found = self._children.get(key)
        if found is None:
            labels = key[:3]
            found = (self.requests.labels(*labels, str(status)), self.latency.labels(*labels),
                     self.ttft.labels(*labels), self.tokens.labels(model, deployment, "prompt"),
                     self.tokens.labels(model, deployment, "completion"),
                     self.cost.labels(model, deployment))
            self._children[key] = found
        return found

    def observe(self, rec: TraceRecord) -> None:
        """Count one finished request; called by the writer, off the request path."""
        model = self.model_label(rec.model)
        requests, latency, ttft, prompt, completion, cost = self._series(
            rec.endpoint, model, rec.deployment, rec.status)
        requests.inc()
        if rec.error_type:
            self.errors.labels(rec.endpoint, model, rec.deployment, safe_label(rec.error_type),
                               safe_label(rec.error_code) if rec.error_code else "").inc()
        latency.observe(rec.latency_ms / 1000)
        if rec.ttft_ms is not None:
            ttft.observe(rec.ttft_ms / 1000)
        if rec.prompt_tokens:
            prompt.inc(rec.prompt_tokens)
        if rec.completion_tokens:
            completion.inc(rec.completion_tokens)
        if rec.cost_usd:
            cost.inc(rec.cost_usd)
        for a in rec.attempts:
            key2 = (a.deployment, a.outcome)
            child = self._attempt_children.get(key2)
            if child is None:
                child = self._attempt_children[key2] = self.attempts.labels(*key2)
            child.inc()
        if rec.degraded:
            self.degraded.labels(model, safe_label(rec.degraded)).inc()

    def before_render(self, hook: Callable[[], None]) -> None:
        """Run ``hook`` before each scrape (for gauges read from live state)."""
        self._before_render.append(hook)

    def refresh(self) -> None:
        """Run the before-render hooks (they read live state: on the event loop)."""
        for hook in self._before_render:
            hook()

    def render(self) -> bytes:
        self.refresh()
        return generate_latest(self.registry)

    async def render_async(self) -> bytes:
        """:meth:`render` with the text built in a worker thread: rendering
        grows with the number of series and must not hold the event loop."""
        self.refresh()
        return await asyncio.to_thread(generate_latest, self.registry)
