"""The router that ships with Seawall: what ``router: combined`` (the
default) and ``router: learned`` use when a route names no ``model_path``.

Why it may ship: it is trained on routellm_eval's MMLU dev rows alone
(questions MIT, RouteLLM's per-question correctness labels of GPT-4-1106 and
Mixtral-8x7B Apache-2.0); no research-only data went into it. Provenance and
licenses are in ``default_router/NOTICE.md`` next to the file;
``bench/router_eval.py --ship`` rebuilds it. It is read from the installed
package (no network) once per process.
"""

from __future__ import annotations

import functools
from pathlib import Path

from seawall.routing.complexity.model import RouterModel, embedder_id

__all__ = ["SHIPPED_ROUTER", "load_shipped"]

SHIPPED_ROUTER = Path(__file__).resolve().parent / "default_router" / "router.json"


@functools.cache
def load_shipped() -> RouterModel:
    """The shipped router, checked like any router file (version, embedder)."""
    return RouterModel.load(SHIPPED_ROUTER, expect_embedder=embedder_id())
