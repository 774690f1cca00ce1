"""The composition root: builds every service from config, once.

No module-level singletons: tests build an app from a different Settings.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from seawall.api import (
    admin_routes,
    audit_routes,
    batch_routes,
    messages_routes,
    openai_routes,
    openapi,
    ops_routes,
    quality_routes,
    rag_routes,
    responses_routes,
)
from seawall.api.http import LiveStreams, error_response
from seawall.audit.config_changes import record_config_changes
from seawall.audit.record import Auditor
from seawall.batches.service import KIND as BATCH_KIND
from seawall.batches.service import BatchService
from seawall.cache.model_verify import Ask
from seawall.cache.service import ResponseCache
from seawall.cache.stage import CacheStage
from seawall.config import Settings
from seawall.console import api as console_api
from seawall.console import api_more as console_api_more
from seawall.console import routes as console_routes
from seawall.console.bridge import ConsoleBridge
from seawall.console.keyauth import ConsoleKeys
from seawall.console.service import Console
from seawall.errors import InvalidRequest, NotFound, SeawallError
from seawall.experiments.service import Experiments
from seawall.experiments.stage import ExperimentStage
from seawall.guardrails.moderation import Moderation
from seawall.guardrails.policy import Policies
from seawall.guardrails.redact import RecordRedactor
from seawall.guardrails.stage import GuardrailStage
from seawall.jobs.runner import JobRunner
from seawall.ml.tokens import TokenCounter, is_long
from seawall.observe.logs import current_trace_id
from seawall.observe.metrics import Metrics
from seawall.observe.records import TraceRecord
from seawall.observe.retention import keep_for, keep_traces_for
from seawall.observe.tracing import SpanExport
from seawall.observe.writer import TraceWriter
from seawall.pipeline.admission import AdmissionStage
from seawall.pipeline.budget_admin import BudgetLimits
from seawall.pipeline.context import RequestContext
from seawall.pipeline.permissions import PermissionStage
from seawall.pipeline.pipeline import Pipeline
from seawall.pipeline.spend import BudgetStage
from seawall.pipeline.stages import AuthStage, InvokeStage, LimitStage, RecordStage
from seawall.prompts.registry import PromptRegistry
from seawall.prompts.stage import PromptStage
from seawall.providers.embedder import EmbedderProvider
from seawall.providers.registry import ModelRegistry
from seawall.quality.alerts import AlertSink
from seawall.quality.evaluator import QualityEvaluator
from seawall.quality.judge_call import JudgeCaller
from seawall.quality.judges import KIND as JUDGE_KIND
from seawall.quality.judges import Judges
from seawall.quality.loop import QualityLoop
from seawall.rag.service import RagService
from seawall.rag.stage import RetrieveStage
from seawall.responses.service import ResponseService
from seawall.routing.breaker import BreakerState
from seawall.routing.route_stage import RouteStage
from seawall.routing.router import Router
from seawall.routing.shared_cooldowns import SharedCooldowns
from seawall.store.bus import ChangeBus
from seawall.store.factory import Stores

log = logging.getLogger("seawall")

CLOSE_STEP_S = 5.0  # longest any one part may take to close at shutdown
WRITER_STOP_S = 5.0  # the trace writer's share: what the store does not take goes to the journal

Endpoint = Callable[[Request], Awaitable[Response]]


class Services:
    """Everything a request needs, built from one Settings."""

    def __init__(self, settings: Settings, run_jobs: bool | None = None) -> None:
        """``run_jobs``: run the job runner here (default: ``jobs.run_in_server``;
        ``seawall worker`` passes True)."""
        self.settings = settings
        self.started_at = int(time.time())
        self._drain_scheduled = False
        self._retention: list[asyncio.Task[None]] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self.live_streams = LiveStreams()
        self.metrics = Metrics(models=[*settings.models, *settings.routes])
        # Every store, from one factory: SQLite files or the shared Postgres + Redis.
        self.stores = Stores(settings, self.metrics)
        self.store = self.stores.main
        self.key_store = self.stores.keys
        self.registry = ModelRegistry(settings, on_breaker_change=self._breaker_changed)
        self.router = Router(self.registry, settings.resilience,
                             on_budget_refused=self.metrics.retry_budget_refused.inc)
        self.metrics.before_render(self._deployment_gauges)
        obs = settings.observe
        spans = (SpanExport(obs.service_name, obs.otlp_endpoint, obs.otlp_protocol)
                 if obs.otlp_endpoint else None)
        self.tokens = TokenCounter()  # loads its encoding in start(), off the event loop
        self.writer = TraceWriter(self.store, self.metrics, obs.traces,
                                  Path(settings.data_dir) / "traces.journal",
                                  finalize=self._finalize, spans=spans)
        self.auth = AuthStage(settings.auth, self.key_store)
        # Change notices between replicas (Redis pub/sub; in-process without Redis).
        self.redis = self.stores.redis
        self.bus: ChangeBus = self.stores.bus()
        self.bus.subscribe("key_revoked", self.auth.key_revoked, resync=self.auth.forget_keys)
        self.bus.subscribe("key_changed", self.auth.key_revoked, resync=self.auth.forget_keys)
        self.cooldowns = (SharedCooldowns(self.registry, self.bus, self.redis)
                          if self.redis is not None else None)
        self.admission = AdmissionStage(settings.admission, self.metrics)
        self.cache_store = self.stores.cache_store(
            on_evict=lambda reason, n: self.metrics.cache_evictions.labels(reason).inc(n))
        ask_verifier: Ask | None = None  # cache.semantic.verify.model, through the router
        if settings.cache.semantic.verify.model:
            ask_verifier = JudgeCaller(self.registry, self.router).ask
        self.cache = ResponseCache(settings, self.cache_store, self.metrics,
                                   self.count_tokens, ask_verifier)
        self.metrics.before_render(lambda: self.metrics.cache_entries.set(len(self.cache_store)))
        self.router.stale_answer = self.cache.stale_answer
        # One MiniLM session per process: the embeddings API, cache, routing and
        # RAG (below) share the cache's embedder when they use the packaged model.
        for provider in self.registry.providers.values():
            if isinstance(provider, EmbedderProvider) and provider.packaged:
                provider.embedder = self.cache.embedder
        # Models and indexes load on first use: a gateway without RAG pays nothing.
        self.rag = RagService(settings.rag, self.stores.rag_store(), self.tokens,
                              embedder=self.cache.embedder.with_max_length(
                                  settings.rag.embed_max_tokens),
                              metrics=self.metrics)
        self.experiments = Experiments(
            settings, self.registry, self.store, self.metrics, bus=self.bus,
            lease=None if self.redis is None else self.stores.lease("experiments"),
            redis=self.redis)
        self.prompts = PromptRegistry(self.stores.prompt_store())
        self.responses = ResponseService(settings.responses, self.stores.responses(), self.tokens)
        self.feedback = self.stores.feedback()
        # The web console at /ui (docs/console.md): its reads, rollups and sessions.
        self.console = Console(settings, self.stores.pg)
        # Console sessions of virtual keys act as their key (seawall/console/keyauth.py).
        self.console_keys = ConsoleKeys(self.console.secret, self.auth)
        self.auth.console = self.console_keys.from_token
        # Alerts to webhooks (any part may send one) and the quality evaluator:
        # SLOs, drift (docs/quality.md).
        self.slo_store = self.stores.slo_store()
        self.alerts = AlertSink(settings.alerts, self.metrics, state=self.slo_store)
        self.quality = (QualityEvaluator(
            settings, self.slo_store, self.alerts, self.metrics, self.cache.embedder,
            lease=None if self.redis is None else self.stores.lease("quality"),
            history=self.stores.quality_history())
            if settings.quality.evaluate else None)
        # Ratings and judge scores act: quarantine cached answers, guard canaries.
        self.quality_loop = QualityLoop(settings, self.cache_store, self.experiments,
                                        self.store, self.metrics)
        self.audit = Auditor(self.stores.audit())  # admin actions (docs/security.md)
        self.scores = self.stores.scores()
        # The durable job queue (docs/jobs.md); its runner works here unless
        # jobs.run_in_server is false (then `seawall worker` processes run them).
        self.jobs = self.stores.jobs()
        # Judges (docs/quality.md): sampled on the record stage, scored as jobs;
        # each stored score goes to the quality loop (on_score).
        self.judges = Judges(settings.quality, self.jobs, self.scores,
                             JudgeCaller(self.registry, self.router), self.prompts,
                             self.metrics, hook=self.quality_loop)
        # A sample is as durable as its trace record (quality/judges.py).
        self.writer.follower = self.judges
        # A label moved by another replica or the CLI: resolve afresh at once.
        self.bus.subscribe("prompt_label", lambda event: self.prompts.invalidate(),
                           resync=self.prompts.invalidate)
        # Budgets: spend counters, and which budgets apply (key's, tenant's).
        self.budgets = self.stores.budgets()
        self.budget_limits = BudgetLimits(settings.limits, self.key_store,
                                          settings.auth.key_cache_ttl_s)
        self.bus.subscribe("tenant_budget", self.budget_limits.changed,
                           resync=self.budget_limits.changed)
        # PII and secret guardrails (docs/guardrails.md): a stage after retrieval
        # and before the cache, and the redaction of every trace record.
        guard = settings.guardrails
        self.guard_policies = Policies(guard)
        self.moderation = (Moderation(guard.moderation, self._ask_model)
                           if guard.moderation is not None else None)
        redact = RecordRedactor(guard, self.guard_policies) if guard.redact_traces else None
        self.pipeline = Pipeline([self.auth, self.admission], [
            PermissionStage(),  # the endpoint's scope and the model, before anything else
            LimitStage(settings.limits, self.stores.rate_limiter(), self.metrics,
                       self.count_tokens_async),
            ExperimentStage(self.experiments),
            PromptStage(self.prompts),
            RouteStage(settings, self.cache.embedder, self.metrics),
            RetrieveStage(settings, self.rag),
            GuardrailStage(guard, self.guard_policies, self.metrics, self.moderation,
                           settings.server.max_answer_chars),
            CacheStage(self.cache),
            BudgetStage(settings.limits, self.budgets, self.registry,
                        self.metrics, self.count_tokens_async, self.budget_limits,
                        self.alerts),
            InvokeStage(self.registry, self.router),
            RecordStage(obs.traces, self.writer, self.count_tokens_async, redact,
                        on_record=self.judges.sampler),
        ], self.metrics, max_answer_chars=settings.server.max_answer_chars)
        run_jobs = settings.jobs.run_in_server if run_jobs is None else run_jobs
        self.job_runner = JobRunner(self.jobs, settings.jobs, self.metrics) if run_jobs else None
        from seawall.api.responses_background import KIND, BackgroundResponses

        self.background = BackgroundResponses(self)  # background responses (docs/responses.md)
        if self.job_runner:
            self.job_runner.register(KIND, self.background.run)
        # The Files and Batch APIs (docs/batches.md): a batch runs as a job.
        self.batch_store = self.stores.files()
        self.batches = BatchService(
            settings.batches, self.batch_store, self,
            stopping=lambda: self.job_runner is not None and self.job_runner.stopping)
        if self.job_runner:
            self.job_runner.register(BATCH_KIND, self.batches.run)
            self.job_runner.register(JUDGE_KIND, self.judges.run)

    def begin_drain(self) -> None:
        """Shutdown started: refuse new work, keep serving what is in flight
        for ``shutdown.drain_timeout_s``, then end the streams still open
        with an error event (the server waits a little longer than that).
        Called from a signal handler: sets flags and schedules, nothing else."""
        self.admission.draining = True
        self.pipeline.draining = True
        loop = self._loop
        if loop is not None and not self._drain_scheduled:
            self._drain_scheduled = True
            loop.call_soon_threadsafe(loop.call_later, self.settings.shutdown.drain_timeout_s,
                                      self._cut_streams)

    def _cut_streams(self) -> None:
        n = self.live_streams.cut_all()
        if n:
            log.warning("drain timeout reached: ending %d open streams with an error event", n,
                        extra={"streams": n})

    def _breaker_changed(self, deployment: str, state: BreakerState) -> None:
        self.metrics.circuit_transitions.labels(deployment, state.label).inc()
        dep = self.registry.by_name.get(deployment)
        reason = dep.health.breaker.reason if dep is not None else ""
        log.warning("circuit %s for %s%s", state.label, deployment,
                    f" ({reason})" if reason and state is BreakerState.OPEN else "",
                    extra={"deployment": deployment, "circuit": state.label})

    def _deployment_gauges(self) -> None:
        for name, dep in self.registry.by_name.items():
            self.metrics.deployment_inflight.labels(name).set(dep.health.inflight)
            # Set here, at each scrape, not on every change: reading the state also
            # moves an open breaker whose cool-down is over to half-open, so the
            # gauge never shows a stale "open".
            self.metrics.circuit_state.labels(name).set(int(dep.health.breaker.state))

    async def _ask_model(self, ctx: RequestContext, model: str) -> str:
        """The text of ``model``'s answer to ``ctx`` (the moderation hook), through
        the router (retries, fallbacks, breakers), without the pipeline."""
        parts: list[str] = []
        stream = self.router.chat(ctx, self.registry.resolve(model, "chat"))
        try:
            async for item in stream:
                for chunk in item if isinstance(item, list) else (item,):
                    for choice in chunk.get("choices") or ():
                        text = (choice.get("delta") or {}).get("content")
                        if text:
                            parts.append(text)
        finally:
            await stream.aclose()
        return "".join(parts)

    def count_tokens(self, messages: list[Any], output: str) -> tuple[int, int]:
        """(prompt, completion) tokens, for when the upstream reported none."""
        return self.tokens.count_messages(messages), self.tokens.count(output)

    async def count_tokens_async(self, messages: list[Any], output: str,
                                 body_bytes: int = 0) -> tuple[int, int]:
        """:meth:`count_tokens`, in a worker thread when the texts are long
        (``body_bytes``: the request's size, a bound on the messages' text):
        counting grows with the text and must not hold the event loop."""
        if is_long(output, body_bytes):
            return await asyncio.to_thread(self.count_tokens, messages, output)
        return self.count_tokens(messages, output)

    async def estimate_usage(self, ctx: RequestContext) -> dict[str, int]:
        """The usage block of an answer whose upstream sent none."""
        messages = ctx.raw.get("messages", []) if ctx.raw else []
        prompt, completion = await self.count_tokens_async(messages, ctx.gatherer.text,
                                                           len(ctx.body))
        ctx.usage_estimated = True
        ctx.usage = {"prompt_tokens": prompt, "completion_tokens": completion,
                     "total_tokens": prompt + completion}
        return ctx.usage

    def _finalize(self, rec: TraceRecord) -> None:
        """Writer-side completion of a record: token estimates and their cost."""
        if rec.messages_for_count is not None:
            rec.prompt_tokens, rec.completion_tokens = self.count_tokens(*rec.messages_for_count)
            rec.messages_for_count = None
            dep = self.registry.by_name.get(rec.deployment)
            if dep is not None:
                rec.cost_usd = dep.cost(rec.prompt_tokens, rec.completion_tokens)

    async def _close_moderation(self) -> None:
        if self.moderation is not None:
            await self.moderation.close()

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        await self.stores.open()
        if self.settings.observe.traces.retention_days is not None:
            self._retention.append(asyncio.create_task(keep_traces_for(
                self.store, self.settings.observe.traces.retention_days, self.metrics)))
        await self.bus.start()
        if self.cooldowns is not None:
            await self.cooldowns.load()
        await self.writer.start()
        await self.registry.start()
        await self.cache.start()
        await self.experiments.start()
        await asyncio.to_thread(self.prompts.store.open)
        await self.responses.start()
        await self.feedback.open()
        await self.console.start()
        await self.scores.open()
        await self.slo_store.open()
        await self.alerts.start()
        if self.quality is not None:
            await self.quality.start()
        await self.audit.open()
        await record_config_changes(self.settings, self.audit)
        # Load the token encoder now rather than on the first request that needs it.
        await asyncio.to_thread(self.tokens.warm_up)
        if any(r.router != "rules" for r in self.settings.routes.values()):
            await asyncio.to_thread(self.cache.embedder.warm_up)  # routes embed each prompt
        await self.jobs.open()
        await self.batch_store.open()
        if self.settings.batches.retention_days is not None:
            self._retention.append(asyncio.create_task(keep_for(
                "batch", self.batch_store.expire, self.settings.batches.retention_days,
                self.metrics)))
        await self.judges.start()
        if self.job_runner is not None:
            await self.job_runner.start()

    async def _close_quality(self) -> None:
        if self.quality is not None:
            await self.quality.close()
        await self.alerts.close()
        await self.slo_store.close()

    async def close(self) -> None:
        """Every step runs, each bounded, whatever the others do: a failing
        or hung part must not keep the process (or the store's thread) alive."""

        async def prompts() -> None:
            self.prompts.close()

        for task in self._retention:
            task.cancel()

        async def jobs() -> None:
            if self.job_runner is not None:  # unfinished jobs are released, not lost
                await self.job_runner.stop(drain_s=CLOSE_STEP_S - 2)
            await self.judges.close()  # sampled answers still pending become jobs
            await self.jobs.close()
            await self.batch_store.close()

        steps: list[tuple[str, Callable[[], Awaitable[Any]], float]] = [
            ("jobs", jobs, CLOSE_STEP_S + 3),
            ("change bus", self.bus.close, CLOSE_STEP_S),
            ("quality loop", self.quality_loop.settle, CLOSE_STEP_S),
            ("providers", self.registry.close, CLOSE_STEP_S),
            ("cache", self.cache.close, CLOSE_STEP_S),
            ("rag", self.rag.aclose, CLOSE_STEP_S),
            ("experiments", self.experiments.close, CLOSE_STEP_S),
            ("prompts", prompts, CLOSE_STEP_S),
            ("responses", self.responses.close, CLOSE_STEP_S),
            ("feedback", self.feedback.close, CLOSE_STEP_S),
            ("console", self.console.close, CLOSE_STEP_S),
            ("scores", self.scores.close, CLOSE_STEP_S),
            ("quality", self._close_quality, CLOSE_STEP_S),
            ("audit log", self.audit.close, CLOSE_STEP_S),
            ("moderation", self._close_moderation, CLOSE_STEP_S),
            ("trace writer", lambda: self.writer.stop(within_s=WRITER_STOP_S), WRITER_STOP_S + 2),
            ("stores", self.stores.close, CLOSE_STEP_S),
        ]
        if self.cooldowns is not None:
            steps.insert(1, ("cool-downs", self.cooldowns.close, CLOSE_STEP_S))
        for name, step, within in steps:
            try:
                await asyncio.wait_for(step(), within)
            except Exception:
                log.exception("closing the %s failed", name)


_SERVED = ("Served: POST /v1/chat/completions, POST /v1/embeddings, GET /v1/models, "
           "GET /v1/models/{id}, /v1/responses, /v1/files, /v1/batches (OpenAI API); "
           "POST /v1/messages and "
           "/v1/messages/count_tokens (Anthropic API, docs/anthropic.md); /v1/collections "
           "and /v1/retrieve (RAG, "
           "docs/rag.md); POST /v1/feedback (docs/quality.md); "
           "/health, /ready, /metrics, /admin (docs/operations.md); the web console at /ui "
           "(docs/console.md); "
           "GET /openapi.json describes them all.")


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    if exc.status_code == 404:
        err: SeawallError = NotFound(f"No route {request.method} {request.url.path[:200]}. "
                                     + _SERVED)
    elif exc.status_code == 405:
        err = InvalidRequest(f"Method {request.method} is not allowed on {request.url.path}.",
                             status=405, code="method_not_allowed")
    else:
        err = InvalidRequest(str(exc.detail), status=exc.status_code)
    return error_response(err)


async def _unhandled(request: Request, exc: Exception) -> Response:
    tid = current_trace_id.get() or "-"
    log.error("unhandled error", exc_info=exc)
    return error_response(SeawallError(
        f"Internal error in the gateway. Report request id {tid} to the operator."),
        headers={"x-request-id": tid})


class FastPath:
    """Sends the hot POST routes straight to their handlers, past Starlette's
    router and middleware stack (about 15% of a proxied request's CPU,
    bench/); everything else, lifespan included, goes through Starlette."""

    def __init__(self, app: Starlette, routes: dict[str, Endpoint]) -> None:
        self.app = app
        self.routes = routes

    @property
    def state(self) -> Any:
        return self.app.state

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and ("\x00" in scope["path"]
                                        or b"%00" in scope["query_string"]):
            # No id, name or cursor contains NUL, and Postgres text cannot hold
            # one: refused here once, rather than a 500 from every store query.
            await error_response(InvalidRequest(
                "The URL contains a NUL character (%00), which no id, name or "
                "parameter may contain.", code="invalid_url"))(scope, receive, send)
            return
        if scope["type"] == "http" and scope["method"] == "POST":
            handler = self.routes.get(scope["path"])
            if handler is not None:
                scope["app"] = self.app
                request = Request(scope, receive)
                try:
                    response = await handler(request)
                except Exception as exc:
                    response = await _unhandled(request, exc)
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)


def create_app(settings: Settings) -> ConsoleBridge:
    services = Services(settings)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await services.start()
        # Everything built so far lives as long as the process: move it out of
        # the collector's sight so full collections stay short (tail latency).
        gc.collect()
        gc.freeze()
        # Each request allocates a few hundred short-lived objects, nearly all
        # freed by reference counting; collecting the young generation every
        # 700 allocations cost ~20 us per proxied request (bench/). Rarer
        # young collections find the same (rare) cycles a little later.
        _, gen1, gen2 = gc.get_threshold()
        gc.set_threshold(settings.server.gc_gen0_threshold, gen1, gen2)
        log.info("seawall ready", extra={"models": sorted(services.registry.models)})
        try:
            yield
        finally:
            await services.close()

    app = Starlette(routes=[*openai_routes.routes, *messages_routes.routes, *ops_routes.routes,
                            *admin_routes.routes, *rag_routes.routes, *responses_routes.routes,
                            *quality_routes.routes, *audit_routes.routes, *console_api.routes,
                            *console_api_more.routes,
                            *batch_routes.routes,
                            *openapi.routes],
                    lifespan=lifespan,
                    exception_handlers={HTTPException: _http_error, Exception: _unhandled})
    app.state.services = services
    app.state.openapi = openapi.encode_document()  # GET /openapi.json, built once
    fast = FastPath(app, {"/v1/chat/completions": openai_routes.chat_completions,
                          "/v1/embeddings": openai_routes.embeddings,
                          "/v1/messages": messages_routes.messages})
    # The console at /ui is an app of its own; a signed-in console calls the
    # public API with its session (seawall/console/bridge.py).
    console = console_routes.console_app(app.state) if settings.console.enabled else None
    return ConsoleBridge(fast, console, services.console.sessions, settings.auth.master_key,
                         services.console_keys)
