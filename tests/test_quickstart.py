"""The README's quick start, command by command, against a real daemon on
config/example.yaml (embedded Redis in a temporary state dir), on a Sunday
and on a weekday: every command exits 0, the message's queue is found in the
output, and the reply ends delivered.

The commands are read from README.md itself, so the README cannot drift from
what is tested. The only changes made to them: ``.venv/bin/router`` runs as
``python -m router`` of this interpreter, ``localhost:8080`` is the test's
port, and the ``<placeholders>`` get the values the earlier commands printed
(as a reader would paste them).
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
import time
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import holidays
import pytest
import redis

from tests.support import ROOT, DaemonProcess, free_port, wait_for

EXAMPLE = ROOT / "config" / "example.yaml"
README = ROOT / "README.md"
TOKEN = "dev-token-change-me"  # what scripts/serve-example uses when ROUTER_API_TOKEN is unset
PLACEHOLDER = re.compile(r"<([a-z][a-z ]*)>")


def quick_start_commands() -> list[str]:
    """The shell commands of the README's quick start ("from a second terminal")."""
    text = README.read_text(encoding="utf-8")
    section = text.split("\n## Quick start", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```sh\n(.*?)```", section, flags=re.S)
    (block,) = [b for b in blocks if "/v1/messages" in b]
    commands: list[str] = []
    pending = ""
    for line in block.splitlines():
        if not pending and (not line.strip() or line.lstrip().startswith("#")):
            continue  # blank, or the output a command prints
        pending = f"{pending}\n{line}" if pending else line
        code = pending.split(" #", 1)[0] if pending.count("'") % 2 == 0 else pending
        if pending.count("'") % 2 == 0 and not code.rstrip().endswith(("\\", "|")):
            commands.append(pending)
            pending = ""
    assert not pending, f"README quick start ends inside a command: {pending!r}"
    return commands


def next_day(after: date, weekday: int) -> date:
    """The first ``weekday`` (0 = Monday) after ``after`` that is no New York holiday."""
    ny = holidays.country_holidays("US", subdiv="NY")
    day = after + timedelta(days=1)
    while day.weekday() != weekday or day in ny:
        day += timedelta(days=1)
    return day


def instant(weekday: int) -> datetime:
    """15:00 UTC (10:00 or 11:00 in New York) on the next such day."""
    day = next_day(datetime.now(UTC).date(), weekday)
    return datetime(day.year, day.month, day.day, 15, tzinfo=UTC)


SUNDAY = 6
WEDNESDAY = 2
# The quick start's commands, in order, by how each begins.
KINDS = (
    "curl -s -X POST",
    "export ROUTER_CONFIG=",
    ".venv/bin/router customer show",
    ".venv/bin/router queue pull",
    ".venv/bin/router reply",
    "curl -s localhost:8080/v1/conversations/",
    ".venv/bin/router outbox status",
    "echo",
)


@pytest.mark.parametrize(
    ("weekday", "expected_queue"),
    [(SUNDAY, "after-hours"), (WEDNESDAY, "support-us")],
    ids=["sunday", "weekday"],
)
def test_quick_start_as_written(tmp_path: Path, weekday: int, expected_queue: str) -> None:
    at = instant(weekday)
    port = free_port()
    state = tmp_path / "state"
    base_env = {k: v for k, v in os.environ.items() if not k.startswith("ROUTER_")}
    env = {
        **base_env,
        "ROUTER_API_TOKEN": TOKEN,
        "CHAT_SECRET": "dev-chat-secret-change-me",
        "ROUTER_STATE_DIR": str(state),
        "ROUTER_HTTP_LISTEN": f"127.0.0.1:{port}",
        # the daemon (and `router explain`) route as if it were `at`
        "ROUTER_CLOCK_OFFSET": f"{int(at.timestamp() - time.time())}s",
    }
    daemon = DaemonProcess(EXAMPLE, port, env=env)
    daemon.log_path = tmp_path / "daemon.log"  # not beside config/example.yaml
    daemon.start()
    r = redis.Redis(unix_socket_path=str(state / "redis" / "redis.sock"), decode_responses=True)

    commands = quick_start_commands()
    post, export, show, pull, reply, read, outbox, explain = KINDS
    kinds = [next((k for k in KINDS if c.startswith(k)), c) for c in commands]
    assert kinds == list(KINDS), (
        "the README quick start changed: teach tests/test_quickstart.py its new commands"
    )

    values: dict[str, str] = {}
    exports: list[str] = []
    outputs: list[str] = []
    router = f"{shlex.quote(sys.executable)} -m router"
    for command, kind in zip(commands, kinds, strict=True):
        if kind == export:
            exports.append(command)
            continue
        missing = set(PLACEHOLDER.findall(command)) - set(values)
        assert not missing, f"nothing printed so far gives {missing} for: {command}"
        line = PLACEHOLDER.sub(lambda m: values[m.group(1)], command)
        line = line.replace(".venv/bin/router", router).replace(
            "localhost:8080", f"127.0.0.1:{port}"
        )
        script = "set -eo pipefail\n" + "\n".join([*exports, line])
        done = subprocess.run(
            ["bash", "-c", script], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
        )
        assert done.returncode == 0, (
            f"{command}\nexit {done.returncode}\n{done.stdout}\n{done.stderr}\n{daemon.log()}"
        )
        out = done.stdout
        outputs.append(out)

        # what the reader learns from each command (and waits for, as they would)
        if kind == post:
            answer = json.loads(out)
            assert answer["duplicate"] is False
            message_key = f"router:msg:{{{answer['id']}}}"
            wait_for(
                lambda key=message_key: r.hget(key, "queue"),
                timeout=20,
                what="the message to be routed",
            )
        elif kind == show:
            found = re.search(r"queue (\S+)\s+\(claim it: router queue pull", out)
            assert found, out
            values["queue"] = found.group(1)
            assert values["queue"] == expected_queue, out
            assert "why:" in out and "language es: detected" in out, out
        elif kind == pull:
            values["conversation id"] = re.search(r"conversation: (\S+)", out).group(1)
            assert "Hola, mi pedido no ha llegado todavía" in out
        elif kind == reply:
            outbox_id = re.search(r"router outbox status (\S+)", out).group(1)
            values["outbox id"] = outbox_id
            delivery_key = f"router:delivery:{{{outbox_id}}}"
            wait_for(
                lambda key=delivery_key: r.hget(key, "status") == "sent",
                timeout=20,
                what="the outbox to send the reply",
            )
        elif kind == read:
            replies = json.loads(out)["replies"]
            assert [(x["text"], x["agent"]) for x in replies] == [("Lo enviamos hoy.", "bob")]
        elif kind == outbox:
            assert json.loads(out)["status"] == "delivered"
        elif kind == explain:
            assert json.loads(out)["queue"] == "support-us"  # a Monday afternoon

    assert len(outputs) == len(commands) - len(exports)
    status = subprocess.run(
        [sys.executable, "-m", "router", "status", "--json", "--config", str(EXAMPLE)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert json.loads(status.stdout)["dead_letters"] == 0, status.stdout
    errors = [line for line in daemon.log().splitlines() if '"level":"error"' in line]
    assert not errors, errors
    assert daemon.stop() == 0
