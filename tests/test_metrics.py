"""/metrics: every label comes from the code or the config, never from a caller."""

from __future__ import annotations

import asyncio
import re

import aiohttp

from router.metrics import BUILTIN_CHANNELS, Metrics, channel_label
from tests.support import API_TOKEN, DaemonProcess, RedisServer, wait_for

AUTH = {"Authorization": f"Bearer {API_TOKEN}"}


def series(text: str) -> list[str]:
    return [line for line in text.splitlines() if line and not line.startswith("#")]


def test_a_caller_channel_is_other() -> None:
    assert channel_label("sms") == "sms" and channel_label("api") == "api"
    assert channel_label("crm-42") == "other"
    m = Metrics()
    for i in range(1000):
        m.child(m.messages_in, f"ch{i}", "new").inc()
        m.outbox_sent.labels(f"ch{i}").inc()
    text = m.render().decode()
    assert 'router_messages_in_total{channel="other",result="new"} 1000.0' in text
    assert 'router_outbox_sent_total{channel="other"} 1000.0' in text
    assert "ch1" not in text
    assert len(m._children) == 1  # the hot-path cache stays bounded too
    assert {"api", "email", "chat", "sms", "whatsapp", "voice", "x"} <= BUILTIN_CHANNELS


async def test_five_thousand_channels_add_no_series(
    daemon: DaemonProcess, redis_server: RedisServer
) -> None:
    """The generic API lets a caller name its channel (`a-z 0-9 _ -`): 5,000
    distinct names are stored as sent, and counted under one `other` series."""
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{daemon.url}/metrics") as r:
            before = series(await r.text())

        sem = asyncio.Semaphore(32)

        async def post(i: int) -> None:
            async with sem:
                body = {"from": f"c{i}@example.org", "text": "hello", "channel": f"crm-{i}"}
                async with http.post(f"{daemon.url}/v1/messages", headers=AUTH, json=body) as r:
                    assert r.status == 202, await r.text()

        await asyncio.gather(*(post(i) for i in range(5000)))
        rc = redis_server.client()
        wait_for(
            lambda: sum(rc.xlen(f"router:q:{{general}}:p{b}") for b in range(4)) >= 5000,
            timeout=120,
            what="5,000 messages routed",
        )
        async with http.get(f"{daemon.url}/metrics") as r:
            assert r.status == 200
            after = series(await r.text())

    assert 'router_messages_in_total{channel="other",result="new"} 5000.0' in after
    names = lambda lines: {re.sub(r" [^ ]+$", "", line) for line in lines}  # noqa: E731
    added = names(after) - names(before)
    # the first messages add a fixed few series (counters now non-zero, the
    # routed queue, latency buckets), never one per channel
    assert not any("crm-" in s for s in added), sorted(added)[:5]
    assert len(added) < 40, sorted(added)
