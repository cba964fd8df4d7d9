"""The embedded model loads without the instructions a host may refuse, and a native crash becomes one error line."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from huddle.config.settings import ModelProfile
from huddle.errors import HuddleError
from huddle.models.llama_loading import find_smollm2_gguf, load_llama, open_llama
from huddle.models.native_probe import NativeCrashError, ensure_native_ok

pytestmark = pytest.mark.local_model

DIES_BY_SIGILL = [sys.executable, "-c", "import os, signal; os.kill(os.getpid(), signal.SIGILL)"]
SUCCEEDS = [sys.executable, "-c", "pass"]


def test_the_model_loads_without_extra_buffer_types_unless_the_profile_asks() -> None:
    assert ModelProfile(provider="local").extra_buffers is False
    loaded = load_llama(find_smollm2_gguf(), 4096)
    assert loaded.llama.model_params.use_extra_bufts is False
    opted_in = open_llama(find_smollm2_gguf(), 256, extra_buffers=True)  # loading is safe; decoding is what may die
    try:
        assert opted_in.model_params.use_extra_bufts is True
    finally:
        opted_in.close()
    again = open_llama(find_smollm2_gguf(), 256)  # the stock defaults are restored after each load
    try:
        assert again.model_params.use_extra_bufts is False
    finally:
        again.close()


def test_a_probe_that_dies_by_a_signal_is_one_error_naming_cause_and_fix(tmp_path: Path) -> None:
    with pytest.raises(NativeCrashError) as caught:
        ensure_native_ok(find_smollm2_gguf(), 4096, False, command=DIES_BY_SIGILL, cache=tmp_path)
    message = str(caught.value)
    assert isinstance(caught.value, HuddleError) and "\n" not in message
    assert "SIGILL" in message and "GGML_NATIVE=OFF" in message and "pip install" in message
    with pytest.raises(NativeCrashError, match="extra_buffers: false"):
        ensure_native_ok(find_smollm2_gguf(), 4096, True, command=DIES_BY_SIGILL, cache=tmp_path)
    assert list(tmp_path.iterdir()) == []  # a failure is not remembered: the next start probes again


def test_a_passing_probe_is_remembered_per_machine_and_build(tmp_path: Path) -> None:
    ensure_native_ok(find_smollm2_gguf(), 1024, False, command=SUCCEEDS, cache=tmp_path)
    assert len(list(tmp_path.glob("*.json"))) == 1
    # Remembered: a second check does not start a child at all (this one would die).
    ensure_native_ok(find_smollm2_gguf(), 1024, False, command=DIES_BY_SIGILL, cache=tmp_path)
    with pytest.raises(NativeCrashError):  # other load parameters are another probe
        ensure_native_ok(find_smollm2_gguf(), 1024, True, command=DIES_BY_SIGILL, cache=tmp_path)
