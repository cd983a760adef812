"""deploy/systemd: the unit is valid for systemd, and its install note, run
on the example config, gives a config whose every secret the unit provides
and whose check passes outside systemd."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from router.config import load_config
from tests.support import ROOT

UNIT = ROOT / "deploy" / "systemd" / "router.service"
NOTE = ROOT / "deploy" / "systemd" / "README.md"
EXAMPLE = ROOT / "config" / "example.yaml"
INSTALLED_ROUTER = "/opt/router/.venv/bin/router"
CREDENTIALS = "/etc/router/credentials"


def note_commands() -> str:
    """The shell block of the install note (its steps, in order)."""
    blocks = re.findall(r"```sh\n(.*?)```", NOTE.read_text(), flags=re.S)
    assert len(blocks) == 1, "the note has one block of commands to paste"
    return blocks[0]


def unit_lines(key: str) -> list[str]:
    """The values of ``key=`` lines of the unit (commented lines excluded)."""
    prefix = f"{key}="
    return [
        line[len(prefix) :] for line in UNIT.read_text().splitlines() if line.startswith(prefix)
    ]


def apply_the_notes_edits(text: str) -> str:
    """What step 2's ``sed -i -e 's|A|B|' ...`` does to the example."""
    edits = re.findall(r"-e 's\|(.*?)\|(.*?)\|'", note_commands())
    assert edits, "step 2 edits the copied example with sed"
    for pattern, replacement in edits:
        # (the note's patterns mean the same in sed's basic regex and in Python's)
        text, n = re.subn(pattern, replacement, text, flags=re.M)
        assert n == 1, f"the note's sed pattern {pattern!r} matches {n} lines of the example"
    return text


def credentials_named(node: object) -> list[str]:
    """Every NAME of a ``{credential: NAME}`` secret in a parsed config."""
    if isinstance(node, dict):
        if set(node) == {"credential"}:
            return [str(node["credential"])]
        return [name for value in node.values() for name in credentials_named(value)]
    if isinstance(node, list):
        return [name for value in node for name in credentials_named(value)]
    return []


def check_config(path: Path, credentials: Path, *args: str) -> subprocess.CompletedProcess:
    """`router check-config` as step 3 runs it: sudo's clean environment and
    CREDENTIALS_DIRECTORY pointing at the credential files."""
    return subprocess.run(
        [sys.executable, "-m", "router", "check-config", *args, str(path)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=60,
        env={
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "CREDENTIALS_DIRECTORY": str(credentials),
        },
    )


def test_the_unit_passes_systemd_analyze_verify(tmp_path: Path) -> None:
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip(
            "systemd-analyze is not installed; get it with "
            "`apt-get install --no-install-recommends systemd`"
        )
    # verify checks that the commands exist: point them at this checkout's router
    router = Path(sys.executable).parent / "router"
    assert router.exists(), f"{router}: install the project (scripts/bootstrap test)"
    text = UNIT.read_text()
    assert INSTALLED_ROUTER in text
    unit = tmp_path / "router.service"
    unit.write_text(text.replace(INSTALLED_ROUTER, str(router)))
    out = subprocess.run(
        [analyze, "verify", "--man=no", str(unit)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    assert out.stderr.strip() == "" and out.stdout.strip() == "", out.stderr + out.stdout


def test_the_unit_provides_every_secret_of_the_example_as_the_note_sets_it_up(
    tmp_path: Path,
) -> None:
    config_text = apply_the_notes_edits(EXAMPLE.read_text())
    commands = note_commands()
    needed = set(credentials_named(yaml.safe_load(config_text)))
    # the example's two secrets (the API's token, the chat's key) are credentials now
    assert needed == {"api-token", "chat-secret"}
    assert "{env: ROUTER_API_TOKEN}" not in config_text
    assert "{env: CHAT_SECRET}" not in config_text
    loaded = dict(line.split(":", 1) for line in unit_lines("LoadCredential"))
    assert set(loaded) == needed
    assert all(loaded[name] == f"{CREDENTIALS}/{name}" for name in needed), loaded
    created = set(re.findall(rf"> {re.escape(CREDENTIALS)}/([\w.-]+)'", commands))
    assert created == needed

    # the state directory is an absolute path, the unit's, in the file and in the unit
    etc = tmp_path / "etc" / "router"
    etc.mkdir(parents=True)
    config = etc / "router.yaml"
    config.write_text(config_text)
    assert load_config(config, env={}, secrets="none").state_dir == Path("/var/lib/router")
    assert unit_lines("StateDirectory") == ["router"]
    assert "ROUTER_STATE_DIR=/var/lib/router" in unit_lines("Environment")

    # step 3 (the check, outside systemd) passes with the credential files...
    credentials = tmp_path / "credentials"
    credentials.mkdir()
    for name in needed:
        (credentials / name).write_text("s3cret-from-urandom\n")
    step3 = " ".join(
        line.strip().rstrip("\\") for line in commands.splitlines() if "check-config" in line
    )
    assert f"CREDENTIALS_DIRECTORY={CREDENTIALS}" in commands
    assert "check-config --strict /etc/router/router.yaml" in step3
    out = check_config(config, credentials, "--strict")
    assert out.returncode == 0, out.stderr
    assert out.stderr == "" and "OK (" in out.stdout
    # ... and names what is missing when one is not there
    (credentials / "chat-secret").unlink()
    out = check_config(config, credentials, "--strict")
    assert out.returncode == 2 and "chat-secret" in out.stderr, out.stderr
    # the unit checks the same way before each start
    assert any("check-config --strict" in line for line in unit_lines("ExecStartPre"))


def test_the_note_sets_overcommit_for_redis() -> None:
    commands = note_commands()
    assert "vm.overcommit_memory = 1" in commands
    assert re.search(r"sudo sysctl -p /etc/sysctl\.d/\S+\.conf", commands)
