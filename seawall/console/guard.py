"""Who may see what in the console: one permission check for every page
and action, and the security headers every console response carries.

The scope each page needs is written once, in ``SCOPES``, and checked as
the API checks it (seawall/pipeline/permissions.py): the operator (master
key, anonymous loopback) holds every scope; a key's session holds its key's
scopes, read again on every page (``key_of``), for its own tenant only: a
filter forced from the identity (``Identity.tenant``), never from the URL.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

from starlette.requests import Request

from seawall.console.session import COOKIE, Identity, Sessions, cookie_value
from seawall.errors import SeawallError
from seawall.pipeline.permissions import scopes_of
from seawall.pipeline.stages import is_loopback
from seawall.store.base import ApiKey

if TYPE_CHECKING:
    from seawall.config import Settings
    from seawall.console.keyauth import ConsoleKeys

# The scope each console page or action needs (wave-3 vocabulary).
SCOPES = {
    "overview": "admin:traces",
    "traces": "admin:traces",
    "playground": "chat",
    "prompts": "admin:prompts",
    "keys": "admin:keys",
    "collections": "admin:collections",
    "experiments": "admin:experiments",
    "jobs": "admin:traces",
    "quality": "admin:quality",
}

# Pages of gateway-wide figures (every tenant's): the operator's only, as the
# admin API's routes that are not tenant-aware (e.g. GET /admin/cache).
OPERATOR_PAGES = frozenset({"quality"})

# No inline script or style anywhere: every script and stylesheet is a file under /ui/static.
CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
       "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'; "
       "object-src 'none'")
SECURITY_HEADERS = {
    "content-security-policy": CSP,
    "x-content-type-options": "nosniff",
    "referrer-policy": "same-origin",
    "x-frame-options": "DENY",
    "cache-control": "no-store",
}


class Forbidden(SeawallError):
    status = 403
    type = "permission_error"
    code = "forbidden"


def allowed(ident: Identity, scope: str, key: ApiKey | None = None) -> bool:
    """Whether ``ident`` holds ``scope``: the operator (master key, anonymous
    loopback) every scope; a key's session the scopes of its key as it is
    now (``key``, from :func:`key_of`), as the API's permission check."""
    if not ident.is_key:
        return ident.role == "operator"
    return key is not None and scope in scopes_of(key)


async def key_of(ident: Identity, keys: ConsoleKeys) -> tuple[Identity, ApiKey | None] | None:
    """For a key's session, the key as it is now (and the identity with the
    key's tenant); None when the session has ended (revoked, expired, rotated
    out, no admin scope left). Other sessions pass through with no key."""
    if not ident.is_key:
        return ident, None
    key = await keys.current(ident.sub, ident.kf)
    if key is None:
        return None
    return dataclasses.replace(ident, tenant=key.tenant), key


def identify(request: Request, sessions: Sessions, settings: Settings) -> Identity | None:
    """The signed-in identity of a request (its session cookie), else None.
    Anonymous loopback callers get an anonymous operator session made here
    (the route sets the cookie so its CSRF token survives)."""
    ident = sessions.read(cookie_value(request.headers.get("cookie"), COOKIE))
    loopback_ok = (settings.auth.allow_anonymous_loopback
                   and is_loopback(request.client.host if request.client else None))
    if ident is not None:
        if ident.anonymous and not loopback_ok:
            return None  # an anonymous session is only good where anonymous access is
        return ident
    if loopback_ok:
        return sessions.new("anonymous", "operator", None)
    return None
