"""``router``: the command line. It parses arguments and calls the library.

Every command takes ``--config FILE`` (default ``$ROUTER_CONFIG``, then
``/etc/router/router.yaml``) and honours the same ROUTER_* environment
overrides as the daemon, so it reaches the same Redis (for the embedded one,
the daemon's socket under the state directory).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

from router.config import Config, load_config
from router.yamlsource import ConfigError

DEFAULT_CONFIG = "/etc/router/router.yaml"


class CliError(Exception):
    """A failure to report on stderr and exit non-zero."""


def _print_json(data: Any) -> None:
    sys.stdout.write(orjson.dumps(data, option=orjson.OPT_INDENT_2).decode() + "\n")


def _config(args: argparse.Namespace, secrets: str = "redis") -> Config:
    return load_config(args.config, secrets=secrets)


async def _with_store(cfg: Config, fn: Callable[[Any], Awaitable[int]]) -> int:
    from redis.exceptions import ConnectionError as RedisConnectionError

    from router.store import Store

    if cfg.embedded_redis and not cfg.redis_socket.exists():
        raise CliError(
            f"the embedded Redis is not running (no socket at {cfg.redis_socket}); "
            "start the daemon with `router serve` first"
        )
    store = Store.open(cfg)
    try:
        return await fn(store)
    except (RedisConnectionError, OSError) as exc:
        raise CliError(f"cannot reach Redis at {cfg.redis_url}: {exc}") from None
    finally:
        await store.close()


# -- commands ---------------------------------------------------------------


def cmd_serve(args: argparse.Namespace) -> int:
    from router.app import serve

    try:
        import uvloop

        runner: Any = uvloop.run
    except ImportError:  # pragma: no cover - uvloop is a dependency on Linux
        runner = asyncio.run
    return int(runner(serve(Path(args.config))))


def cmd_check_config(args: argparse.Namespace) -> int:
    path = args.file or args.config
    cfg = load_config(path, unresolved_secrets="error" if args.strict else "warn")
    for warning in cfg.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    rules = len(cfg.rules)
    summary = f"{path}: OK ({len(cfg.queues)} queues, {rules} rules)"
    if cfg.warnings:
        n = len(cfg.warnings)
        summary += (
            f"; {n} secret{'s' if n > 1 else ''} not available here "
            "(the daemon will refuse to start without; --strict makes this an error)"
        )
    print(summary)
    return 0


def cmd_explain(args: argparse.Namespace) -> int:
    from router.explain import ExplainError, check_at, explain
    from router.pipeline import CLOCK_OFFSET_ENV, clock_offset

    cfg = _config(args, secrets="none")
    raw = sys.stdin.buffer.read()
    at = args.at
    try:
        if at is None:  # decide on the daemon's routing clock
            try:
                offset = clock_offset()
            except ValueError as exc:
                raise CliError(str(exc)) from None
            if offset:
                shifted = check_at(time.time() + offset, f"now + {CLOCK_OFFSET_ENV}")
                at = datetime.fromtimestamp(shifted, UTC).isoformat()
        _print_json(explain(cfg, raw, at))
    except ExplainError as exc:
        raise CliError(str(exc)) from None
    return 0


def cmd_queue_list(args: argparse.Namespace) -> int:
    from router.agent import AgentClient

    async def run(store: Any) -> int:
        rows = [s.to_dict() for s in await AgentClient(store).status()]
        if args.json:
            _print_json(rows)
            return 0
        print(f"{'QUEUE':<28} {'DEPTH':>7} {'CLAIMED':>8} {'OLDEST':>10}  AGENTS ONLINE")
        for r in rows:
            age = r["oldest_age_seconds"]
            agents = ", ".join(r["agents_online"]) or "-"
            print(f"{r['queue']:<28} {r['depth']:>7} {r['claimed']:>8} {_age(age):>10}  {agents}")
        return 0

    return asyncio.run(_with_store(_config(args), run))


def cmd_status(args: argparse.Namespace) -> int:
    from router.status import overview

    async def run(store: Any) -> int:
        o = await overview(store)
        if args.json:
            _print_json(o)
            return 0
        print(f"Redis {o['redis']['version']}, key prefix {o['redis']['prefix']}")
        nodes = o["routing_nodes"]
        print(
            "routing daemons alive: "
            + (", ".join(n["node"] for n in nodes) if nodes else "none (nothing is being routed)")
        )
        ing = o["ingest"]
        oldest = ing["oldest_age_seconds"]
        print(
            f"ingest: {ing['backlog']} waiting to be routed ({ing['in_flight']} being routed)"
            + (f", oldest {_age(oldest)}" if oldest is not None else "")
        )
        print(f"  {'PARTITION':>9} {'HOLDER':<28} {'BACKLOG':>8} {'ROUTING':>8} {'OLDEST':>8}")
        for p in ing["partitions"]:
            print(
                f"  {p['partition']:>9} {p['holder'] or '-':<28} {p['backlog']:>8} "
                f"{p['in_flight']:>8} {_age(p['oldest_age_seconds']):>8}"
            )
        print(f"  {'QUEUE':<38} {'DEPTH':>8} {'CLAIMED':>8} {'OLDEST':>8}")
        for q in o["queues"]:
            print(
                f"  {q['queue']:<38} {q['depth']:>8} {q['claimed']:>8} "
                f"{_age(q['oldest_age_seconds']):>8}"
            )
        ob = o["outbox"]
        print(f"outbox: {ob['waiting']} to send, {ob['retrying']} waiting to retry")
        print(f"dead letters: {o['dead_letters']} (`router dead-letters list`)")
        for problem in o["problems"]:
            print(f"PROBLEM: {problem}")
        return 0

    return asyncio.run(_with_store(_config(args), run))


def _age(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 120:
        return f"{seconds:.0f}s"
    if seconds < 7200:
        return f"{seconds / 60:.0f}m"
    return f"{seconds / 3600:.1f}h"


def cmd_queue_pull(args: argparse.Namespace) -> int:
    from router.agent import AgentClient, AgentError

    async def run(store: Any) -> int:
        client = AgentClient(store)
        deadline = time.monotonic() + args.wait
        try:
            while True:
                entry = await client.claim(args.queue, args.agent)
                if entry is not None or time.monotonic() >= deadline:
                    break
                await asyncio.sleep(0.2)
        except AgentError as exc:
            raise CliError(str(exc)) from None
        if entry is None:
            if args.json:
                _print_json(None)
            else:
                print(f"queue {args.queue} is empty", file=sys.stderr)
            return 3
        if args.json:
            _print_json(entry.to_dict())
        else:
            m = entry.message
            print(f"entry:        {entry.entry_id}  (queue {entry.queue}, {entry.priority})")
            print(f"conversation: {entry.fields.get('conversation_id')}")
            print(f"customer:     {entry.fields.get('customer_id')}")
            print(
                f"channel:      {entry.fields.get('channel')}  language: "
                f"{entry.fields.get('language')}"
            )
            if m.get("subject"):
                print(f"subject:      {m['subject']}")
            print()
            print(m.get("text") or "(no text)")
            note = orjson.loads(m["meta"]).get("note") if m.get("meta") else None
            if note:
                print(f"[{note}]")
            print()
            print(
                f"ack with:     router queue ack {entry.queue} {entry.entry_id} "
                f"--agent {args.agent}"
            )
        return 0

    return asyncio.run(_with_store(_config(args), run))


def _entry_command(action: str) -> Callable[[argparse.Namespace], int]:
    def command(args: argparse.Namespace) -> int:
        from router.agent import AgentClient, AgentError

        async def run(store: Any) -> int:
            client = AgentClient(store)
            try:
                await getattr(client, action)(args.queue, args.entry, args.agent)
            except AgentError as exc:
                raise CliError(str(exc)) from None
            print(f"{action}: {args.queue} {args.entry}")
            return 0

        return asyncio.run(_with_store(_config(args), run))

    return command


def cmd_reply(args: argparse.Namespace) -> int:
    from router.agent import AgentClient, AgentError

    text = args.text if args.text != "-" else sys.stdin.read()

    async def run(store: Any) -> int:
        try:
            outbox_id = await AgentClient(store).reply(
                args.conversation, text, agent=args.agent, channel=args.channel
            )
        except AgentError as exc:
            raise CliError(str(exc)) from None
        if args.json:
            _print_json({"outbox_id": outbox_id})
        else:
            print(f"queued reply {outbox_id}; follow it with: router outbox status {outbox_id}")
        return 0

    return asyncio.run(_with_store(_config(args), run))


def cmd_outbox_status(args: argparse.Namespace) -> int:
    from router.agent import AgentClient

    async def run(store: Any) -> int:
        state = await AgentClient(store).delivery(args.outbox_id)
        if not state:
            raise CliError(f"no delivery record for {args.outbox_id}")
        state.pop("text", None)
        _print_json(state)
        return 0

    return asyncio.run(_with_store(_config(args), run))


def cmd_dead_letters_list(args: argparse.Namespace) -> int:
    from router.deadletters import list_dead_letters

    async def run(store: Any) -> int:
        rows = await list_dead_letters(store, args.count)
        if args.json:
            _print_json([r.summary() for r in rows])
            return 0
        if not rows:
            print("no dead letters")
        for r in rows:
            s = r.summary()
            when = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(float(s.get("failed_at", 0))))
            ref = s.get("message_id") or s.get("outbox_id") or ""
            print(f"{r.id}  {when}Z  {s.get('kind')}/{s.get('stage')}  {ref}  {s.get('reason')}")
        return 0

    return asyncio.run(_with_store(_config(args), run))


def cmd_dead_letters_replay(args: argparse.Namespace) -> int:
    from router.deadletters import list_dead_letters, replay

    async def run(store: Any) -> int:
        ids = list(args.ids)
        if args.all:
            ids = [r.id for r in await list_dead_letters(store, count=1_000_000)]
        if not ids:
            raise CliError("name dead-letter ids to replay, or --all")
        ok = 0
        for n, (dl_id, new, note) in enumerate(await replay(store, ids), 1):
            ok += new is not None
            print(f"[{n}/{len(ids)}] {dl_id}: {note}" + (f" -> {new}" if new else ""))
        print(f"replayed {ok} of {len(ids)}")
        return 0 if ok == len(ids) else 1

    return asyncio.run(_with_store(_config(args), run))


def _admin_command(run_admin: Callable[[Any, argparse.Namespace], Awaitable[Any]]) -> Callable:
    """A command that runs one Admin operation and prints its result as JSON."""

    def command(args: argparse.Namespace) -> int:
        from router.profiles.admin import Admin, AdminError

        async def run(store: Any) -> int:
            try:
                result = await run_admin(Admin(store), args)
            except AdminError as exc:
                raise CliError(str(exc)) from None
            if result is not None:
                _print_json(result)
            return 0

        return asyncio.run(_with_store(_config(args), run))

    return command


async def _customer_set(admin: Any, args: argparse.Namespace) -> Any:
    values = {
        "tier": args.tier,
        "language_preference": args.language,
        "timezone": args.timezone,
        "name": args.name,
        "country": args.country,
    }
    if all(v is None for v in values.values()):
        raise CliError("nothing to set: give --tier, --language, --timezone, --name or --country")
    return await admin.set(args.customer, values)


async def _customer_merge(admin: Any, args: argparse.Namespace) -> Any:
    survivor = await admin.merge(args.keep, args.other, by="admin")
    return {"merged": args.other, "into": survivor}


async def _customer_import(admin: Any, args: argparse.Namespace) -> Any:
    def progress(rows: int, summary: Any) -> None:
        print(
            f"  {rows} rows: {summary.created} created, {summary.updated} updated, "
            f"{summary.merged} merged, {len(summary.skipped)} skipped",
            file=sys.stderr,
        )

    started = time.monotonic()
    summary = await admin.import_csv(Path(args.file), progress)
    for problem in summary.skipped:
        print(f"skipped {problem}", file=sys.stderr)
    print(
        f"imported {summary.rows} rows in {time.monotonic() - started:.1f}s: "
        f"{summary.created} created, {summary.updated} updated, {summary.merged} merged, "
        f"{len(summary.skipped)} skipped",
        file=sys.stderr,
    )
    return None


async def _customer_forget(admin: Any, args: argparse.Namespace) -> Any:
    if not args.yes:
        raise CliError("forget erases the customer's data for good; add --yes to confirm")
    return {"forgotten": args.customer, "removed": await admin.forget(args.customer)}


def cmd_customer_show(args: argparse.Namespace) -> int:
    from router.profiles.admin import Admin, AdminError, format_customer

    async def run(store: Any) -> int:
        admin = Admin(store)
        try:
            profile = await admin.show(args.customer)
        except AdminError as exc:
            raise CliError(str(exc)) from None
        if args.json:
            _print_json(profile)
            return 0
        newest = sorted(profile["conversations"], key=lambda c: -float(c["created_at"]))[:5]
        routing = {c["id"]: await admin.routing_of(c["id"]) for c in newest}
        print(format_customer(profile, routing, shown=5))
        return 0

    return asyncio.run(_with_store(_config(args), run))


def cmd_conversation_show(args: argparse.Namespace) -> int:
    from router.profiles.admin import Admin, AdminError, format_conversation

    async def run(store: Any) -> int:
        try:
            history = await Admin(store).conversation(args.conversation)
        except AdminError as exc:
            raise CliError(str(exc)) from None
        if args.json:
            _print_json(history)
        else:
            print(format_conversation(history))
        return 0

    return asyncio.run(_with_store(_config(args), run))


async def _conversation_status(admin: Any, args: argparse.Namespace) -> Any:
    await admin.set_status(args.conversation, args.status, args.agent)
    return {"conversation": args.conversation, "status": args.status}


def cmd_conversation_transfer(args: argparse.Namespace) -> int:
    from router.agent import AgentClient, AgentError

    async def run(store: Any) -> int:
        try:
            moved = await AgentClient(store).transfer(
                args.conversation, args.queue, agent=args.agent, note=args.note, by=args.by
            )
        except AgentError as exc:
            raise CliError(str(exc)) from None
        if args.json:
            _print_json(moved.to_dict())
        else:
            print(
                f"transferred {moved.conversation_id} from {moved.from_queue} to {moved.queue} "
                f"(entry {moved.entry_id})"
            )
        return 0

    return asyncio.run(_with_store(_config(args), run))


def cmd_agent_presence(args: argparse.Namespace) -> int:
    from router.agent import AgentClient, AgentError

    async def run(store: Any) -> int:
        client = AgentClient(store)
        if args.online:
            queues = args.queues.split(",") if args.queues is not None else None
            try:
                serving = await client.heartbeat(args.agent, args.ttl, queues)
            except AgentError as exc:
                raise CliError(str(exc)) from None
            where = f" for {', '.join(serving)}" if serving else ""
            print(f"{args.agent} is online{where} for {args.ttl:g}s (repeat before it ends)")
        else:
            await client.offline(args.agent)
            print(f"{args.agent} is offline")
        return 0

    return asyncio.run(_with_store(_config(args), run))


# -- parser ------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    default_config = os.environ.get("ROUTER_CONFIG", DEFAULT_CONFIG)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--config",
        "-c",
        default=default_config,
        help=f"config file (default: $ROUTER_CONFIG or {DEFAULT_CONFIG})",
    )
    p = argparse.ArgumentParser(
        prog="router", description="Omnichannel message-routing daemon and its tools."
    )
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    s = sub.add_parser("serve", parents=[common], help="run the daemon")
    s.set_defaults(func=cmd_serve)

    s = sub.add_parser(
        "check-config",
        parents=[common],
        help="validate a config file (exit 0, or FILE:LINE: message)",
    )
    s.add_argument("file", nargs="?", help="file to check (default: --config)")
    s.add_argument(
        "--strict",
        action="store_true",
        help="a secret that cannot be read here is an error (exit 2), as for `router serve`",
    )
    s.set_defaults(func=cmd_check_config)

    s = sub.add_parser(
        "explain", parents=[common], help="dry-run the routing of one message (JSON on stdin)"
    )
    s.add_argument("--at", help="decide as if at this ISO 8601 time (default: now)")
    s.set_defaults(func=cmd_explain)

    s = sub.add_parser(
        "status",
        parents=[common],
        help="routing daemons, ingest backlog per partition, queues, outbox, dead letters",
    )
    s.add_argument("--json", action="store_true")
    s.set_defaults(func=cmd_status)
    q = sub.add_parser("queue", help="agent queues").add_subparsers(
        dest="queue_command", required=True, metavar="ACTION"
    )
    s = q.add_parser("list", parents=[common], help="queues with depth and oldest age")
    s.add_argument("--json", action="store_true")
    s.set_defaults(func=cmd_queue_list)
    s = q.add_parser("pull", parents=[common], help="claim the most urgent entry of a queue")
    s.add_argument("queue")
    s.add_argument("--agent", required=True, help="agent name (the claim's owner)")
    s.add_argument("--wait", type=float, default=0.0, help="seconds to wait for an entry")
    s.add_argument("--json", action="store_true")
    s.set_defaults(func=cmd_queue_pull)
    for action, text in (
        ("ack", "finish a claimed entry (it leaves the queue)"),
        ("release", "give a claimed entry back to the queue"),
        ("renew", "keep a claim alive past the visibility timeout"),
    ):
        s = q.add_parser(action, parents=[common], help=text)
        s.add_argument("queue")
        s.add_argument("entry", help="entry id, as printed by `queue pull`")
        s.add_argument("--agent", required=True)
        s.set_defaults(func=_entry_command(action))

    s = sub.add_parser("reply", parents=[common], help="send a reply to a conversation")
    s.add_argument("conversation")
    s.add_argument("--text", required=True, help="reply text ('-' reads stdin)")
    s.add_argument("--agent", help="who replies")
    s.add_argument("--channel", help="reply on this channel instead of the conversation's")
    s.add_argument("--json", action="store_true")
    s.set_defaults(func=cmd_reply)

    o = sub.add_parser("outbox", help="outbound messages").add_subparsers(
        dest="outbox_command", required=True, metavar="ACTION"
    )
    s = o.add_parser("status", parents=[common], help="delivery state of a reply")
    s.add_argument("outbox_id")
    s.set_defaults(func=cmd_outbox_status)

    d = sub.add_parser("dead-letters", help="messages and replies that failed").add_subparsers(
        dest="dl_command", required=True, metavar="ACTION"
    )
    s = d.add_parser("list", parents=[common], help="list dead letters with their reason")
    s.add_argument("--json", action="store_true")
    s.add_argument("--count", type=int, default=100)
    s.set_defaults(func=cmd_dead_letters_list)
    s = d.add_parser("replay", parents=[common], help="put dead letters back to be retried")
    s.add_argument("ids", nargs="*")
    s.add_argument("--all", action="store_true")
    s.set_defaults(func=cmd_dead_letters_replay)
    c = sub.add_parser("customer", help="customer profiles").add_subparsers(
        dest="customer_command", required=True, metavar="ACTION"
    )
    who = "customer id or identity (ana@example.com, +14155550100, x:12345)"
    s = c.add_parser(
        "show",
        parents=[common],
        help="a profile, its identities, and its conversations with their queue and why",
    )
    s.add_argument("customer", help=who)
    s.add_argument("--json", action="store_true", help="the stored fields as JSON")
    s.set_defaults(func=cmd_customer_show)
    s = c.add_parser("set", parents=[common], help="set profile fields (empty value: remove)")
    s.add_argument("customer", help=who)
    s.add_argument("--tier", help="e.g. vip (rules can match on it)")
    s.add_argument("--language", help="the customer's stated language (ISO 639-1)")
    s.add_argument("--timezone", help="IANA zone, e.g. Europe/Riga")
    s.add_argument("--name")
    s.add_argument("--country", help="ISO 3166 code")
    s.set_defaults(func=_admin_command(_customer_set))
    s = c.add_parser("merge", parents=[common], help="merge OTHER into KEEP (KEEP survives)")
    s.add_argument("keep", help=who)
    s.add_argument("other", help=who)
    s.set_defaults(func=_admin_command(_customer_merge))
    s = c.add_parser("import", parents=[common], help="create or update profiles from CSV")
    s.add_argument(
        "file",
        help="CSV with a header: email, phone, x, chat, api, name, tier, "
        "language_preference, timezone, country",
    )
    s.set_defaults(func=_admin_command(_customer_import))
    s = c.add_parser("export", parents=[common], help="everything stored about a customer")
    s.add_argument("customer", help=who)
    s.set_defaults(func=_admin_command(lambda a, args: a.export(args.customer)))
    s = c.add_parser(
        "forget", parents=[common], help="erase personal data and messages, keep anonymous counts"
    )
    s.add_argument("customer", help=who)
    s.add_argument("--yes", action="store_true", help="confirm")
    s.set_defaults(func=_admin_command(_customer_forget))

    v = sub.add_parser("conversation", help="conversations").add_subparsers(
        dest="conversation_command", required=True, metavar="ACTION"
    )
    s = v.add_parser(
        "show",
        parents=[common],
        help="a conversation's whole history: routing reasons, replies and their delivery",
    )
    s.add_argument("conversation")
    s.add_argument("--json", action="store_true", help="the stored records as JSON")
    s.set_defaults(func=cmd_conversation_show)
    for status, text in (("resolve", "resolved"), ("wait", "waiting"), ("reopen", "open")):
        s = v.add_parser(status, parents=[common], help=f"mark a conversation {text}")
        s.add_argument("conversation")
        s.add_argument("--agent")
        s.set_defaults(func=_admin_command(_conversation_status), status=text)

    s = v.add_parser(
        "transfer",
        parents=[common],
        help="move a conversation's waiting work item to another queue (or an agent), "
        "keeping its due time",
    )
    s.add_argument("conversation")
    s.add_argument("--queue", required=True, help="the queue it goes to")
    s.add_argument(
        "--agent", help="straight to this agent's own queue (with --queue as its fallback_queue)"
    )
    s.add_argument("--note", help="why (kept on the conversation's timeline)")
    s.add_argument("--by", help="who transfers it")
    s.add_argument("--json", action="store_true")
    s.set_defaults(func=cmd_conversation_transfer)

    g = sub.add_parser("agent", help="agent presence").add_subparsers(
        dest="agent_command", required=True, metavar="ACTION"
    )
    s = g.add_parser(
        "online", parents=[common], help="mark an agent online for --ttl seconds, for --queues"
    )
    s.add_argument("agent")
    s.add_argument("--ttl", type=float, default=60)
    s.add_argument(
        "--queues",
        help="comma-separated queues the agent takes work from (default: the ones given last)",
    )
    s.set_defaults(func=cmd_agent_presence, online=True)
    s = g.add_parser("offline", parents=[common], help="mark an agent offline")
    s.add_argument("agent")
    s.set_defaults(func=cmd_agent_presence, online=False, ttl=0)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except ConfigError as exc:
        for problem in exc.problems:
            print(problem, file=sys.stderr)
        return 2
    except CliError as exc:
        print(f"router: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
