"""Every Redis key comes from router/keys.py: in Python, and in Lua through the
prelude generated from it (docs/redis-schema.md documents them)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from router.keys import Keys
from router.scripts import PRELUDE, Scripts, lua_keys, source
from tests.support import RedisServer

ROUTER = Path(__file__).resolve().parent.parent / "router"

# What building a key by hand looks like.
PYTHON_KEY_BUILDING = [
    re.compile(r"\{(?:[\w.]*\.)?prefix\}[\w:-]"),  # f"{self.prefix}chat:..."
    re.compile(r"\.prefix\s*\+|\+\s*[\w.]*\.prefix\b"),  # keys.prefix + "ingest:"
    re.compile(r"""["']router:[^"'\s]"""),  # "router:q:..." (the default prefix alone is fine)
    re.compile(r"""["'](agents|routers|senders)["']"""),  # a group name (keys.QUEUE_GROUP...)
]
LUA_KEY_BUILDING = [
    re.compile(r"\bP\s*\.\."),  # P .. 'conv:{' .. id .. '}'
    re.compile(r"""['"][\w-]*:\{|\}:[\w-]+['"]|\.\.\s*['"]:|['"][\w-]+:['"]\s*\.\."""),
    re.compile(r"""['"](agents|routers|senders)['"]"""),  # a group name
]


def offenders(paths: list[Path], patterns: list[re.Pattern[str]]) -> list[str]:
    found = []
    for path in paths:
        for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if any(p.search(line) for p in patterns):
                found.append(f"{path.relative_to(ROUTER.parent)}:{n}: {line.strip()}")
    return found


def test_no_key_is_built_outside_keys_py() -> None:
    python = [p for p in sorted(ROUTER.rglob("*.py")) if p != ROUTER / "keys.py"]
    lua = [p for p in sorted(ROUTER.rglob("*.lua")) if p.name != "prelude.lua"]
    found = offenders(python, PYTHON_KEY_BUILDING) + offenders(lua, LUA_KEY_BUILDING)
    assert not found, "keys built outside router/keys.py (add a Keys member):\n" + "\n".join(found)


def test_every_script_loads(redis_server: RedisServer) -> None:
    """Every script file (those of Scripts and those a module registers
    itself, e.g. the SLA watch's and the chat claims'), with the prelude."""
    r = redis_server.client()
    names = {p.stem for p in (ROUTER / "lua").glob("*.lua")} - {"prelude"}
    assert set(Scripts.__dataclass_fields__) <= names
    assert {"sla_breach", "claim_try"} <= names
    for name in sorted(names):
        assert r.script_load(source(name)), name


@pytest.mark.parametrize("prefix", ["router:", "acme:eu:"])
def test_lua_keys_are_the_python_keys(redis_server: RedisServer, prefix: str) -> None:
    k = Keys(prefix)
    calls = {
        "K.conversation('v1')": k.conversation("v1"),
        "K.timeline('v1')": k.timeline("v1"),
        "K.customer_identities('c1')": k.customer_identities("c1"),
        "K.queue('support-es', 2)": k.queue("support-es", 2),
        "K.thread('email', '<a@b>')": k.thread("email", "<a@b>"),
        "K.overflow()": k.overflow,
        "identity_key('email:ana@example.com')": k.identity_of("email:ana@example.com"),
        "QUEUE_GROUP": "agents",
    }
    script = PRELUDE + "P = ARGV[1]\nreturn {" + ", ".join(calls) + "}"
    assert redis_server.client().eval(script, 0, prefix) == list(calls.values())


def test_a_script_naming_a_key_keys_lacks_fails_at_load() -> None:
    with pytest.raises(ValueError, match=r"K\.convo: router/keys\.py's Keys has no key builder"):
        lua_keys({"conversation", "convo"})
