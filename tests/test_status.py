"""`router status` and the ingest-backlog metrics: what is waiting to be
routed, who holds which partition, and what looks wrong, read from Redis."""

from __future__ import annotations

from router.config import Config
from router.ingest import Ingestor
from router.status import ingest_status, overview
from router.store import Store
from tests.test_pipeline import drain, msg, worker


async def test_backlog_holders_and_problems_follow_the_routing(store: Store, cfg: Config) -> None:
    ing = Ingestor(store, 60)
    for i in range(6):
        await ing.ingest(msg(sender=f"u{i}@example.com"))
    status = await ingest_status(store)
    assert status.backlog == 6 and status.in_flight == 0
    assert status.oldest_age_seconds is not None and 0 <= status.oldest_age_seconds < 30
    assert all(p.holder is None for p in status.partitions)
    assert sum(p.backlog for p in status.partitions if p.backlog) == 6
    o = await overview(store)
    assert o["routing_nodes"] == []
    assert o["problems"] == [
        "6 messages wait to be routed and no routing daemon is alive: "
        "start `router serve` (systemctl start router)"
    ]

    w = worker(store, cfg, "node-a")
    await w.renew_leases(5)
    for p in w.owned:
        w.owned[p] = ">"
    read = await w.read(100, None)  # read, not yet committed
    status = await ingest_status(store)
    assert status.backlog == 6 and status.in_flight == len(read) == 6
    assert {p.holder for p in status.partitions} == {"node-a"}
    o = await overview(store)
    assert [n["node"] for n in o["routing_nodes"]] == ["node-a"]
    assert 0 < o["routing_nodes"][0]["heartbeat_expires_in_seconds"] <= 5
    assert o["problems"] == []

    await w.route(read)
    await drain(w)
    status = await ingest_status(store)
    assert (status.backlog, status.in_flight, status.oldest_age_seconds) == (0, 0, None)
    o = await overview(store)
    assert o["ingest"]["backlog"] == 0
    assert sum(q["depth"] for q in o["queues"]) == 6
    assert o["dead_letters"] == 0 and o["outbox"] == {"waiting": 0, "retrying": 0}

    await w.release_leases()  # the daemon stopped: nothing waits, so no problem
    assert (await overview(store))["problems"] == []
