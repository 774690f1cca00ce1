"""Console sessions of virtual keys (a tenant admin, or any key holding an
admin scope): the session remembers the key by id, never its secret, and
every use checks the key again, so a revoked, expired or rotated-out key
ends its sessions at once.

- The cookie holds the key's id and a *fingerprint* of the hash of the
  secret that signed in (an HMAC under the session secret): after a
  rotation the session lives as long as that secret does (its grace), and
  the fingerprint tells nothing about the secret or its stored hash.
- Calls the console makes to the public API carry a credential minted here
  (``swc-<id>.<fingerprint>.<mac>``, MAC under a random per-process secret):
  only this process's bridge can make one and only its auth stage takes it
  (``AuthStage.console``); it is never sent to a browser.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets

from seawall.pipeline.permissions import RESERVED_TENANTS, key_usable, scopes_of
from seawall.pipeline.stages import CONSOLE_TOKEN_PREFIX, AuthStage
from seawall.store.base import ApiKey

MAX_TOKEN = 512


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def may_sign_in(key: ApiKey) -> bool:
    """A key may sign in to the console when it holds an admin scope."""
    return any(s.startswith("admin:") for s in scopes_of(key))


class ConsoleKeys:
    """Checks the key behind a console session, for pages and API calls."""

    def __init__(self, session_secret: bytes, auth: AuthStage) -> None:
        self._fp_secret = hmac.new(session_secret, b"console key fingerprint v1",
                                   hashlib.sha256).digest()
        self._mint_secret = secrets.token_bytes(32)  # never leaves this process
        self._auth = auth

    def fingerprint(self, key_hash: str) -> str:
        return _b64(hmac.new(self._fp_secret, key_hash.encode(), hashlib.sha256).digest()[:18])

    async def current(self, key_id: str, fp: str) -> ApiKey | None:
        """The key a session acts as, or None when the session has ended:
        the key is gone, revoked or expired, the secret that signed in was
        rotated out, or the key lost its admin scopes."""
        if not key_id or not fp:
            return None
        key = await self._auth.key_by_id(key_id)
        if key is None:
            return None
        if hmac.compare_digest(fp, self.fingerprint(key.key_hash)):
            used = key.key_hash
        elif key.prev_hash and hmac.compare_digest(fp, self.fingerprint(key.prev_hash)):
            used = key.prev_hash
        else:
            return None
        if (key_usable(key, used) is not None or key.tenant.lower() in RESERVED_TENANTS
                or not may_sign_in(key)):
            return None
        return key

    def _mac(self, body: str) -> str:
        return _b64(hmac.new(self._mint_secret, body.encode(), hashlib.sha256).digest())

    def token(self, key_id: str, fp: str) -> str:
        """The credential the bridge adds to a key session's API call."""
        body = f"{key_id}.{fp}"
        return f"{CONSOLE_TOKEN_PREFIX}{body}.{self._mac(body)}"

    async def from_token(self, token: str) -> ApiKey | None:
        """The key behind a bridge credential (``AuthStage.console``)."""
        if len(token) > MAX_TOKEN or not token.startswith(CONSOLE_TOKEN_PREFIX):
            return None
        body, _, mac = token[len(CONSOLE_TOKEN_PREFIX):].rpartition(".")
        if not body or not hmac.compare_digest(mac, self._mac(body)):
            return None
        key_id, _, fp = body.rpartition(".")
        return await self.current(key_id, fp)
