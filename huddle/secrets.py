"""Keep API keys out of logs, traces, saved state and error messages.

Profiles only ever name the environment variable that holds a key; this module masks any key-shaped text that
still reaches a message (an exception from a client, a server's error body, a value a user put in the wrong field).
"""

from __future__ import annotations

import logging
import os
import re
from typing import Any

import regex

_KEY_PATTERNS = (
    # OpenAI and compatible keys, and the API keys of ``huddle serve`` (hud_<id>_<secret>, `huddle.serve.keys`)
    re.compile(r"\b(?:sk-[A-Za-z0-9_\-]{8,}|hud_[0-9a-f]{6,}_[A-Za-z0-9_\-]{16,})"),
    re.compile(r"(?i)\b(bearer)\s+[A-Za-z0-9._\-]{8,}"),
    re.compile(r"(?i)\b(api[_-]?key|authorization|secret|token)(['\"]?\s*[:=]\s*['\"]?)[^\s'\",}]{6,}"),
)
_PARTIAL_SHAPES = tuple(regex.compile(p.pattern) for p in _KEY_PATTERNS)  # for `StreamRedactor` (inline flags)
_SECRET_ENV_HINTS = ("KEY", "SECRET", "TOKEN", "PASSWORD")
MASK = "***"
_SHORTEST_KEY = 4
"""The shortest ``api_key_env`` value that is masked. A shorter one cannot be masked without garbling ordinary text
(every "ab" of every message), and no real key is that short: it is a placeholder for a keyless server, and
`protect_env` says once that it is not masked."""
_SHORTEST_GUESSED = 8
"""The shortest value masked of a variable that is a secret only by its name (``*_TOKEN``): a short one is more
likely a setting (``KEYBOARD_LAYOUT=us``) than a key."""
_scanned: tuple[dict[Any, Any] | None, list[str]] = (None, [])
_partial: tuple[list[str], Any] = ([], None)  # `_env_secrets()` and the pattern `StreamRedactor` finds them with
_warned: set[str] = set()
logger = logging.getLogger("huddle.secrets")
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
    for name in names:
        value = os.environ.get(name, "")
        if 0 < len(value) < _SHORTEST_KEY and name not in _warned:
            _warned.add(name)
            logger.warning(
                "warning: %s holds a %d-character key, too short to be masked in logs and traces without garbling "
                "ordinary text, so it is not; use a real key (a keyless local server needs no variable at all)",
                name,
                len(value),
            )


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
    """Values of environment variables that `protect_env` named (`_SHORTEST_KEY` characters or more), or whose names
    say they hold a secret (`_SHORTEST_GUESSED` or more).

    `redact` runs on every traced attribute, and scanning (and decoding) the whole environment each time was a tenth
    of a turn's CPU, so the scan is kept until the environment changes: comparing the raw mapping CPython keeps
    behind ``os.environ`` with its last snapshot is one C-level dict comparison.
    """
    global _scanned
    raw: dict[Any, Any] | None = getattr(os.environ, "_data", None)
    snapshot, secrets = _scanned
    if raw is None or raw != snapshot:
        secrets = [
            v
            for k, v in os.environ.items()
            if len(v) >= (_SHORTEST_KEY if k in _protected else _SHORTEST_GUESSED) and _holds_secret(k)
        ]
        secrets.sort(key=len, reverse=True)  # a value that contains another is masked whole
        _scanned = (dict(raw) if raw is not None else None, secrets)
    return secrets


def redact(text: str) -> str:
    """Return `text` with anything that looks like a credential replaced by ``***``."""
    if len(text) < _SHORTEST_KEY:  # shorter than anything masked
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


def _secret_patterns() -> list[Any]:
    """What `redact` masks, as patterns of the ``regex`` module, which can tell a text that ends part-way into a match
    (``partial=True``): the environment's secrets (one pattern, rebuilt when they change) and the key shapes."""
    global _partial
    values = _env_secrets()
    if _partial[0] is not values:  # `_env_secrets` returns the same list until the environment changes
        _partial = (values, regex.compile("|".join(regex.escape(v) for v in values)) if values else None)
    return [_partial[1], *_PARTIAL_SHAPES] if _partial[1] is not None else list(_PARTIAL_SHAPES)


class StreamRedactor:
    """`redact` for text that arrives in pieces (a streamed reply): a key split across chunks (``"sk-pro"`` then
    ``"j-abc..."``) matches in no single chunk, so masking each chunk printed it whole on the terminal.

    The text is passed on up to where something that could still become a secret starts (a key shape or an
    environment secret that the text so far ends inside), masked; that tail is held back until the next chunks decide
    it, and `flush` passes on what is left when the stream ends.
    """

    def __init__(self) -> None:
        self._held = ""

    def feed(self, chunk: str) -> str:
        """The masked text that can be passed on now that `chunk` arrived (often all of it, sometimes none)."""
        text = self._held + chunk
        cut = len(text)
        for pattern in _secret_patterns():
            for match in pattern.finditer(text, partial=True):
                if match.end() == len(text) and match.start() < cut:  # it may go on past the end: undecided
                    cut = match.start()
        self._held = text[cut:]
        return redact(text[:cut])

    def flush(self) -> str:
        """What was held back, masked: the stream has ended, nothing can extend it."""
        text, self._held = self._held, ""
        return redact(text)

    def drop(self) -> None:
        """Forget what was held back: the stream starts its text again, and the held text was never shown."""
        self._held = ""
