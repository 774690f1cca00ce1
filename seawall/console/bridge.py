"""Lets the signed-in console call the public HTTP API (/v1/*, /admin/*)
exactly as any client does, without the browser ever holding a key.

A request under those paths that carries no ``Authorization`` header but a
valid console session cookie AND the session's CSRF token in
``x-csrf-token`` gets the identity's credential added before the app sees
it; everything after (admission, limits, permissions, tracing) is the API's
own. Without the token nothing is added, so a page on another site cannot
act through the cookie (which is also SameSite=Strict). Anonymous loopback
sessions need nothing added: the API lets loopback in already.

Cost on the API's hot path: one pass over the request headers, stopping at
``authorization`` (which every API client sends).
"""

from __future__ import annotations

from typing import Any

from starlette.types import ASGIApp, Receive, Scope, Send

from seawall.console.session import COOKIE, CSRF_HEADER, Sessions, cookie_value, csrf_ok

_PREFIXES = ("/v1/", "/admin/")


class ConsoleBridge:
    """In front of the gateway's app: ``/ui`` goes to the console's own app
    (``console``); API requests from a signed-in console get its credential."""

    def __init__(self, gateway: Any, console: ASGIApp | None, sessions: Sessions,
                 master_key: str | None) -> None:
        self.gateway = gateway
        self.console = console
        self.sessions = sessions
        self._master = master_key

    @property
    def app(self) -> Any:
        """The gateway's Starlette app (as ``FastPath.app``)."""
        return self.gateway.app

    @property
    def state(self) -> Any:
        return self.gateway.state

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and self.console is not None and (
                scope["path"] == "/ui" or scope["path"].startswith("/ui/")):
            scope["app"] = self.console
            await self.console(scope, receive, send)
            return
        if scope["type"] == "http" and self._master and scope["path"].startswith(_PREFIXES):
            cookie = token = None
            for name, value in scope["headers"]:
                if name == b"authorization":
                    break
                if name == b"cookie":
                    cookie = value
                elif name == CSRF_HEADER_B:
                    token = value
            else:
                if cookie is not None and token is not None:
                    scope = self._with_credential(scope, cookie, token)
        await self.gateway(scope, receive, send)

    def _with_credential(self, scope: Scope, cookie: bytes, token: bytes) -> Scope:
        ident = self.sessions.read(cookie_value(cookie.decode("latin-1"), COOKIE))
        if ident is None or not csrf_ok(ident, token.decode("latin-1")):
            return scope
        if ident.role != "operator" or ident.anonymous:
            # TODO(scopes): a tenant admin's session carries its key id; the
            # auth stage should accept it instead of a secret the console lacks.
            return scope
        assert self._master is not None
        headers = [*scope["headers"], (b"authorization", b"Bearer " + self._master.encode())]
        return {**scope, "headers": headers}


CSRF_HEADER_B = CSRF_HEADER.encode()
