"""YAML -> :class:`Config`: environment overrides, validation with FILE:LINE
problems, the checks of each section, and reading the secrets."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from router.config.channels import API_TOKEN_ENV, check_channels
from router.config.daemon import Config, LoadContext
from router.config.routing import (
    check_acknowledgements,
    check_calendars,
    check_queues,
    check_routing,
    check_rules,
    check_teams,
)
from router.config.types import Loc, Problem, Secret
from router.yamlsource import ConfigError, SourceMap, load_yaml, parse_yaml

# Environment variables that override the file, for operations teams.
ENV_OVERRIDES: dict[str, tuple[str, ...]] = {
    "ROUTER_REDIS_URL": ("redis", "url"),
    "ROUTER_HTTP_LISTEN": ("http", "listen"),
    "ROUTER_STATE_DIR": ("state_dir",),
}

# The problems no single field can see, one checker per section, run in this
# order (so problems are listed in the order of the sections).
CHECKS: tuple[Callable[[Config], Iterator[Problem]], ...] = (
    check_routing,
    check_calendars,
    check_teams,
    check_queues,
    check_rules,
    check_channels,
    check_acknowledgements,
)


def _secrets(obj: BaseModel, path: Loc = ()) -> Iterator[tuple[Loc, Secret]]:
    """Every secret of the config, with its path; a disabled channel's secrets
    are not needed (and need not be set)."""
    if getattr(obj, "enabled", True) is False:
        return
    for name in type(obj).model_fields:
        value = getattr(obj, name)
        here = (*path, name)
        if isinstance(value, Secret):
            yield here, value
        elif isinstance(value, BaseModel):
            yield from _secrets(value, here)
        elif isinstance(value, Mapping):
            for k, v in value.items():
                if isinstance(v, BaseModel):
                    yield from _secrets(v, (*here, k))
        elif isinstance(value, list):
            for k, v in enumerate(value):
                if isinstance(v, BaseModel):
                    yield from _secrets(v, (*here, k))


def _apply_env(data: dict[str, Any], env: Mapping[str, str]) -> dict[Loc, str]:
    """Apply ROUTER_* overrides to the raw data; return {path: variable} applied."""
    applied: dict[Loc, str] = {}
    for var, path in ENV_OVERRIDES.items():
        if var in env and env[var] != "":
            node = data
            for key in path[:-1]:
                node = node.setdefault(key, {}) if isinstance(node, dict) else {}
            if isinstance(node, dict):
                node[path[-1]] = env[var]
                applied[path] = var
    if env.get(API_TOKEN_ENV):
        api = data.setdefault("channels", {}).setdefault("api", {})
        if isinstance(api, dict):
            api["token"] = {"env": API_TOKEN_ENV}
            api.setdefault("enabled", True)
            applied[("channels", "api", "token")] = API_TOKEN_ENV
    return applied


def _format_loc(loc: Loc) -> str:
    parts: list[str] = []
    for p in loc:
        if isinstance(p, int):
            parts.append(f"[{p}]")
        else:
            parts.append(("." if parts else "") + str(p))
    return "".join(parts) or "(top level)"


def build_config(
    data: Any,
    smap: SourceMap,
    base_dir: Path,
    env: Mapping[str, str] | None = None,
    secrets: str = "all",
    unresolved_secrets: str = "error",
) -> Config:
    """Validate parsed YAML into a Config; raise ConfigError with file:line problems.

    ``secrets="all"`` reads every secret (the daemon, check-config);
    ``secrets="redis"`` only the Redis password (CLI tools that just talk
    to Redis and must not need, say, the API token in their environment).
    ``unresolved_secrets="warn"`` lists a secret that cannot be read (a
    variable not set, no credential, a missing file) in ``Config.warnings``
    instead of failing: an admin checks the file in a shell that does not
    have the service's secrets (``router check-config`` without ``--strict``).
    """
    env = os.environ if env is None else env
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError([f"{smap.where(())}: the config must be a mapping of settings"])
    applied = _apply_env(data, env)

    def where(loc: Loc) -> str:
        for n in range(len(loc), 0, -1):
            if loc[:n] in applied:
                return f"environment variable {applied[loc[:n]]}"
        return smap.where(loc)

    try:
        cfg = Config.model_validate(data, context=LoadContext(smap.file, base_dir))
    except ValidationError as exc:
        problems = []
        for err in exc.errors(include_url=False):
            # pydantic adds the name of a failing union member / validator to loc
            loc = tuple(p for p in err["loc"] if not (isinstance(p, str) and "[" in p))
            msg = err["msg"].removeprefix("Value error, ")
            if err["type"] == "extra_forbidden":
                msg = f"unknown setting {loc[-1]!r}"
            elif err["type"] == "missing":
                msg = f"required setting {loc[-1]!r} is missing"
                problems.append(f"{where(loc[:-1])}: {_format_loc(loc)}: {msg}")
                continue
            problems.append(f"{where(loc)}: {_format_loc(loc)}: {msg}")
        raise ConfigError(problems) from None

    problems = [f"{where(loc)}: {msg}" for check in CHECKS for loc, msg in check(cfg)]
    warnings: list[str] = []
    for loc, secret in _secrets(cfg):
        if secrets != "all" and loc[0] != secrets:
            continue
        try:
            secret.resolve(base_dir, env)
        except ValueError as exc:
            problem = f"{where(loc)}: {_format_loc(loc)}: {exc}"
            (warnings if unresolved_secrets == "warn" else problems).append(problem)
    if problems:
        raise ConfigError(problems)
    return cfg.with_warnings(warnings)


def load_config(
    path: str | Path,
    env: Mapping[str, str] | None = None,
    secrets: str = "all",
    unresolved_secrets: str = "error",
) -> Config:
    """Load, validate and resolve the config file at ``path`` (see build_config)."""
    path = Path(path)
    data, smap = load_yaml(path)
    return build_config(data, smap, path.resolve().parent, env, secrets, unresolved_secrets)


def config_from_text(text: str, name: str = "<text>", base_dir: Path | None = None) -> Config:
    """Like load_config, for YAML held in a string (tests, `router explain`)."""
    data, smap = parse_yaml(text, name)
    return build_config(data, smap, base_dir or Path.cwd(), os.environ)
