"""The outage log: one line when a repeating failure starts, a reminder at
most every ``every`` seconds with what was not logged, one when it ends."""

from __future__ import annotations

from structlog.testing import capture_logs

from router.logs import Outage
from tests.support import API_TOKEN, DaemonProcess, RedisServer, wait_for


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_an_outage_is_logged_when_it_starts_periodically_and_when_it_ends() -> None:
    import structlog

    clock = Clock()
    outage = Outage(structlog.get_logger("t"), "x_paused", "x_resumed", every=30, clock=clock)
    with capture_logs() as logs:
        outage.ok()  # nothing was wrong: nothing to say
        for _ in range(1000):  # e.g. a refused webhook each, in the first 10 s
            outage.failed(error="ConnectionError: refused")
            clock.now += 0.01
        clock.now += 25  # 35 s in: one reminder
        outage.failed(error="ConnectionError: refused")
        outage.failed(2, error="ConnectionError: refused")  # e.g. a refused batch of two
        clock.now += 5
        outage.ok(lane=0)
        outage.ok(lane=0)  # over already: said once
        outage.failed(error="again")  # a new outage starts a new count
    events = [(e["event"], e.get("log_level")) for e in logs]
    assert events == [
        ("x_paused", "warning"),
        ("x_paused", "warning"),
        ("x_resumed", "info"),
        ("x_paused", "warning"),
    ]
    first, reminder, resumed, again = logs
    assert first["error"] == "ConnectionError: refused" and "ongoing_seconds" not in first
    assert reminder["ongoing_seconds"] == 35.0
    assert reminder["failures_not_logged"] == 999  # all of the first 10 s but the first
    assert resumed["failures"] == 1003 and resumed["outage_seconds"] == 40.0
    assert resumed["lane"] == 0
    assert again["error"] == "again" and "failures_not_logged" not in again


async def test_log_pseudonyms_are_keyed_per_install(
    daemon: DaemonProcess, redis_server: RedisServer
) -> None:
    """The `routed` line names the sender by a hash keyed with this install's
    secret (meta `log_key`, made once in Redis), so a phone number cannot be
    found back by hashing every number; the same customer still reads the
    same in every line."""
    import hashlib

    import aiohttp

    number = "+14155550123"
    async with aiohttp.ClientSession() as http:
        for i in range(2):
            async with http.post(
                f"{daemon.url}/v1/messages",
                headers={"Authorization": f"Bearer {API_TOKEN}"},
                json={"from": number, "text": f"hello {i}", "id": f"k{i}"},
            ) as r:
                assert r.status == 202
    wait_for(lambda: len(daemon.events("routed")) == 2, what="two routed lines")
    senders = {e["sender"] for e in daemon.events("routed")}
    key = redis_server.client().hget("router:meta", "log_key")
    assert key and len(bytes.fromhex(key)) == 16
    keyed = hashlib.blake2s(number.encode(), digest_size=6, key=bytes.fromhex(key)).hexdigest()
    unkeyed = hashlib.blake2s(number.encode(), digest_size=5).hexdigest()
    assert senders == {f"phone:{keyed}"}
    assert unkeyed not in daemon.log() and number not in daemon.log()
