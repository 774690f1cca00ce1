"""``seawall doctor``: check that a server with this config would start and serve."""

from __future__ import annotations

import asyncio
import os
import socket
import time
from collections.abc import Callable
from pathlib import Path

import aiohttp

from seawall.config import AnthropicProviderSettings, OpenAIProviderSettings, Settings
from seawall.providers.registry import ModelRegistry

NETWORK_TIMEOUT_S = 5.0  # per upstream, all reached at once


def _port_free(host: str, port: int) -> bool:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def probe_request(p: OpenAIProviderSettings | AnthropicProviderSettings
                  ) -> tuple[str, dict[str, str]]:
    """A cheap, free request that proves the upstream is there and takes the
    key: its models list (``GET {base_url}/models`` for OpenAI-format, the
    Messages API's ``/v1/models`` for Anthropic), with the provider's headers."""
    base = p.base_url.rstrip("/")
    if isinstance(p, AnthropicProviderSettings):
        url = base + ("/models" if base.endswith("/v1") else "/v1/models")
        headers = {"anthropic-version": p.api_version,
                   **({"x-api-key": p.api_key} if p.api_key else {})}
    else:
        url = base + "/models"
        headers = {"authorization": f"Bearer {p.api_key}"} if p.api_key else {}
    return url, {**headers, **p.headers}


async def reach(p: OpenAIProviderSettings | AnthropicProviderSettings,
                timeout_s: float = NETWORK_TIMEOUT_S) -> tuple[bool, str]:
    """(reachable and accepting the key, what was found)."""
    url, headers = probe_request(p)
    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout_s)) as s, \
                s.get(url, headers=headers, allow_redirects=False) as resp:
            body = (await resp.content.read(2000)).decode("utf-8", "replace")
            status = resp.status
    except TimeoutError:
        return False, f"{url}: no answer within {timeout_s:g}s (timeout)"
    except aiohttp.ClientConnectorError as e:
        why = "connection refused" if isinstance(e.os_error, ConnectionRefusedError) else (
            e.os_error.strerror or str(e.os_error))
        return False, f"{url}: {why} (is the upstream running, and base_url right?)"
    except aiohttp.ClientError as e:
        return False, f"{url}: {type(e).__name__}: {e}"
    if 200 <= status < 300:
        return True, f"{url} answered {status}"
    hint = {401: "the upstream refused the API key (check api_key)",
            403: "the API key is not allowed to list models (check api_key)",
            404: "no such path (check base_url; OpenAI-format ones usually end in /v1)"
            }.get(status, "unexpected answer")
    excerpt = " ".join(body.split())[:160]
    return False, f"{url}: {status} {hint}" + (f"; said: {excerpt}" if excerpt else "")


async def run_checks(settings: Settings, port: int | None, skip_models: bool,
                     say: Callable[[str], None], network: bool = True) -> bool:
    ok = True

    def report(name: str, good: bool, detail: str) -> None:
        nonlocal ok
        ok = ok and good
        say(f"{name}: {'ok' if good else 'FAIL'} ({detail})")

    data = Path(settings.data_dir)
    try:
        data.mkdir(parents=True, exist_ok=True)
        probe = data / ".doctor"
        probe.write_text("ok")
        probe.unlink()
        report("data dir", True, f"{data.resolve()} is writable")
    except OSError as e:
        report("data dir", False, f"{data}: {e.strerror}")

    from seawall.store.factory import Stores

    stores = Stores(settings)
    try:
        await stores.open(key_reader=False)
        keys = await stores.main.list_keys()
        report("store", True, f"{stores.description}, {len(keys)} active keys")
    except Exception as e:
        report("store", False, f"{stores.description}: {e}")
    finally:
        await stores.close()
    if stores.redis is not None:
        from seawall.store.factory import safe_url
        from seawall.store.redis_link import RedisLink

        link = RedisLink(settings.redis)
        try:
            await link.ping()
            report("redis", True, f"{safe_url(settings.redis.url or '')} answers")
        except Exception as e:
            report("redis", False, f"{safe_url(settings.redis.url or '')}: {type(e).__name__}: {e}"
                   + (" (requests use per-process limits while it is down)"
                      if settings.redis.fail_open else " (requests get 503 while it is down)"))
        finally:
            await link.close()

    host, p = settings.server.host, settings.server.port if port is None else port
    free = _port_free(host, p)
    report("port", free, f"{host}:{p} is {'free' if free else 'in use by another process'}")

    if settings.auth.master_key is None and not settings.auth.allow_anonymous_loopback:
        report("auth", True, "no master key: only virtual keys from `seawall keys create` work")
    elif settings.auth.allow_anonymous_loopback:
        report("auth", True, "anonymous requests allowed from loopback clients only")
    else:
        report("auth", True, "master key set")

    try:
        from seawall.ml.tokens import TokenCounter

        t0 = time.perf_counter()
        n = TokenCounter().count("Seawall doctor checks the token counter.")
        report("token counter", n > 0, f"o200k_base offline, {time.perf_counter() - t0:.2f}s")
    except Exception as e:
        report("token counter", False, str(e))

    remote = {n: prov for n, prov in settings.providers.items()
              if isinstance(prov, OpenAIProviderSettings | AnthropicProviderSettings)}
    if network and remote:
        found = await asyncio.gather(*(reach(prov) for prov in remote.values()))
        for (name, prov), (good, detail) in zip(remote.items(), found, strict=True):
            report(f"provider {name}", good, f"{prov.type}, {detail}")
    elif remote:
        for name, prov in remote.items():
            say(f"provider {name}: not contacted (--no-network; {prov.type} at {prov.base_url})")
    if skip_models:
        say("models: skipped (--skip-models)")
    else:
        registry = ModelRegistry(settings)
        for name, provider in registry.providers.items():
            if name in remote:
                continue
            t0 = time.perf_counter()
            try:
                await provider.start()
                st = provider.status()
                report(f"provider {name}", st.ready,
                       f"{provider.type}, started in {time.perf_counter() - t0:.1f}s"
                       + (f"; {st.detail}" if st.detail else ""))
            except Exception as e:
                report(f"provider {name}", False, f"{provider.type}: {e}")
            finally:
                await provider.close()
    for var in ("OPENAI_API_KEY", "ANTHROPIC_API_KEY"):
        if var in os.environ:
            say(f"env: {var} is set")
    return ok
