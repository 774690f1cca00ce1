"""Console sign-in: a signed session cookie and its CSRF token.

The cookie holds who signed in (``sub``, ``role``, ``tenant``; for a key,
its id and a fingerprint, never the secret: seawall/console/keyauth.py), when it
expires and a random CSRF token, signed with HMAC-SHA256; nothing secret is
in it. Every replica derives the same signing secret (``console.session_secret``,
else from ``auth.master_key``, else a random one kept in ``data_dir``), so a
session made by one is honoured by all; changing the master key signs
everyone out.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import secrets
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import orjson

from seawall.config import Settings

COOKIE = "sw_session"
PRE_COOKIE = "sw_signin"  # the sign-in form's own CSRF token (no session yet)
CSRF_HEADER = "x-csrf-token"
CSRF_FIELD = "csrf"
MAX_COOKIE = 4096


@dataclass(frozen=True, slots=True)
class Identity:
    """Who is using the console. ``tenant`` None: every tenant (the operator)."""

    sub: str  # "operator" (master key), "anonymous" (loopback), or a key id
    role: str  # operator | tenant_admin | app (a key with an admin scope)
    tenant: str | None
    csrf: str
    exp: float
    name: str = ""  # a key's name, for the page header
    kf: str = ""  # a key's fingerprint (seawall/console/keyauth.py); "" for the operator

    @property
    def is_key(self) -> bool:
        """Signed in with a virtual key (checked again on every use)."""
        return bool(self.kf)

    @property
    def anonymous(self) -> bool:
        return self.sub == "anonymous"


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def session_secret(settings: Settings) -> bytes:
    """The signing secret, the same on every replica of one deployment."""
    if settings.console.session_secret:
        return settings.console.session_secret.encode()
    if settings.auth.master_key:
        return hmac.new(settings.auth.master_key.encode(), b"seawall console session v1",
                        hashlib.sha256).digest()
    path = Path(settings.data_dir) / "console.secret"
    try:
        return bytes.fromhex(path.read_text().strip())
    except (OSError, ValueError):
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    tmp.write_text(secrets.token_hex(32))
    tmp.chmod(0o600)
    try:
        os.link(tmp, path)  # first writer wins; the others read its secret
    except FileExistsError:
        pass
    finally:
        tmp.unlink(missing_ok=True)
    return bytes.fromhex(path.read_text().strip())


class Sessions:
    """Makes and checks session cookies and CSRF tokens."""

    def __init__(self, secret: bytes, ttl_s: float) -> None:
        self._secret = secret
        self.ttl_s = ttl_s

    def _mac(self, payload: bytes) -> str:
        return _b64(hmac.new(self._secret, payload, hashlib.sha256).digest())

    def new(self, sub: str, role: str, tenant: str | None, name: str = "",
            kf: str = "") -> Identity:
        return Identity(sub=sub, role=role, tenant=tenant, csrf=secrets.token_urlsafe(24),
                        exp=time.time() + self.ttl_s, name=name, kf=kf)

    def cookie(self, ident: Identity) -> str:
        payload = orjson.dumps(asdict(ident))
        return f"{_b64(payload)}.{self._mac(payload)}"

    def read(self, value: str | None) -> Identity | None:
        """The identity of a cookie value; None when absent, forged or expired."""
        if not value or len(value) > MAX_COOKIE or value.count(".") != 1:
            return None
        body, mac = value.split(".")
        try:
            payload = _unb64(body)
        except ValueError:
            return None
        if not hmac.compare_digest(mac, self._mac(payload)):
            return None
        try:
            ident = Identity(**orjson.loads(payload))
        except (orjson.JSONDecodeError, TypeError):
            return None
        return ident if ident.exp > time.time() else None

    def pre_token(self) -> str:
        """A signed random token for the sign-in form (double submit)."""
        nonce = secrets.token_urlsafe(18)
        return f"{nonce}.{self._mac(nonce.encode())}"

    def pre_ok(self, cookie: str | None, field: str | None) -> bool:
        if not cookie or not field or not hmac.compare_digest(cookie, field):
            return False
        nonce, _, mac = cookie.partition(".")
        return hmac.compare_digest(mac, self._mac(nonce.encode()))


def csrf_ok(ident: Identity | None, token: str | None) -> bool:
    return (ident is not None and token is not None
            and hmac.compare_digest(ident.csrf.encode(), token.encode()))


def cookie_header(name: str, value: str, max_age: int, secure: bool) -> str:
    """A ``set-cookie`` value: HttpOnly, SameSite=Strict, whole site."""
    parts = [f"{name}={value}", "Path=/", f"Max-Age={max_age}", "HttpOnly", "SameSite=Strict"]
    if secure:
        parts.append("Secure")
    return "; ".join(parts)


def cookie_value(raw: str | None, name: str) -> str | None:
    """One cookie's value from a ``cookie`` header."""
    if not raw:
        return None
    for part in raw.split(";"):
        k, _, v = part.strip().partition("=")
        if k == name:
            return v
    return None
