"""``seawall doctor``: check that a server with this config would start and serve."""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Callable
from pathlib import Path

from seawall.config import Settings
from seawall.providers.registry import ModelRegistry


def _port_free(host: str, port: int) -> bool:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


async def run_checks(settings: Settings, port: int | None, skip_models: bool,
                     say: Callable[[str], None]) -> bool:
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

    from seawall.store.sqlite import SqliteStore

    store = SqliteStore(settings.db_path)
    try:
        await store.open()
        keys = await store.list_keys()
        report("store", True, f"sqlite {settings.db_path}, {len(keys)} active keys")
    except Exception as e:
        report("store", False, f"{settings.db_path}: {e}")
    finally:
        await store.close()

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

    if skip_models:
        say("models: skipped (--skip-models)")
        return ok
    registry = ModelRegistry(settings)
    for name, provider in registry.providers.items():
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
