"""One prompt on the console: its versions (number, created, content hash,
the labels pointing at each), moving a label to any version (``POST
/admin/prompts/{name}/label``, operator), the label history (every move,
newest first) and a diff between any two versions, the same unified diff
``seawall prompts diff`` prints (``PromptRegistry.diff``).

The diff is rendered as escaped lines with a class each (added, removed,
hunk header), so the page needs no inline style or script (the CSP).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from seawall.console.session import Identity
from seawall.errors import InvalidRequest
from seawall.prompts.model import NAME_RE, PRODUCTION
from seawall.prompts.registry import PromptHistory

if TYPE_CHECKING:
    from seawall.app import Services

MAX_VERSIONS_SHOWN = 200  # newest first; older ones stay reachable by ?a=&b=
MAX_DIFF_LINES = 5000  # a diff longer than this is cut, saying so
MAX_VERSION = 10**9
MAX_MOVES_SHOWN = 100  # the label history, newest first


@dataclass(frozen=True, slots=True)
class DiffLine:
    kind: str  # "add", "del", "hunk", "file" or "" (context)
    text: str


def diff_lines(diff: str) -> list[DiffLine]:
    """Each line of a unified diff with its kind, for a CSS class."""
    out: list[DiffLine] = []
    for line in diff.splitlines():
        if line.startswith(("+++", "---")):
            kind = "file"
        elif line.startswith("@@"):
            kind = "hunk"
        elif line.startswith("+"):
            kind = "add"
        elif line.startswith("-"):
            kind = "del"
        else:
            kind = ""
        out.append(DiffLine(kind, line))
    return out


def _version(request: Request, param: str) -> int | None:
    """``?a=`` / ``?b=``: absent, or a version number (a 400 otherwise)."""
    raw = request.query_params.get(param)
    if raw is None or raw == "":
        return None
    if len(raw) > 10 or not raw.isdigit() or not 1 <= int(raw) <= MAX_VERSION:
        raise InvalidRequest(f"{param} must be a version number (1 or more)", param=param)
    return int(raw)


async def prompt(request: Request, svc: Services, ident: Identity) -> Response:
    from seawall.console.routes import render

    name = request.path_params["name"]
    if not NAME_RE.match(name):  # at most 100 characters, as the registry allows
        return render(request, "error.html", ident, status=404, active="prompts",
                      message="No prompt by that name.")
    a, b = _version(request, "a"), _version(request, "b")
    # An unknown name is PromptNotFound: the page wrapper shows it as a 404.
    history: PromptHistory = await asyncio.to_thread(svc.prompts.history, name)
    latest = history.versions[-1].version
    if a is None and b is None and latest > 1:
        a, b = latest - 1, latest
    elif a is None or b is None:
        a = b = a or b
    lines: list[DiffLine] = []
    if a is not None and b is not None:
        # An unknown version is PromptNotFound too (404).
        text = await asyncio.to_thread(svc.prompts.diff, name, a, b)
        lines = diff_lines(text)
    at: dict[int, list[str]] = {}
    for label, number in sorted(history.labels.items()):
        at.setdefault(number, []).append(label)
    shown = list(reversed(history.versions))[:MAX_VERSIONS_SHOWN]
    moves = sorted(history.moves, key=lambda m: (m.at, m.id), reverse=True)
    # The labels one may move: those the prompt has (production first), or production.
    names = sorted(history.labels, key=lambda n: (n != PRODUCTION, n)) or [PRODUCTION]
    return render(request, "prompt.html", ident, active="prompts", name=name,
                  versions=shown, total=len(history.versions), labels_at=at, a=a, b=b,
                  lines=lines[:MAX_DIFF_LINES], cut=len(lines) > MAX_DIFF_LINES,
                  moves=moves[:MAX_MOVES_SHOWN], moves_total=len(moves),
                  may_move=ident.role == "operator", label_names=names,
                  labels_json=orjson.dumps(history.labels).decode())


def routes(page: Any) -> list[Route]:
    """``page``: seawall/console/routes.py's wrapper (sign-in, scope, errors)."""
    return [Route("/ui/prompts/{name}", page("prompts", prompt), methods=["GET"])]
