"""Keep API keys out of logs, traces, saved state and error messages.

Profiles only ever name the environment variable that holds a key; this module masks any key-shaped text that
still reaches a message (an exception from a client, a server's error body, a value a user put in the wrong field).
"""

from __future__ import annotations

import os
import re

_KEY_PATTERNS = (
    re.compile(r"\bsk-[A-Za-z0-9_\-]{8,}"),  # OpenAI and compatible keys
    re.compile(r"(?i)\b(bearer)\s+[A-Za-z0-9._\-]{8,}"),
    re.compile(r"(?i)\b(api[_-]?key|authorization|secret|token)(['\"]?\s*[:=]\s*['\"]?)[^\s'\",}]{6,}"),
)
_SECRET_ENV_HINTS = ("KEY", "SECRET", "TOKEN", "PASSWORD")
MASK = "***"


def _env_secrets() -> list[str]:
    """Values of environment variables whose names say they hold a secret (long enough to be worth masking)."""
    return [v for k, v in os.environ.items() if any(h in k.upper() for h in _SECRET_ENV_HINTS) and len(v) >= 8]


def redact(text: str) -> str:
    """Return `text` with anything that looks like a credential replaced by ``***``."""
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
