"""Which requests a rollout's candidate sees: a pure choice per request.

A request with a routing key goes where its key's bucket says, so one client (one key)
sticks to one version for the whole rollout; without a key each request draws anew.
"""

from __future__ import annotations

import hashlib

BUCKETS = 10_000  # a share is honoured to 0.01 percent


def bucket_of(key: str) -> int:
    """A routing key's fixed bucket in [0, BUCKETS): the same on every process and host."""
    digest = hashlib.blake2b(key.encode("utf-8", "surrogatepass"), digest_size=8).digest()
    return int.from_bytes(digest, "big") % BUCKETS


def chosen(percent: float, key: str | None, draw: float) -> bool:
    """Whether a request falls in the candidate's share: by its key's bucket, or by `draw`
    (uniform in [0, 1)) when it has no key."""
    if key:
        return bucket_of(key) < percent * BUCKETS / 100
    return draw < percent / 100
