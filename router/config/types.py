"""The building blocks of every config model: the strict base, secrets, and
the parsers behind durations, listen addresses and day ranges."""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, PrivateAttr, model_validator

# Where a problem is in the config, as pydantic spells it: ("rules", 0, "targets").
Loc = tuple[str | int, ...]
# A problem no single field can see, found by a section's checker: (where, message).
Problem = tuple[Loc, str]

_DURATION_RE = re.compile(r"(\d+(?:\.\d+)?)\s*(ms|s|m|h|d|w)")
_UNIT_SECONDS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_duration(value: Any) -> float:
    """``"90s"``, ``"5m"``, ``"1h30m"``, ``"30d"`` or a number of seconds -> seconds."""
    if isinstance(value, bool):
        raise ValueError("expected a duration like 30s, 5m, 4h or 7d")
    if isinstance(value, int | float):
        if value < 0:
            raise ValueError("a duration cannot be negative")
        return float(value)
    if isinstance(value, timedelta):
        return value.total_seconds()
    if not isinstance(value, str):
        raise ValueError("expected a duration like 30s, 5m, 4h or 7d")
    text = value.strip().replace(" ", "")
    pos, total = 0, 0.0
    for m in _DURATION_RE.finditer(text):
        if m.start() != pos:
            break
        total += float(m.group(1)) * _UNIT_SECONDS[m.group(2)]
        pos = m.end()
    if pos != len(text) or not text:
        raise ValueError(f"{value!r} is not a duration; write e.g. 30s, 5m, 4h, 7d or 1h30m")
    return total


Duration = Annotated[float, BeforeValidator(parse_duration)]


def parse_listen(value: str) -> tuple[str, int]:
    """``"127.0.0.1:8080"``, ``"[::1]:8080"``, ``":8080"`` -> (host, port)."""
    m = re.fullmatch(r"(?:\[([0-9a-fA-F:]+)\]|([^:\[\]]*)):(\d{1,5})", value.strip())
    if not m or not 0 <= int(m.group(3)) <= 65535:
        raise ValueError(f"{value!r} is not host:port (e.g. 127.0.0.1:8080 or [::]:8080)")
    host = m.group(1) or m.group(2) or "0.0.0.0"
    return host, int(m.group(3))


DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_DAY_ALIASES = {
    "daily": tuple(range(7)),
    "weekdays": tuple(range(5)),
    "weekends": (5, 6),
}


def parse_days(key: str) -> tuple[int, ...]:
    """``"mon-fri"``, ``"sat"``, ``"fri-mon"``, ``"weekdays"``, ``"daily"`` -> weekdays (0=Mon)."""
    k = key.strip().lower()
    if k in _DAY_ALIASES:
        return _DAY_ALIASES[k]
    parts = [p.strip() for p in k.split("-")]
    if len(parts) == 1 and parts[0] in DAYS:
        return (DAYS.index(parts[0]),)
    if len(parts) == 2 and parts[0] in DAYS and parts[1] in DAYS:
        first, last = DAYS.index(parts[0]), DAYS.index(parts[1])
        return tuple((first + i) % 7 for i in range((last - first) % 7 + 1))
    raise ValueError(
        f"{key!r} is not a day or a day range; write mon, mon-fri, sat-sun, weekdays, "
        "weekends or daily"
    )


class Strict(BaseModel):
    """Base of every config model: unknown keys are errors, values are immutable."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class Secret(Strict):
    """Where a secret comes from. Never the secret itself.

    ``{env: NAME}`` reads an environment variable, ``{file: PATH}`` a file
    (trailing newline stripped), ``{credential: NAME}`` a systemd credential
    (``$CREDENTIALS_DIRECTORY/NAME``, see ``LoadCredential=``).

    The fields say where the secret is; :meth:`resolve` reads it once, when
    the config is loaded, into a private attribute outside the frozen fields,
    so that the secret itself is never part of the model's data or its repr.
    """

    env: str | None = None
    file: Path | None = None
    credential: str | None = None
    _value: str | None = PrivateAttr(default=None)

    @model_validator(mode="before")
    @classmethod
    def _not_inline(cls, data: Any) -> Any:
        if isinstance(data, str):
            raise ValueError(
                "secrets must not be written in the config file; "
                "use {env: VARIABLE}, {file: /path/to/file} or {credential: NAME}"
            )
        return data

    @model_validator(mode="after")
    def _exactly_one(self) -> Secret:
        given = [k for k in ("env", "file", "credential") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError("give exactly one of env, file or credential")
        return self

    def resolve(self, base_dir: Path, env: Mapping[str, str]) -> None:
        """Read the secret now; raise ValueError saying what is missing."""
        if self.env is not None:
            value = env.get(self.env)
            if not value:
                raise ValueError(f"environment variable {self.env} is not set or empty")
        else:
            if self.file is not None:
                path = self.file if self.file.is_absolute() else base_dir / self.file
            else:
                cred_dir = env.get("CREDENTIALS_DIRECTORY")
                if not cred_dir:
                    raise ValueError(
                        f"credential {self.credential!r} needs CREDENTIALS_DIRECTORY "
                        "(set by systemd LoadCredential=)"
                    )
                path = Path(cred_dir) / str(self.credential)
            try:
                value = path.read_text(encoding="utf-8").rstrip("\r\n")
            except OSError as exc:
                raise ValueError(f"cannot read secret file {path}: {exc.strerror}") from None
            if not value:
                raise ValueError(f"secret file {path} is empty")
        self._value = value

    @property
    def value(self) -> str:
        if self._value is None:
            raise RuntimeError("secret used before it was resolved (build_config resolves them)")
        return self._value

    def __repr__(self) -> str:  # never print a secret
        src = self.env or self.file or self.credential
        return f"Secret({src!s})"
