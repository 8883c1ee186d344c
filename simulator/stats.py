"""Counters that tests and benchmarks read through ``GET /_sim/stats`` (or ``sim.state.stats``).

Only the Shoptet API and the OAuth server are counted; admin calls never are.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Any


@dataclass
class InstallTokenStats:
    issued: int = 0
    max_valid: int = 0
    evicted: int = 0  # invalidated because a sixth token was issued


@dataclass
class Stats:
    requests: Counter[tuple[str, int]] = field(default_factory=Counter)
    in_flight_tokens: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    in_flight_ips: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    #: Requests served at once per token: at most the limit, since a request past it gets a 429.
    max_concurrency_per_token: dict[str, int] = field(default_factory=dict)
    #: Requests that arrived at once per token, refused ones too: what the client attempted.
    peak_requests_per_token: dict[str, int] = field(default_factory=dict)
    max_concurrency_per_ip: dict[str, int] = field(default_factory=dict)
    rate_limited: Counter[str] = field(default_factory=Counter)  # reason -> 429s
    locked: int = 0
    faults: Counter[str] = field(default_factory=Counter)
    wrong_content_type: int = 0
    access_tokens: dict[str, InstallTokenStats] = field(default_factory=lambda: defaultdict(InstallTokenStats))
    webhook_attempts: int = 0
    webhook_delivered: int = 0
    webhook_failed: int = 0  # gave up after the last attempt
    webhook_by_event: Counter[str] = field(default_factory=Counter)

    def reset(self) -> None:
        """Zero every counter in place (other objects hold this instance); requests in flight stay counted."""
        fresh = Stats(in_flight_tokens=self.in_flight_tokens, in_flight_ips=self.in_flight_ips)
        self.__dict__.update(fresh.__dict__)

    def enter(self, token: str, ip: str) -> tuple[int, int]:
        """Count a request in; returns (in flight on this token, in flight from this IP) including it."""
        self.in_flight_tokens[token] += 1
        self.in_flight_ips[ip] += 1
        on_token = self.in_flight_tokens[token]
        if token and on_token > self.peak_requests_per_token.get(token, 0):
            self.peak_requests_per_token[token] = on_token
        return on_token, self.in_flight_ips[ip]

    def leave(self, token: str, ip: str) -> None:
        self.in_flight_tokens[token] -= 1
        self.in_flight_ips[ip] -= 1

    def admitted(self, token: str, ip: str, on_token: int, on_ip: int) -> None:
        if token and on_token > self.max_concurrency_per_token.get(token, 0):
            self.max_concurrency_per_token[token] = on_token
        if on_ip > self.max_concurrency_per_ip.get(ip, 0):
            self.max_concurrency_per_ip[ip] = on_ip

    def total_requests(self) -> int:
        return sum(self.requests.values())

    def status_count(self, status: int) -> int:
        return sum(n for (_, code), n in self.requests.items() if code == status)

    def snapshot(self) -> dict[str, Any]:
        by_endpoint: dict[str, dict[str, int]] = defaultdict(dict)
        for (endpoint, status), n in sorted(self.requests.items()):
            by_endpoint[endpoint][str(status)] = n
        return {
            "requests": {"total": self.total_requests(), "byEndpoint": by_endpoint},
            "maxConcurrencyPerToken": dict(self.max_concurrency_per_token),
            "maxConcurrencyPerIp": dict(self.max_concurrency_per_ip),
            "peakRequestsPerToken": dict(self.peak_requests_per_token),
            "served429": self.status_count(429),
            "served423": self.status_count(423),
            "rateLimitedByReason": dict(self.rate_limited),
            "locked": self.locked,
            "faults": dict(self.faults),
            "wrongContentType": self.wrong_content_type,
            "accessTokens": {
                "issued": sum(s.issued for s in self.access_tokens.values()),
                "byInstall": {k: vars(v) for k, v in self.access_tokens.items()},
                "maxValidAtOnce": max((s.max_valid for s in self.access_tokens.values()), default=0),
            },
            "webhooks": {
                "attempts": self.webhook_attempts,
                "delivered": self.webhook_delivered,
                "failed": self.webhook_failed,
                "byEvent": dict(self.webhook_by_event),
            },
        }
