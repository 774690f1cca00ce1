"""Lets the signed-in console call the public HTTP API (/v1/*, /admin/*)
exactly as any client does, without the browser ever holding a key.

A request under those paths that carries no ``Authorization`` header but a
valid console session cookie AND the session's CSRF token in
``x-csrf-token`` gets the identity's credential added before the app sees
it: the master key for an operator session, for a key's session a
credential only this process's auth stage accepts and that acts as that key
(seawall/console/keyauth.py; checked again on every call, so a revoked key
ends its session at once). Everything after (admission, limits,
permissions, tracing) is the API's own. Without the token nothing is
added, so a page on another site cannot act through the cookie (which is
also SameSite=Strict). Anonymous loopback sessions need nothing added: the
API lets loopback in already.

Cost on the API's hot path: one pass over the request headers, stopping at
``authorization`` (which every API client sends).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from starlette.types import ASGIApp, Receive, Scope, Send

from seawall.console.session import COOKIE, CSRF_HEADER, Sessions, cookie_value, csrf_ok

if TYPE_CHECKING:
    from seawall.console.keyauth import ConsoleKeys

_PREFIXES = ("/v1/", "/admin/")


class ConsoleBridge:
    """In front of the gateway's app: ``/ui`` goes to the console's own app
    (``console``); API requests from a signed-in console get its credential."""

    def __init__(self, gateway: Any, console: ASGIApp | None, sessions: Sessions,
                 master_key: str | None, keys: ConsoleKeys | None = None) -> None:
        self.gateway = gateway
        self.console = console
        self.sessions = sessions
        self._master = master_key
        self._keys = keys

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
        if (scope["type"] == "http" and self.console is not None
                and scope["path"].startswith(_PREFIXES)):
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
        if ident.anonymous:
            return scope  # the API lets a loopback caller in already
        if ident.is_key:
            if self._keys is None:
                return scope
            credential = self._keys.token(ident.sub, ident.kf)
        elif ident.role == "operator" and self._master:
            credential = self._master
        else:
            return scope
        headers = [*scope["headers"], (b"authorization", b"Bearer " + credential.encode())]
        return {**scope, "headers": headers}


CSRF_HEADER_B = CSRF_HEADER.encode()
