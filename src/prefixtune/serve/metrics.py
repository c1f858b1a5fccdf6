"""Prometheus metrics of the server (one `CollectorRegistry` per server, so tests can run several).

Depends on prometheus_client only; the engine, registry and HTTP layer each update their own metrics.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
_BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)


class ServeMetrics:
    """Every metric `prefixtune serve` exports, prefixed `prefixtune_`."""

    content_type = CONTENT_TYPE_LATEST

    def __init__(self) -> None:
        r = self.registry = CollectorRegistry()
        self._extra_registries: list[CollectorRegistry] = []
        self.requests = Counter(
            "prefixtune_requests",
            "HTTP generation and classification requests by endpoint and status",
            ["endpoint", "status"],
            registry=r,
        )
        self.request_latency = Histogram(
            "prefixtune_request_latency_seconds",
            "End-to-end latency of generation and classification requests (streams: to the last event)",
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.time_to_first_token = Histogram(
            "prefixtune_time_to_first_token_seconds", "Arrival to first token", buckets=_LATENCY_BUCKETS, registry=r
        )
        self.inter_token_latency = Histogram(
            "prefixtune_inter_token_latency_seconds", "Time between tokens", buckets=_LATENCY_BUCKETS, registry=r
        )
        self.prompt_tokens = Counter("prefixtune_prompt_tokens", "Prompt tokens computed", registry=r)
        self.generation_tokens = Counter("prefixtune_generation_tokens", "Tokens generated", registry=r)
        self.queue_depth = Gauge("prefixtune_queue_depth", "Requests waiting for a slot", registry=r)
        self.running = Gauge("prefixtune_running_requests", "Requests holding a KV slot", registry=r)
        self.batch_size = Histogram(
            "prefixtune_batch_size", "Requests computed per engine step", buckets=_BATCH_BUCKETS, registry=r
        )
        self.batch_size_max = Gauge("prefixtune_batch_size_max", "Largest step batch seen", registry=r)
        self._largest_batch = 0
        self.step_adapters = Histogram(
            "prefixtune_step_distinct_adapters",
            "Distinct adapters (and base) per step",
            buckets=_BATCH_BUCKETS,
            registry=r,
        )
        self.cache_hits = Counter("prefixtune_adapter_cache_hits", "Compiled-prefix cache hits", registry=r)
        self.cache_misses = Counter("prefixtune_adapter_cache_misses", "Compiled-prefix cache misses", registry=r)
        self.cache_evictions = Counter("prefixtune_adapter_cache_evictions", "Compiled prefixes evicted", registry=r)
        self.cache_bytes = Gauge("prefixtune_adapter_cache_bytes", "Bytes of compiled prefixes cached", registry=r)
        self.integrity_failures = Counter(
            "prefixtune_adapter_integrity_failures",
            "Evicted adapters not recompiled because their files changed or broke after loading",
            registry=r,
        )
        self.adapters = Gauge("prefixtune_adapters_registered", "Adapters registered", registry=r)

    def observe_step(self, batch_size: int, distinct_adapters: int) -> None:
        self.batch_size.observe(batch_size)
        self.step_adapters.observe(distinct_adapters)
        if batch_size > self._largest_batch:
            self._largest_batch = batch_size
            self.batch_size_max.set(batch_size)

    def add_registry(self, registry: CollectorRegistry) -> None:
        """Also expose another registry's metrics on /metrics (an engine's own, such as vLLM's `vllm:*`)."""
        self._extra_registries.append(registry)

    def render(self) -> bytes:
        """The Prometheus text exposition."""
        return b"".join(generate_latest(r) for r in (self.registry, *self._extra_registries))
