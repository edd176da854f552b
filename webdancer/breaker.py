"""Circuit breakers: when an endpoint keeps failing, every rollout using it pauses instead of burning its queue.

One breaker per endpoint (a model's base URL, a search backend's URL), shared by every client in the
process. It opens after `failures` consecutive failed attempts (connection errors, timeouts,
429/5xx); while open, attempts wait, and one at a time probes the endpoint with a growing backoff;
the first success closes it and everyone goes on. Open for longer than `infra.max_outage_s`, it gives up:
every waiting and later attempt raises OutageError at once, so the rollouts end as outages (kept
apart, run again by a rerun) and the run stops cleanly instead of hanging.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import time
from typing import Optional

from webdancer.config import InfraConfig
from webdancer.errors import OutageError


class CircuitBreaker:
    def __init__(self, name: str, settings: InfraConfig):
        self.name = name
        self.settings = settings
        self.consecutive = 0
        self.opened_at: Optional[float] = None  # monotonic
        self.opened_wall: Optional[dt.datetime] = None
        self.last_error = ""
        self._probing = False
        self._next_probe = 0.0
        self._backoff = settings.probe_min_s

    @property
    def is_open(self) -> bool:
        return self.opened_at is not None

    def down_for_s(self) -> float:
        return 0.0 if self.opened_at is None else time.monotonic() - self.opened_at

    def describe(self) -> str:
        since = self.opened_wall.strftime("%H:%M:%S") if self.opened_wall else "?"
        return f"{self.name} down since {since} ({self.down_for_s():.0f} s: {self.last_error[:80]})"

    def _give_up(self) -> OutageError:
        return OutageError(
            f"{self.name} has been down for {self.down_for_s():.0f} s (since {self.opened_wall:%H:%M:%S} UTC; last error: "
            f"{self.last_error[:160]}), longer than infra.max_outage_s={self.settings.max_outage_s:g}"
        )

    async def admit(self) -> bool:
        """Wait until an attempt may go out; True when this attempt is the probe of an open breaker.

        Given up (open past max_outage_s), attempts fail at once, except one probe per backoff, so a
        long-lived process (the demo) recovers when the endpoint does.
        """
        while self.opened_at is not None:
            now = time.monotonic()
            if not self._probing and now >= self._next_probe:
                self._probing = True
                return True
            if self.down_for_s() > self.settings.max_outage_s:
                raise self._give_up()
            await asyncio.sleep(min(0.05 + max(0.0, self._next_probe - now), 1.0))
        return False

    def success(self, probe: bool = False) -> None:
        self.consecutive = 0
        if self.opened_at is not None:
            self.opened_at = self.opened_wall = None
            self._backoff = self.settings.probe_min_s
        if probe:
            self._probing = False

    def release(self, probe: bool) -> None:
        """The attempt was cancelled: it says nothing about the endpoint."""
        if probe:
            self._probing = False

    def failure(self, reason: str, probe: bool = False) -> None:
        self.consecutive += 1
        self.last_error = reason
        if self.opened_at is None and self.consecutive >= self.settings.breaker_failures:
            self.opened_at = time.monotonic()
            self.opened_wall = dt.datetime.now(dt.timezone.utc)
            self._backoff = self.settings.probe_min_s
            self._next_probe = self.opened_at + self._backoff
        elif probe:
            self._backoff = min(self._backoff * 2, self.settings.probe_max_s)
            self._next_probe = time.monotonic() + self._backoff
        if probe:
            self._probing = False


class Breakers:
    """The process's breakers by endpoint, all on the settings of the last loaded config (`infra`)."""

    def __init__(self) -> None:
        self.settings = InfraConfig()
        self._by_name: dict[str, CircuitBreaker] = {}

    def configure(self, settings: InfraConfig) -> None:
        self.settings = settings
        for breaker in self._by_name.values():
            breaker.settings = settings

    def get(self, name: str) -> CircuitBreaker:
        breaker = self._by_name.get(name)
        if breaker is None:
            breaker = self._by_name[name] = CircuitBreaker(name, self.settings)
        return breaker

    def reset(self) -> None:
        """Forget every endpoint's state (tests: each starts with closed breakers)."""
        self._by_name.clear()

    def down(self) -> list[str]:
        """What is down now, for live status lines."""
        return [b.describe() for b in self._by_name.values() if b.is_open]


BREAKERS = Breakers()
