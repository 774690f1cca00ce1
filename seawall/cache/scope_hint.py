"""A compact "maybe / certainly not" set of cache scopes (a Bloom filter).

The shared cache cannot keep every scope of every replica in memory, but
:meth:`CacheStore.may_have_scope` must answer on the event loop, without a
query, so a request whose scope holds no semantic entry skips the embedding.
A Bloom filter answers that in ~1.2 bytes per scope: a false "maybe" (1% of
absent scopes, or a purged one) costs one embedding and one query, never a
wrong answer; "no" is exact for what the filter was told. Deletes are not
supported: the filter is rebuilt from the rows now and then instead.
"""

from __future__ import annotations

import hashlib

_HASHES = 7  # with 10 bits an item: ~1% false "maybe" at capacity
_BITS_PER_ITEM = 10


class ScopeFilter:
    def __init__(self, capacity: int) -> None:
        self.capacity = max(capacity, 4096)
        self.m = self.capacity * _BITS_PER_ITEM
        self.bits = bytearray((self.m + 7) // 8)
        self.count = 0  # distinct scopes added (about: a false "maybe" is not counted)

    def _positions(self, scope: bytes) -> list[int]:
        d = hashlib.blake2b(scope, digest_size=16).digest()
        h1 = int.from_bytes(d[:8], "little")
        h2 = int.from_bytes(d[8:], "little") | 1
        return [(h1 + i * h2) % self.m for i in range(_HASHES)]

    def add(self, scope: bytes) -> None:
        positions = self._positions(scope)
        if all(self.bits[p >> 3] >> (p & 7) & 1 for p in positions):
            return
        for p in positions:
            self.bits[p >> 3] |= 1 << (p & 7)
        self.count += 1

    def __contains__(self, scope: bytes) -> bool:
        return all(self.bits[p >> 3] >> (p & 7) & 1 for p in self._positions(scope))

    @property
    def full(self) -> bool:
        """Past capacity: false "maybe"s grow; time to rebuild bigger."""
        return self.count > self.capacity
