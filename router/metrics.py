"""Prometheus metrics of one daemon, on its own registry (no globals).

Every label value comes from the code or the configuration, never from a
caller: a channel name a client chose (the generic API's ``channel``) is
counted as ``other`` unless it is one of the daemon's own channels, so no
input can add series (each costs memory in the daemon and in Prometheus).
"""

from __future__ import annotations

import asyncio
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from router.channels import CHANNEL_NAMES

# The channels the daemon's own adapters speak (router/channels.py); any
# other name is "other".
BUILTIN_CHANNELS = CHANNEL_NAMES
OTHER = "other"


def channel_label(channel: str) -> str:
    """The metric label for a message's channel: bounded, whatever the caller sent."""
    return channel if channel in BUILTIN_CHANNELS else OTHER


class _ByChannel:
    """A metric whose first label is a channel: ``labels()`` maps it through
    channel_label, so no call site can pass a caller's string through."""

    def __init__(self, metric: Any) -> None:
        self.metric = metric

    def labels(self, channel: str, *rest: str) -> Any:
        return self.metric.labels(channel_label(channel), *rest)


class Metrics:
    """Every metric the daemon exports on ``/metrics``."""

    def __init__(self) -> None:
        r = self.registry = CollectorRegistry()
        self.messages_in = _ByChannel(
            Counter(
                "router_messages_in_total",
                "Messages accepted from a channel (result=new|duplicate)",
                ["channel", "result"],
                registry=r,
            )
        )
        self.ingest_unavailable = _ByChannel(
            Counter(
                "router_ingest_unavailable_total",
                "Messages refused because Redis could not store them (sources retry)",
                ["channel"],
                registry=r,
            )
        )
        self.routed = Counter(
            "router_messages_routed_total",
            "Messages placed in an agent queue",
            ["queue"],
            registry=r,
        )
        self.routing_latency = Histogram(
            "router_routing_latency_seconds",
            "From receipt by the daemon to the entry in the agent queue",
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
            registry=r,
        )
        self.dead_letters = Counter(
            "router_dead_letters_total",
            "Messages or replies moved to the dead-letter stream",
            ["source"],
            registry=r,
        )
        self.overflowed = Counter(
            "router_overflow_moves_total",
            "Queue entries moved to their next target after waiting unclaimed",
            ["from_queue", "to_queue"],
            registry=r,
        )
        self.sla_breaches = Counter(
            "router_sla_breaches_total",
            "Response targets that passed with no agent reply (each acted on once)",
            ["queue", "target"],
            registry=r,
        )
        self.outbox_sent = _ByChannel(
            Counter("router_outbox_sent_total", "Replies delivered", ["channel"], registry=r)
        )
        self.outbox_failures = _ByChannel(
            Counter(
                "router_outbox_failures_total",
                "Failed delivery attempts (each retry counts)",
                ["channel"],
                registry=r,
            )
        )
        self.queue_depth = Gauge(
            "router_queue_depth",
            "Entries waiting or claimed in an agent queue",
            ["queue"],
            registry=r,
        )
        self.queue_oldest_age = Gauge(
            "router_queue_oldest_age_seconds",
            "Age of the oldest entry of an agent queue",
            ["queue"],
            registry=r,
        )
        self.ingest_backlog = Gauge(
            "router_ingest_backlog",
            "Messages stored but not yet routed, all partitions (from Redis: any daemon)",
            registry=r,
        )
        self.ingest_oldest_age = Gauge(
            "router_ingest_oldest_age_seconds",
            "Age of the oldest message waiting to be routed (0: none); alert when it grows",
            registry=r,
        )
        self.partitions_owned = Gauge(
            "router_ingest_partitions_owned", "Ingest partitions this daemon routes", registry=r
        )
        self.adapter_ready = Gauge(
            "router_adapter_ready",
            "1 while a channel adapter is connected and working",
            ["adapter"],
            registry=r,
        )
        self.adapter_state = Gauge(
            "router_adapter_state",
            "What a channel adapter reports about itself",
            ["adapter", "name"],
            registry=r,
        )
        self.http_refused = Counter(
            "router_http_connections_refused_total",
            "Connections answered 503 and closed because http.max_connections were open",
            registry=r,
        )
        self.config_reloads = Counter(
            "router_config_reloads_total",
            "Config reloads (result=ok|error)",
            ["result"],
            registry=r,
        )

        self._children: dict[tuple[int, tuple[str, ...]], Any] = {}

    def child(self, metric: Any, *labels: str) -> Any:
        """``metric.labels(*labels)``, cached: the lookup is costly on the hot path.
        (Label values are built-in channels, configured queues and results: a
        small, bounded set, so the cache is bounded too.)"""
        if isinstance(metric, _ByChannel) and labels:
            labels = (channel_label(labels[0]), *labels[1:])
        key = (id(metric), labels)
        found = self._children.get(key)
        if found is None:
            found = self._children[key] = metric.labels(*labels)
        return found

    def render(self) -> bytes:
        return generate_latest(self.registry)

    async def render_async(self) -> bytes:
        """render() in a worker thread: a scrape never holds the event loop."""
        return await asyncio.to_thread(generate_latest, self.registry)
