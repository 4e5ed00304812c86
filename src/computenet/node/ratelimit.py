"""Per-token request limits: a token bucket for each caller, kept in memory.

Each replica of a node keeps its own buckets, so behind a load balancer over R replicas a
caller gets up to R times the rate; the limit is there to stop runaway clients, not to bill.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict

from computenet.errors import RateLimited

_MAX_BUCKETS = 100_000  # idle callers beyond this are forgotten, oldest first


class RateLimiter:
    """Allow ``rate_per_s`` requests a second per key, in bursts of up to ``burst``."""

    def __init__(self, rate_per_s: float, burst: float, tenant_factor: float = 4.0) -> None:
        if rate_per_s <= 0 or burst < 1 or tenant_factor < 1:
            raise ValueError("rate_per_s must be positive, burst and tenant_factor at least 1")
        self.rate_per_s = rate_per_s
        self.burst = burst
        # A tenant (organisation) may spend ``tenant_factor`` tokens' worth in all.
        self._tenants = (
            None
            if tenant_factor == 1
            else RateLimiter(rate_per_s * tenant_factor, burst * tenant_factor, 1)
        )
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()
        self._lock = threading.Lock()

    def take_tenant(self, tenant: str, now: float | None = None) -> None:
        """Spend one request of the tenant's shared allowance, or raise ``RateLimited``."""
        (self._tenants or self).take(f"tenant:{tenant}", now)

    def take(self, key: str, now: float | None = None) -> None:
        """Spend one request of ``key``'s allowance, or raise ``RateLimited``."""
        now = time.monotonic() if now is None else now
        with self._lock:
            tokens, last = self._buckets.pop(key, (self.burst, now))
            tokens = min(self.burst, tokens + (now - last) * self.rate_per_s)
            if tokens < 1:
                self._buckets[key] = (tokens, now)
                wait_s = (1 - tokens) / self.rate_per_s
                raise RateLimited(
                    f"rate limit of {self.rate_per_s:g} requests/s exceeded; "
                    f"retry in {wait_s:.2f} s",
                    retry_after_s=wait_s,
                )
            self._buckets[key] = (tokens - 1, now)
            if len(self._buckets) > _MAX_BUCKETS:
                self._buckets.popitem(last=False)
