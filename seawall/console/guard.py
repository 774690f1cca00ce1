"""Who may see what in the console: one permission check for every page
and action, and the security headers every console response carries.

The scope each page needs is written once, in ``SCOPES``. Until the scopes
branch lands, the check is the admin API's (seawall/api/admin_routes.py):
the master key (role operator) or anonymous loopback; a tenant admin (a key
with admin scopes, later) will see its own tenant only, as a filter forced
from the identity (``Identity.tenant``), never from the URL.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from starlette.requests import Request

from seawall.console.session import COOKIE, Identity, Sessions, cookie_value
from seawall.errors import SeawallError
from seawall.pipeline.stages import is_loopback

if TYPE_CHECKING:
    from seawall.config import Settings

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


def allowed(ident: Identity, scope: str) -> bool:
    """Whether ``ident`` holds ``scope``. Operators (master key, anonymous
    loopback) hold every scope; a tenant admin holds every admin scope and
    chat, for its own tenant (the lead switches this to the scopes module)."""
    if ident.role == "operator":
        return True
    return ident.role == "tenant_admin" and (scope.startswith("admin:") or scope == "chat")


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
