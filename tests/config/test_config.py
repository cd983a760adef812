"""Config loading: every problem is reported as FILE:LINE: message."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from router.config import load_config, parse_duration, parse_listen
from router.yamlsource import ConfigError
from tests.support import ROOT

GOOD = """\
version: 1
redis:
  url: redis://127.0.0.1:6399/0
channels:
  api:
    token: {env: TEST_TOKEN}
routing:
  languages: [en, es]
  default_language: en
  default_queue: general
queues:
  general: {}
  spanish:
    visibility_timeout: 5m
rules:
  - name: es
    when: {language: [es]}
    targets:
      - {queue: spanish, priority: high, wait: 10m}
      - {queue: general}
"""


def write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "router.yaml"
    p.write_text(textwrap.dedent(text))
    return p


def problems(path: Path, env: dict[str, str] | None = None) -> list[str]:
    with pytest.raises(ConfigError) as info:
        load_config(path, env={"TEST_TOKEN": "t", **(env or {})})
    return info.value.problems


def test_good_config_loads_with_types(tmp_path: Path) -> None:
    cfg = load_config(write(tmp_path, GOOD), env={"TEST_TOKEN": "secret"})
    assert cfg.queues["spanish"].visibility_timeout == 300
    assert cfg.rules[0].targets[0].wait == 600
    assert cfg.channels.api.token is not None and cfg.channels.api.token.value == "secret"
    assert "secret" not in repr(cfg.channels.api.token)
    assert cfg.state_dir == (tmp_path / "state").resolve()  # relative to the file


def test_example_config_is_valid() -> None:
    cfg = load_config(
        ROOT / "config" / "example.yaml", env={"ROUTER_API_TOKEN": "x", "CHAT_SECRET": "y"}
    )
    assert cfg.embedded_redis
    assert cfg.routing.default_queue in cfg.queues


def test_unknown_key_reported_with_line(tmp_path: Path) -> None:
    p = write(tmp_path, GOOD.replace("  spanish:\n", "  spanish:\n    visiblity_timeout: 5m\n"))
    out = problems(p)
    assert out == [f"{p}:14: queues.spanish.visiblity_timeout: unknown setting 'visiblity_timeout'"]


def test_wrong_type_reported_with_line(tmp_path: Path) -> None:
    p = write(tmp_path, GOOD.replace("visibility_timeout: 5m", "visibility_timeout: soon"))
    (msg,) = problems(p)
    assert msg.startswith(f"{p}:14: queues.spanish.visibility_timeout:")
    assert "'soon' is not a duration" in msg


def test_dangling_queue_reference(tmp_path: Path) -> None:
    p = write(tmp_path, GOOD.replace("- {queue: general}", "- {queue: genral}"))
    (msg,) = problems(p)
    assert msg.startswith(f"{p}:20: rule 'es' targets queue 'genral', which is not defined")


def test_several_problems_all_reported(tmp_path: Path) -> None:
    text = GOOD.replace("default_queue: general", "default_queue: nowhere").replace(
        "priority: high", "priority: extreme"
    )
    out = problems(write(tmp_path, text))
    assert len(out) == 1 and "priority" in out[0]  # type errors first...
    text = GOOD.replace("default_queue: general", "default_queue: nowhere").replace(
        "language: [es]", "language: [fr]"
    )
    out = problems(write(tmp_path, text))  # ...then every reference problem at once
    assert any(":10: default_queue 'nowhere' is not a queue" in m for m in out)
    assert any(":17: rule 'es' names language 'fr'" in m for m in out)


def test_inline_secret_refused(tmp_path: Path) -> None:
    p = write(tmp_path, GOOD.replace("token: {env: TEST_TOKEN}", "token: hunter2"))
    (msg,) = problems(p)
    assert msg.startswith(f"{p}:6: channels.api.token: secrets must not be written")
    assert "hunter2" not in msg


def test_missing_env_secret(tmp_path: Path) -> None:
    p = write(tmp_path, GOOD.replace("TEST_TOKEN", "NOT_SET_ANYWHERE"))
    (msg,) = problems(p)
    assert msg == (
        f"{p}:6: channels.api.token: environment variable NOT_SET_ANYWHERE is not set or empty"
    )


def test_secret_from_file_and_credential(tmp_path: Path) -> None:
    (tmp_path / "tok").write_text("from-file\n")
    p = write(tmp_path, GOOD.replace("{env: TEST_TOKEN}", "{file: tok}"))
    assert load_config(p, env={}).channels.api.token.value == "from-file"
    creds = tmp_path / "creds"
    creds.mkdir()
    (creds / "api-token").write_text("from-systemd")
    p = write(tmp_path, GOOD.replace("{env: TEST_TOKEN}", "{credential: api-token}"))
    env = {"CREDENTIALS_DIRECTORY": str(creds)}
    assert load_config(p, env=env).channels.api.token.value == "from-systemd"
    (msg,) = problems(p, {"CREDENTIALS_DIRECTORY": str(tmp_path / "none")})
    assert "cannot read secret file" in msg


def test_yaml_syntax_error_has_line(tmp_path: Path) -> None:
    p = write(tmp_path, GOOD.replace("  general: {}", "  general: {\n  broken"))
    (msg,) = problems(p)
    assert msg.startswith(f"{p}:14: YAML syntax error: expected ',' or '}}'")


def test_duplicate_key_refused(tmp_path: Path) -> None:
    p = write(tmp_path, GOOD + "queues:\n  other: {}\n")
    (msg,) = problems(p)
    assert msg.startswith(f"{p}:21: YAML syntax error: duplicate key 'queues' (first at line 11)")


def test_missing_required_section(tmp_path: Path) -> None:
    text = GOOD.split("routing:")[0] + "queues:\n  general: {}\n"
    (msg,) = problems(write(tmp_path, text))
    assert msg.endswith("routing: required setting 'routing' is missing")


def test_missing_file() -> None:
    with pytest.raises(ConfigError, match="config file not found"):
        load_config("/nonexistent/router.yaml")


def test_env_overrides(tmp_path: Path) -> None:
    p = write(tmp_path, GOOD)
    env = {
        "TEST_TOKEN": "t",
        "ROUTER_REDIS_URL": "unix:///run/redis.sock",
        "ROUTER_HTTP_LISTEN": "0.0.0.0:9000",
        "ROUTER_STATE_DIR": str(tmp_path / "elsewhere"),
        "ROUTER_API_TOKEN": "from-env",
    }
    cfg = load_config(p, env=env)
    assert cfg.redis_url == "unix:///run/redis.sock"
    assert cfg.http.host_port == ("0.0.0.0", 9000)
    assert cfg.state_dir == tmp_path / "elsewhere"
    # ROUTER_API_TOKEN wins over the file's secret reference
    assert cfg.channels.api.token is not None
    assert cfg.channels.api.token.value == "from-env"


def test_bad_env_override_names_the_variable(tmp_path: Path) -> None:
    p = write(tmp_path, GOOD)
    (msg,) = problems(p, {"ROUTER_HTTP_LISTEN": "not-a-port"})
    assert msg.startswith("environment variable ROUTER_HTTP_LISTEN: http.listen:")


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("30s", 30), ("5m", 300), ("1h30m", 5400), ("7d", 604800), (12, 12), ("250ms", 0.25)],
)
def test_durations(text: object, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "5 minutes", "m5", "-3", True, "1h 3x"])
def test_bad_durations(text: object) -> None:
    with pytest.raises(ValueError):
        parse_duration(text)


def test_listen_forms() -> None:
    assert parse_listen("[::1]:8080") == ("::1", 8080)
    assert parse_listen(":8080") == ("0.0.0.0", 8080)
    with pytest.raises(ValueError):
        parse_listen("localhost")


def test_check_config_cli(tmp_path: Path) -> None:
    good = write(tmp_path, GOOD)
    env = {"TEST_TOKEN": "t", "PATH": "/usr/bin:/bin"}
    ok = subprocess.run(
        [sys.executable, "-m", "router", "check-config", str(good)],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
    )
    assert ok.returncode == 0, ok.stderr
    assert "OK (2 queues, 1 rules)" in ok.stdout
    bad = tmp_path / "bad.yaml"
    bad.write_text(GOOD.replace("- {queue: general}", "- {queue: genral}"))
    out = subprocess.run(
        [sys.executable, "-m", "router", "check-config", str(bad)],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
    )
    assert out.returncode == 2
    assert out.stderr.startswith(f"{bad}:20: rule 'es' targets queue 'genral'")


def test_disabled_channels_need_no_secrets(tmp_path: Path) -> None:
    twilio = (
        "  twilio:\n    enabled: {on}\n    account_sid: AC1\n"
        "    auth_token: {{env: UNSET_TWILIO_TOKEN}}\n"
    )
    off = GOOD.replace(
        "    token: {env: TEST_TOKEN}\n",
        "    token: {env: TEST_TOKEN}\n" + twilio.format(on="false"),
    )
    cfg = load_config(write(tmp_path, off), env={"TEST_TOKEN": "t"})
    assert not cfg.channels.twilio.enabled  # its unset token does not matter
    on = off.replace("enabled: false", "enabled: true").replace(
        "version: 1\n", "version: 1\nhttp:\n  public_url: https://support.example.com\n"
    )
    (msg,) = problems(write(tmp_path, on))
    assert msg.endswith(
        "channels.twilio.auth_token: environment variable UNSET_TWILIO_TOKEN is not set or empty"
    )


def _check_config(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "router", "check-config", *args],
        capture_output=True,
        text=True,
        env={"PATH": "/usr/bin:/bin", **env},
        cwd=ROOT,
        timeout=60,
    )


def test_check_config_on_the_example_in_an_empty_environment() -> None:
    """An admin validates the example in a plain shell: OK, with the secrets
    it cannot read listed as warnings naming the variable; --strict (what the
    daemon applies) makes them errors."""
    example = ROOT / "config" / "example.yaml"
    out = _check_config(str(example), env={})
    assert out.returncode == 0, out.stderr
    assert "OK (" in out.stdout and "2 secrets not available here" in out.stdout
    warnings = out.stderr.splitlines()
    assert any(
        w.startswith(f"warning: {example}:")
        and w.endswith(
            "channels.api.token: environment variable ROUTER_API_TOKEN is not set or empty"
        )
        for w in warnings
    ), warnings
    assert any("CHAT_SECRET is not set or empty" in w for w in warnings), warnings

    strict = _check_config("--strict", str(example), env={})
    assert strict.returncode == 2
    assert "ROUTER_API_TOKEN is not set or empty" in strict.stderr
    assert "CHAT_SECRET is not set or empty" in strict.stderr
    assert "OK" not in strict.stdout

    given = _check_config(
        "--strict", str(example), env={"ROUTER_API_TOKEN": "t", "CHAT_SECRET": "s"}
    )
    assert given.returncode == 0 and given.stderr == "", given.stderr
    assert "secrets not available" not in given.stdout


def test_check_config_warns_about_credentials_and_files(tmp_path: Path) -> None:
    cfg = GOOD.replace("token: {env: TEST_TOKEN}", "token: {credential: api-token}")
    path = write(tmp_path, cfg)
    out = _check_config(str(path), env={})
    assert out.returncode == 0, out.stderr
    assert "credential 'api-token' needs CREDENTIALS_DIRECTORY" in out.stderr
    creds = tmp_path / "creds"
    creds.mkdir()
    (creds / "api-token").write_text("s3cret\n")
    ok = _check_config("--strict", str(path), env={"CREDENTIALS_DIRECTORY": str(creds)})
    assert ok.returncode == 0 and ok.stderr == "", ok.stderr
    missing = write(tmp_path, GOOD.replace("token: {env: TEST_TOKEN}", "token: {file: nope.txt}"))
    out = _check_config("--strict", str(missing), env={})
    assert (
        out.returncode == 2 and "cannot read secret file" in out.stderr and "nope.txt" in out.stderr
    )
