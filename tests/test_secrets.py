"""Credentials never reach a message: key shapes and secret-named environment values are masked."""

from __future__ import annotations

import pytest

from huddle.secrets import MASK, redact


def test_key_shapes_are_masked() -> None:
    text = redact("failed with sk-abcdefghijklmnop, Bearer abc.def.ghijk and api_key=zyxwvutsrq")
    assert "sk-abcdefghijklmnop" not in text and "abc.def.ghijk" not in text and "zyxwvutsrq" not in text
    assert text.count(MASK) == 3


def test_an_environment_secret_set_or_changed_after_earlier_calls_is_masked(monkeypatch: pytest.MonkeyPatch) -> None:
    """The environment scan is cached for speed; the cache must follow the environment, or a key set later leaks."""
    assert redact("the value is plain-words-here") == "the value is plain-words-here"
    monkeypatch.setenv("MY_SERVICE_TOKEN", "plain-words-here")
    assert redact("the value is plain-words-here") == f"the value is {MASK}"
    monkeypatch.setenv("MY_SERVICE_TOKEN", "other-words-now")
    assert redact("now other-words-now") == f"now {MASK}"
    monkeypatch.setenv("UNRELATED_SETTING", "unrelated-value")  # a name that does not say "secret" is left alone
    assert redact("unrelated-value") == "unrelated-value"
