"""The stages of the request pipeline: auth → limits → invoke → record.

Each stage has ``before`` (may raise to reject, or return a chunk stream to
answer) and ``after`` (runs once the answer is over, whatever happened).
Later stages (prompt, cache, retrieve, route) slot in between without
touching these.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import ipaddress
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, Protocol

from seawall.api.wire import MAX_CHOICES, MAX_USER, embedding_inputs
from seawall.config import AuthSettings, LimitSettings, TraceSettings
from seawall.errors import AuthenticationFailed, RateLimited, ServiceUnavailable
from seawall.ml.tokens import is_long
from seawall.observe.metrics import Metrics
from seawall.observe.records import TraceRecord, hash_input
from seawall.observe.writer import TraceWriter
from seawall.pipeline.context import CHAT_ENDPOINTS, RequestContext
from seawall.pipeline.permissions import MASTER, RESERVED_TENANTS, key_usable
from seawall.pipeline.ratelimit import Charge, RateLimiter
from seawall.pipeline.spend import (
    TOKEN_ENDPOINTS,
    TokenCount,
    prompt_estimate,
    real_usage,
    spend_of,
)
from seawall.providers.base import StreamItem
from seawall.providers.registry import ModelRegistry
from seawall.routing.router import Router
from seawall.store.base import ApiKey, KeyStore

VIRTUAL_KEY_PREFIX = "sk-sw-"
# The credential the console's bridge adds for a key's session: minted and
# checked in-process only (seawall/console/keyauth.py), never sent to a browser.
CONSOLE_TOKEN_PREFIX = "swc-"
ANONYMOUS_TENANT = "anonymous"
# What a client sends to mean "no key" (the official SDKs refuse an empty
# one): anonymous on loopback when allowed, else a 401 "Missing API key".
# Any other token is a key, and must be valid (docs/security.md).
NO_KEY = "unused-on-loopback"
_REFUSED = {
    "revoked": "The API key {name!r} has been revoked.",
    "expired": "The API key {name!r} has expired; ask for a new one (seawall keys create "
               "--expires ...).",
    "rotated": "This secret of the API key {name!r} was rotated out and its grace period "
               "has ended; use the new secret.",
}


class Stage(Protocol):
    name: str
    # A span per request for this stage? (Admission, nearly always instant,
    # records its own span only when a request had to wait.)
    traced: bool

    async def before(self, ctx: RequestContext) -> AsyncIterator[StreamItem] | None: ...
    async def after(self, ctx: RequestContext) -> None: ...


def hash_key(secret: str) -> str:
    # Keys are 192-bit random secrets, so a fast hash is enough (no KDF needed):
    # guessing is hopeless and a fast hash keeps a cache miss cheap.
    return hashlib.sha256(secret.encode()).hexdigest()


def is_loopback(host: str | None) -> bool:
    if not host:
        return False
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


class AuthStage:
    name = "auth"
    traced = True

    def __init__(self, settings: AuthSettings, keys: KeyStore) -> None:
        self.settings = settings
        self.keys = keys
        self._cache: dict[str, tuple[ApiKey | None, float, float]] = {}
        # Keys by id, for console sessions (which hold a key id, never a secret).
        self._by_id: dict[str, tuple[ApiKey | None, float]] = {}
        # Resolves a console session's credential (seawall/console/keyauth.py,
        # set by the app): the key it acts as, or None when the session ended.
        self.console: Callable[[str], Awaitable[ApiKey | None]] | None = None
        # Bumped by every revocation notice: a lookup begun before it must not
        # put back what the notice dropped.
        self._epoch = 0

    def key_revoked(self, event: dict[str, Any]) -> None:
        """A ``key_revoked`` or ``key_changed`` (rotated, expiry or budget
        changed) notice from any replica (seawall/store/bus.py): forget that
        key now rather than when its cache entry expires."""
        self._epoch += 1
        key_id = event.get("id")
        self._by_id.pop(str(key_id), None)
        for h, (key, _, _) in list(self._cache.items()):
            if key is not None and key.id == key_id:
                del self._cache[h]

    def forget_keys(self) -> None:
        """Notices may have been missed (the bus reconnected): look every key
        up again. Entries stay as the stale fallback for a store that is down
        at that moment (``auth.stale_key_s``, as for any expired entry)."""
        self._epoch += 1
        self._by_id.clear()
        self._cache = {h: (key, 0.0, stale) for h, (key, _, stale) in self._cache.items()}

    @staticmethod
    def secret_of(authorization: str | None) -> str | None:
        """The presented secret; None when the request carries no key (no
        header, an empty bearer, or the documented placeholder the SDKs need
        because they refuse an empty key: :data:`NO_KEY`)."""
        if not authorization:
            return None
        scheme, _, value = authorization.partition(" ")
        value = value.strip()
        if scheme.lower() == "bearer" and value and value != NO_KEY:
            return value
        return None

    async def _lookup(self, secret: str) -> ApiKey | None:
        """The key for ``secret`` (None: unknown or revoked), from a short-lived
        cache. When the key store fails or is slow, a key seen within
        ``auth.stale_key_s`` is still honoured (and an unknown one refused
        with 503, not 401: the store could not say)."""
        h = hash_key(secret)
        now = time.monotonic()
        hit = self._cache.get(h)
        if hit is not None and hit[1] > now:
            return hit[0]
        s = self.settings
        epoch = self._epoch
        try:
            key = await asyncio.wait_for(self.keys.key_by_hash(h), s.lookup_timeout_s)
        except Exception as e:
            if hit is not None and hit[2] > now:
                return hit[0]
            raise ServiceUnavailable(
                "The key store is unavailable, so this key cannot be checked; retry shortly.",
                code="key_store_unavailable", retry_after=1.0) from e
        if key is not None and not key.active:
            key = None
        if len(self._cache) > 10_000:
            self._cache.clear()  # bounded: cheap to refill, never grows without end
        if epoch == self._epoch:
            self._cache[h] = (key, now + s.key_cache_ttl_s, now + s.stale_key_s)
        return key

    async def key_by_id(self, key_id: str) -> ApiKey | None:
        """The active key ``key_id`` (None: unknown or revoked), cached like
        lookups by secret and dropped by the same change notices."""
        now = time.monotonic()
        hit = self._by_id.get(key_id)
        if hit is not None and hit[1] > now:
            return hit[0]
        epoch = self._epoch
        try:
            key = await asyncio.wait_for(self.keys.find_key(key_id),
                                         self.settings.lookup_timeout_s)
        except ValueError:  # several keys named like this id (and none with it)
            key = None
        except Exception as e:
            raise ServiceUnavailable(
                "The key store is unavailable, so this session's key cannot be checked; "
                "retry shortly.", code="key_store_unavailable", retry_after=1.0) from e
        if key is not None and (key.id != key_id or not key.active):
            key = None  # find_key also matches names: only the id counts here
        if len(self._by_id) > 10_000:
            self._by_id.clear()
        if epoch == self._epoch:
            self._by_id[key_id] = (key, now + self.settings.key_cache_ttl_s)
        return key

    async def before(self, ctx: RequestContext) -> None:
        if ctx.authenticated:  # a background response: its caller was checked at enqueue
            return
        secret = self.secret_of(ctx.authorization)
        master = self.settings.master_key
        if secret is not None:
            # A presented key must be valid: only a request with no key at
            # all may be anonymous (a garbage token is never "anonymous").
            if master and hmac.compare_digest(secret.encode(), master.encode()):
                ctx.key, ctx.tenant = MASTER, MASTER.tenant
                return
            if secret.startswith(VIRTUAL_KEY_PREFIX):
                # Looked up by its SHA-256: the comparison is of hashes in an
                # index, so timing tells nothing about the secret.
                key = await self._lookup(secret)
                if key is None:
                    raise AuthenticationFailed(
                        "This API key is not valid or has been revoked. "
                        "Create one with `seawall keys create --name NAME`.")
                why = key_usable(key, hash_key(secret))
                if why is not None:
                    raise AuthenticationFailed(_REFUSED[why].format(name=key.name))
                if key.tenant.lower() in RESERVED_TENANTS:
                    raise AuthenticationFailed(
                        f"The API key {key.name!r} belongs to the reserved tenant "
                        f"{key.tenant!r} (made before tenant names were reserved); make a "
                        "new key with `seawall keys create --name N --tenant T`.")
                ctx.key, ctx.tenant = key, key.tenant
                return
            if secret.startswith(CONSOLE_TOKEN_PREFIX) and self.console is not None:
                # A signed-in console acting as its key (seawall/console/bridge.py).
                key = await self.console(secret)
                if key is None:
                    raise AuthenticationFailed(
                        "This console session has ended: its key was revoked, expired or "
                        "rotated out. Sign in again.")
                ctx.key, ctx.tenant = key, key.tenant
                return
            raise AuthenticationFailed("Incorrect API key provided." + self._loopback_hint(ctx))
        if self.settings.allow_anonymous_loopback and is_loopback(ctx.client_host):
            ctx.tenant = ANONYMOUS_TENANT
            return
        why = self._loopback_hint(ctx)
        raise AuthenticationFailed(
            "Missing API key." + (why or " Send `Authorization: Bearer <key>` "
            "(the master key from config, or one made with `seawall keys create`)."))

    def _loopback_hint(self, ctx: RequestContext) -> str:
        """Why a loopback caller that worked without a key (the quickstart)
        now gets a 401: usually a config file with a master key, which does not
        also say ``allow_anonymous_loopback: true``."""
        if not is_loopback(ctx.client_host) or self.settings.allow_anonymous_loopback:
            return ""
        cause = ("This gateway has auth.master_key set, so anonymous loopback access is off"
                 if self.settings.master_key else
                 "Anonymous loopback access is off (auth.allow_anonymous_loopback is false)")
        return (f" {cause}; send `Authorization: Bearer <key>` (the master key, or one made "
                "with `seawall keys create`) or set auth.allow_anonymous_loopback: true.")

    async def after(self, ctx: RequestContext) -> None:
        return None


class LimitStage:
    """Requests and tokens per minute, per key and per tenant, taken in one
    atomic step (all or none). Tokens are taken as the prompt's estimate
    before the call and corrected with the real total after it
    (seawall.pipeline.spend)."""

    name = "limits"
    traced = True

    def __init__(self, settings: LimitSettings, limiter: RateLimiter, metrics: Metrics,
                 count: TokenCount | None = None) -> None:
        self.settings = settings
        self.limiter = limiter
        self.count = count
        self._refused = {what: metrics.rate_limited.labels(what)
                         for what in ("key_rpm", "tenant_rpm", "key_tpm", "tenant_tpm")}

    def _limits(self, ctx: RequestContext) -> tuple[int, int, int, int]:
        """(key rpm, key tpm, tenant rpm, tenant tpm); 0 = none."""
        s = self.settings
        key = ctx.key
        rpm = key.rpm if key is not None and key.rpm is not None else s.default_rpm
        tpm = key.tpm if key is not None and key.tpm is not None else s.default_tpm
        tenant = s.tenants.get(ctx.tenant)
        t_rpm = tenant.rpm if tenant is not None and tenant.rpm else s.tenant_rpm
        t_tpm = tenant.tpm if tenant is not None and tenant.tpm else s.tenant_tpm
        return rpm, tpm, t_rpm, t_tpm

    async def before(self, ctx: RequestContext) -> None:
        rpm, tpm, t_rpm, t_tpm = self._limits(ctx)
        if not (rpm or tpm or t_rpm or t_tpm):
            return
        key = ctx.key
        who = f"k:{key.id}" if key is not None else f"anon:{ctx.client_host}"
        tenant = f"t:{ctx.tenant}"
        charges: list[Charge] = []
        kinds: list[str] = []
        for what, bucket, limit in (("key_rpm", who, rpm), ("tenant_rpm", tenant, t_rpm)):
            if limit:
                charges.append(Charge(bucket + ":rpm", limit))
                kinds.append(what)
        tokens: list[Charge] = []
        if (tpm or t_tpm) and ctx.endpoint in TOKEN_ENDPOINTS:
            estimate = await prompt_estimate(ctx, self.count)
            for what, bucket, limit in (("key_tpm", who, tpm), ("tenant_tpm", tenant, t_tpm)):
                if limit:
                    tokens.append(Charge(bucket + ":tpm", limit, estimate))
                    kinds.append(what)
        decision = await self.limiter.take(charges + tokens)
        if not decision.allowed:
            what = kinds[decision.refused]
            limit = (charges + tokens)[decision.refused].per_minute
            self._refused[what].inc()
            unit = "requests" if what.endswith("rpm") else "tokens"
            holder = "this key" if what.startswith("key") else f"tenant {ctx.tenant!r}"
            raise RateLimited(
                f"Rate limit of {limit} {unit} per minute reached for {holder}; "
                f"retry after {decision.wait_s:.1f}s.", retry_after=decision.wait_s)
        if tokens:
            spend = spend_of(ctx)
            spend.tpm, spend.tpm_local = tokens, decision.local

    async def after(self, ctx: RequestContext) -> None:
        spend = ctx.spend
        if spend is None or not spend.tpm:
            return
        taken, spend.tpm = spend.tpm, []
        # Shielded: a second cancellation must not skip the correction.
        await asyncio.shield(self._settle(ctx, taken, spend.tpm_local))

    async def _settle(self, ctx: RequestContext, taken: list[Charge], local: bool) -> None:
        prompt, completion = await real_usage(ctx, self.count)
        # What each bucket took (a charge over a whole bucket took the bucket).
        fix = [Charge(c.bucket, c.per_minute, prompt + completion - min(c.amount, c.per_minute))
               for c in taken]
        fix = [c for c in fix if c.amount]
        if fix:
            await self.limiter.give(fix, local=local)


class InvokeStage:
    """Hands the request to the router, which picks deployments, retries and
    falls back (seawall.routing)."""

    name = "invoke"
    traced = True

    def __init__(self, registry: ModelRegistry, router: Router) -> None:
        self.registry = registry
        self.router = router

    async def before(self, ctx: RequestContext) -> AsyncIterator[StreamItem] | None:
        if ctx.endpoint == "embeddings":
            model = self.registry.resolve(ctx.model, "embedding")
            assert ctx.raw is not None
            ctx.result = await self.router.embed(ctx, model, embedding_inputs(ctx.raw["input"]))
            ctx.usage = {"prompt_tokens": ctx.result.prompt_tokens, "completion_tokens": 0,
                         "total_tokens": ctx.result.prompt_tokens}
            return None
        assert ctx.request is not None and ctx.raw is not None
        return self.router.chat(ctx, self.registry.resolve(ctx.model, "chat"))

    async def after(self, ctx: RequestContext) -> None:
        return None


def truncate(text: str, limit: int) -> str:
    """``text`` cut to ``limit`` characters, with a marker saying how much went."""
    if not limit or len(text) <= limit:
        return text
    return f"{text[:limit]}…[truncated {len(text) - limit} chars]"


def truncate_strings(value: Any, limit: int) -> Any:
    """A copy of decoded JSON with every string longer than ``limit`` cut
    (the input is depth-checked, so recursion is bounded)."""
    if type(value) is str:
        return truncate(value, limit)
    if type(value) is dict:
        return {k: truncate_strings(v, limit) for k, v in value.items()}
    if type(value) is list:
        return [truncate_strings(v, limit) for v in value]
    return value


# Cleans the stored (input, output, rag) of a record (seawall/guardrails/redact.py).
Redact = Callable[[Any, str | None, dict[str, Any] | None],
                  Awaitable[tuple[Any, str | None, dict[str, Any] | None]]]


def _end_user(ctx: RequestContext) -> str | None:
    """The request's ``user``: from the parsed chat request, else (embeddings)
    from the body, when it is a string within the limit (a refused body may
    carry anything there)."""
    if ctx.request is not None:
        return ctx.request.user
    user = ctx.raw.get("user") if ctx.raw else None
    return user if isinstance(user, str) and len(user) <= MAX_USER else None


class RecordStage:
    """Turns the finished context into a trace record and hands it to the
    writer; never waits on storage. Stored text is cut at
    ``observe.traces.max_content_chars`` with a visible marker; a long answer
    without a usage block is counted here in a thread (``count``), not later
    by the writer on the event loop."""

    name = "record"
    traced = True

    def __init__(self, settings: TraceSettings, writer: TraceWriter,
                 count: TokenCount | None = None, redact: Redact | None = None,
                 on_record: Callable[[RequestContext, TraceRecord], None] | None = None
                 ) -> None:
        """``on_record``: sees each record of an answer not served from the cache,
        after redaction (the judges' sampler); must be cheap and never raise."""
        self.settings = settings
        self.writer = writer
        self.count = count
        self.redact = redact  # guardrails.redact_traces
        self.on_record = on_record

    def _content(self, ctx: RequestContext, messages: Any) -> tuple[Any, str | None]:
        """(input, output) as stored: None when content is not kept, cut when long."""
        if not self.settings.store_content:
            return None, None
        limit = self.settings.max_content_chars
        output = ctx.gatherer.text or None
        if output is not None:
            output = truncate(output, limit)
        if messages is not None and limit and len(ctx.body) > limit:
            messages = truncate_strings(messages, limit)  # only a long body can hold long text
        return messages, output

    def _other_choices(self, ctx: RequestContext) -> list[dict[str, Any]]:
        """The choices after the first (``n`` > 1; at most ``MAX_CHOICES`` in
        all, whatever an upstream sends), each cut like ``output``; only their
        finish reasons when content is not kept."""
        keep, limit = self.settings.store_content, self.settings.max_content_chars
        return [{"index": i, "finish_reason": finish,
                 **({"output": truncate(text, limit)} if keep else {})}
                for i, text, finish in ctx.gatherer.other_choices()[:MAX_CHOICES - 1]]

    async def before(self, ctx: RequestContext) -> None:
        return None

    async def after(self, ctx: RequestContext) -> None:
        err = ctx.error
        dep = ctx.deployment
        usage = ctx.usage or ctx.gatherer.usage
        req = ctx.request
        messages = ctx.raw.get("messages") if ctx.raw else None
        stored_input, stored_output = self._content(ctx, messages)
        rag = ctx.rag.record(self.settings.store_content) if ctx.rag is not None else None
        more = self._other_choices(ctx)
        if self.redact is not None:
            if more:  # one pass over the whole record (max_scan_chars is per record)
                stored_input, stored_output, both = await self.redact(
                    stored_input, stored_output, {"rag": rag, "choices": more})
                rag, more = (both or {}).get("rag"), (both or {}).get("choices") or []
            else:
                stored_input, stored_output, rag = await self.redact(stored_input,
                                                                     stored_output, rag)
        route = ctx.route.record() if ctx.route is not None else None
        if ctx.guard is not None:  # no column of its own yet: kept beside the route
            route = {**(route or {}), "guardrails": ctx.guard.record()}
        if more:  # likewise: ``output`` is the first choice's, these are the others
            route = {**(route or {}), "choices": more}
        rec = TraceRecord(
            trace_id=ctx.trace_id, endpoint=ctx.endpoint, started_at=ctx.started_at,
            tenant=ctx.tenant, key_id=ctx.key.id if ctx.key else None, model=ctx.model,
            deployment=dep.name if dep else "", stream=bool(req and req.stream),
            status=ctx.status,
            error_type=err.type if err else None, error_code=err.code if err else None,
            error_message=err.message if err else None,
            input=stored_input, output=stored_output,
            input_hash=hash_input(ctx.body), latency_ms=ctx.latency_ms, ttft_ms=ctx.ttft_ms,
            user=_end_user(ctx), spans=ctx.spans, parent=ctx.traceparent,
            finish_reason=ctx.gatherer.finish_reason,
            attempts=ctx.attempts, degraded=ctx.degraded,
            rag=rag,
            experiment=ctx.experiment.label if ctx.experiment is not None else None,
            prompt_version=ctx.prompt_version,
            route=route,
        )
        cache = ctx.cache
        if cache is not None:
            rec.cache, rec.cache_guard = cache.status, cache.guard_failed
            if cache.served:
                # Nothing was spent upstream: tokens and cost stay 0, the
                # answer's original cost is what the cache saved.
                rec.saved_tokens, rec.saved_usd = cache.saved_tokens, cache.saved_usd
                if cache.answer is not None:
                    rec.cache_entry = cache.answer.id
                    rec.cache_similarity = cache.answer.similarity
                self.writer.submit(rec)
                return
            if cache.quarantined is not None:  # what it would have served, and why not
                rec.cache_entry = cache.quarantined.id
                rec.cache_guard = f"quarantined: {cache.quarantined.quarantined}"[:200]
        if usage:
            rec.prompt_tokens = int(usage.get("prompt_tokens") or 0)
            rec.completion_tokens = int(usage.get("completion_tokens") or 0)
            rec.usage_estimated = ctx.usage_estimated
            if dep is not None:
                rec.cost_usd = dep.cost(rec.prompt_tokens, rec.completion_tokens)
        elif ctx.endpoint in CHAT_ENDPOINTS and dep is not None and messages:
            # No usage from upstream: the writer counts tokens off the request
            # path; a long text is counted here, in a thread, instead (the
            # writer counts on the event loop).
            rec.usage_estimated = True
            text = ctx.gatherer.text
            if self.count is not None and is_long(text, len(ctx.body)):
                rec.prompt_tokens, rec.completion_tokens = await self.count(
                    messages, text, len(ctx.body))
                rec.cost_usd = dep.cost(rec.prompt_tokens, rec.completion_tokens)
            else:
                rec.messages_for_count = (messages, text)
        if self.on_record is not None:
            self.on_record(ctx, rec)
        self.writer.submit(rec)
