"""Keep API keys out of logs, traces, saved state and error messages.

Profiles only ever name the environment variable that holds a key; this module masks any key-shaped text that
still reaches a message (an exception from a client, a server's error body, a value a user put in the wrong field).
"""

from __future__ import annotations

import os
import re
from typing import Any

_KEY_PATTERNS = (
    re.compile(r"\bsk-[A-Za-z0-9_\-]{8,}"),  # OpenAI and compatible keys
    re.compile(r"(?i)\b(bearer)\s+[A-Za-z0-9._\-]{8,}"),
    re.compile(r"(?i)\b(api[_-]?key|authorization|secret|token)(['\"]?\s*[:=]\s*['\"]?)[^\s'\",}]{6,}"),
)
_SECRET_ENV_HINTS = ("KEY", "SECRET", "TOKEN", "PASSWORD")
MASK = "***"
_SHORTEST_SECRET = 8  # no pattern above, and no environment value `_env_secrets` keeps, matches fewer characters
_scanned: tuple[dict[Any, Any] | None, list[str]] = (None, [])
_protected: set[str] = set()  # variables named by a profile's api_key_env: secrets whatever their names say


def protect_env(*names: str) -> None:
    """Mask the values of these environment variables wherever `redact` runs, whatever their names or shapes.

    A profile may keep its key in any variable (``api_key_env: LLM_CRED``) and a gateway's key need not look like
    ``sk-...``: neither the name hints nor the key patterns would catch it, and it was echoed on error paths.
    """
    global _scanned
    if not set(names) <= _protected:
        _protected.update(names)
        _scanned = (None, [])  # the next `redact` scans the environment again


def _holds_secret(name: str) -> bool:
    """Whether an environment variable is a secret: a profile's ``api_key_env``, or its name says so."""
    return name in _protected or any(h in name.upper() for h in _SECRET_ENV_HINTS)


def scrubbed_env() -> dict[str, str]:
    """The environment without its secrets, for programs a model may start (``run_command``).

    A child inherits the whole environment, so a model could print a key back (``env``, ``printenv``, or a script
    that reverses it past `redact`): what it never receives it cannot leak.
    """
    return {k: v for k, v in os.environ.items() if not _holds_secret(k)}


def _env_secrets() -> list[str]:
    """Values of environment variables whose names say they hold a secret, or that `protect_env` named (long enough
    to be worth masking).

    `redact` runs on every traced attribute, and scanning (and decoding) the whole environment each time was a tenth
    of a turn's CPU, so the scan is kept until the environment changes: comparing the raw mapping CPython keeps
    behind ``os.environ`` with its last snapshot is one C-level dict comparison.
    """
    global _scanned
    raw: dict[Any, Any] | None = getattr(os.environ, "_data", None)
    snapshot, secrets = _scanned
    if raw is None or raw != snapshot:
        secrets = [v for k, v in os.environ.items() if _holds_secret(k) and len(v) >= _SHORTEST_SECRET]
        secrets.sort(key=len, reverse=True)  # a value that contains another is masked whole
        _scanned = (dict(raw) if raw is not None else None, secrets)
    return secrets


def redact(text: str) -> str:
    """Return `text` with anything that looks like a credential replaced by ``***``."""
    if len(text) < _SHORTEST_SECRET:
        return text
    for value in _env_secrets():
        text = text.replace(value, MASK)
    text = _KEY_PATTERNS[0].sub(MASK, text)
    text = _KEY_PATTERNS[1].sub(lambda m: f"{m.group(1)} {MASK}", text)
    return _KEY_PATTERNS[2].sub(lambda m: f"{m.group(1)}{m.group(2)}{MASK}", text)


def looks_secret(field: str, value: object) -> bool:
    """Whether a config value must never be echoed back (by field name or by its shape)."""
    name = field.lower()
    if any(h.lower() in name for h in _SECRET_ENV_HINTS) and not name.endswith("_env"):
        return True
    return isinstance(value, str) and redact(value) != value
