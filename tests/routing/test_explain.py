"""``router explain --at``: an instant it cannot decide at is one clear line,
never a traceback (issue 14: ``--at 9999-12-31T23:59:59Z`` printed an
OverflowError)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from router.config import load_config
from router.explain import ExplainError, explain
from tests.support import ROOT

EXAMPLE = ROOT / "config" / "example.yaml"
MESSAGE = b'{"from": "+919812345678", "text": "Hello, my order has not arrived yet."}'
RANGE = "from 1970-01-01T00:00:00Z to 9998-12-31T23:59:59Z"


def run_explain(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "router", "explain", "--config", str(EXAMPLE), *args],
        input=MESSAGE,
        capture_output=True,
        cwd=ROOT,
        timeout=60,
        env={**os.environ, "ROUTER_API_TOKEN": "", "ROUTER_CLOCK_OFFSET": "", **(env or {})},
    )


@pytest.mark.parametrize(
    "at",
    [
        "9999-12-31T23:59:59Z",  # the report
        "9999-12-31T23:59:59+14:00",
        "0001-01-01T00:00:00Z",
        "1969-12-31T23:59:59Z",
    ],
)
def test_an_instant_out_of_range_is_one_line_saying_the_range(at: str) -> None:
    out = run_explain("--at", at)
    stderr = out.stderr.decode()
    assert out.returncode == 1 and not out.stdout
    assert stderr.splitlines() == [f"router: --at {at!r} is outside the supported range, {RANGE}"]


@pytest.mark.parametrize("at", ["nonsense", "", "2026-13-01T00:00:00Z", "2026-11-22T10:00+25:00"])
def test_an_unparseable_instant_is_one_line_saying_the_form_and_range(at: str) -> None:
    out = run_explain("--at", at)
    stderr = out.stderr.decode()
    assert out.returncode == 1 and "Traceback" not in stderr
    (line,) = stderr.splitlines()
    assert "is not an ISO 8601 time with a UTC offset" in line and RANGE in line


def test_the_ends_of_the_range_are_explained() -> None:
    for at in ("1970-01-01T00:00:00Z", "9998-12-31T23:59:59Z"):
        out = run_explain("--at", at)
        assert out.returncode == 0, out.stderr
        assert json.loads(out.stdout)["queue"]


def test_a_clock_offset_past_the_range_is_one_line_too() -> None:
    out = run_explain(env={"ROUTER_CLOCK_OFFSET": "3000000d"})
    assert out.returncode == 1
    assert out.stderr.decode().splitlines() == [
        f"router: now + ROUTER_CLOCK_OFFSET is outside the supported range, {RANGE}"
    ]


def test_every_instant_in_range_decides_without_overflow() -> None:
    """In process: the last instants of the range, for customers in the zones
    furthest east and west, on every calendar of the example."""
    cfg = load_config(EXAMPLE, secrets="none")
    for zone in ("Pacific/Kiritimati", "Pacific/Pago_Pago", "Asia/Tokyo"):
        for at in ("9998-12-31T23:59:59Z", "9998-12-31T12:00:00-12:00", "1970-01-01T00:00:00Z"):
            body = {"from": "ana@example.com", "text": "Where is my order?"}
            raw = json.dumps({**body, "customer": {"timezone": zone}}).encode()
            try:
                decided = explain(cfg, raw, at)
            except ExplainError as exc:  # allowed: one clear sentence, never an OverflowError
                assert "supported range" in str(exc) or "supports" in str(exc)
            else:
                assert decided["due_at"] is not None
