"""A child-process check that the embedded model's native library runs on this CPU, before this process touches it.

llama.cpp is compiled C++; when a build uses an instruction the host refuses (AMX tiles on a VM that does not allow
them, AVX-512 in a wheel built on another machine), the first decode kills the whole Python process with a signal:
no exception, no message, exit 132. We cannot catch that in-process, so before the first load a child process loads
the same model with the same parameters, reads a prompt of a few dozen tokens and decodes two. A child that dies by a
signal becomes one `NativeCrashError` naming the signal, the likely cause and the fix; a child that succeeds is
remembered in a small file keyed by everything that decides the outcome (llama-cpp-python's version, the CPU's flags,
the model file and the load parameters), so the probe costs about a second once per machine and build, not per run.

Run as ``python -m huddle.models.native_probe MODEL_PATH N_CTX EXTRA_BUFFERS``: that is the child's side.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import os
import platform
import signal
import subprocess
import sys
import threading
from pathlib import Path

from huddle.errors import HuddleError

__all__ = ["NativeCrashError", "ensure_native_ok", "probe_cache_dir"]

PROBE_TIMEOUT_S = 300.0
"""A load and two tokens take about a second; a child still running after this long is stuck, not slow."""
_PROBE_PROMPT = "Write a short, friendly reply to the customer who asked about their order. " * 4
"""A prompt of ~60 tokens: the kernels that crash (repacked weights, AMX tiles) only run for batches of several
tokens; measured here, a one-token prompt decoded fine with extra buffers on while eight tokens died by SIGSEGV."""
_checked: set[str] = set()
_checked_lock = threading.Lock()


class NativeCrashError(HuddleError):
    """The embedded model's native library died (or failed) in the probe child: running it here would crash huddle."""


def probe_cache_dir() -> Path:
    """``$XDG_CACHE_HOME/huddle/native-probe`` (``~/.cache/...``): per machine, not per data directory."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "huddle" / "native-probe"


def _cpu_flags() -> str:
    """The CPU's feature flags as the kernel reports them (x86 ``flags``, arm ``Features``), else the machine name."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as cpuinfo:
            for line in cpuinfo:
                key, _, value = line.partition(":")
                if key.strip() in ("flags", "Features"):
                    return " ".join(sorted(value.split()))
    except OSError:
        pass
    return platform.processor() or platform.machine()


def probe_key(model_path: Path, n_ctx: int, extra_buffers: bool) -> str:
    """What decides whether the probe passes: the library build, the CPU, the model file and the load parameters."""
    try:
        version = importlib.metadata.version("llama-cpp-python")
    except importlib.metadata.PackageNotFoundError:
        version = "unknown"
    stat = model_path.stat()
    parts = [
        version,
        platform.machine(),
        _cpu_flags(),
        str(model_path),
        str(stat.st_size),
        str(n_ctx),
        str(extra_buffers),
    ]
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:32]


def ensure_native_ok(
    model_path: Path, n_ctx: int, extra_buffers: bool, *, command: list[str] | None = None, cache: Path | None = None
) -> None:
    """Return when the native library is known to run this model here; raise `NativeCrashError` when it does not.

    `command` replaces the child's command line and `cache` the cache folder (tests); the defaults probe for real.
    """
    key = probe_key(model_path, n_ctx, extra_buffers)
    marker = (cache or probe_cache_dir()) / f"{key}.json"
    with _checked_lock:
        if str(marker) in _checked or marker.is_file():
            _checked.add(str(marker))
            return
        argv = command or [
            sys.executable,
            "-m",
            "huddle.models.native_probe",
            str(model_path),
            str(n_ctx),
            "1" if extra_buffers else "0",
        ]
        try:
            child = subprocess.run(
                argv,
                capture_output=True,
                text=True,
                errors="replace",
                timeout=PROBE_TIMEOUT_S,
                stdin=subprocess.DEVNULL,
            )
        except subprocess.TimeoutExpired:
            raise NativeCrashError(
                f"the embedded model's test generation did not finish in {PROBE_TIMEOUT_S:.0f} s; huddle did not run "
                "it in this process. Check that the machine is not out of memory, or use a model server instead "
                "(a profile with provider: openai and a base_url)"
            ) from None
        if child.returncode != 0:
            raise NativeCrashError(_explain(child.returncode, child.stderr, extra_buffers))
        marker.parent.mkdir(parents=True, exist_ok=True)
        marker.write_text(json.dumps({"ok": True, "model": str(model_path), "extra_buffers": extra_buffers}))
        _checked.add(str(marker))


def _explain(returncode: int, stderr: str, extra_buffers: bool) -> str:
    """One line: what happened to the child, why that is likely, and what to do about it."""
    rebuild = (
        'rebuild llama.cpp for this CPU: CMAKE_ARGS="-DGGML_NATIVE=OFF" pip install --force-reinstall --no-cache-dir '
        "--no-binary llama-cpp-python llama-cpp-python==" + _version()
    )
    if returncode < 0:
        try:
            name = signal.Signals(-returncode).name
        except ValueError:
            name = f"signal {-returncode}"
        if extra_buffers:
            cause = "llama.cpp's extra buffer types (weight repacking, AMX tiles), which this CPU or VM does not allow"
        elif name == "SIGILL":
            cause = "an instruction this CPU refuses, e.g. AVX-512 or AMX in a build made for another machine"
        else:
            cause = "a fault in the native library as built for this machine"
        fix = (
            "set `extra_buffers: false` on the local profile (the default), or " + rebuild if extra_buffers else rebuild
        )
        return (
            f"the embedded model's native library (llama-cpp-python {_version()}) died with {name} in a test "
            f"generation, so huddle did not run it in this process. Likely cause: {cause}. Fix: {fix}"
        )
    last = next((line for line in reversed(stderr.strip().splitlines()) if line.strip()), "no message")
    return f"the embedded model failed to load in a test generation (exit {returncode}): {last[:300]}"


def _version() -> str:
    try:
        return importlib.metadata.version("llama-cpp-python")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def _child(model_path: str, n_ctx: str, extra_buffers: str) -> None:
    """The probe itself: load exactly as `huddle.models.llama_loading.open_llama` does, then decode two tokens."""
    from huddle.models.llama_loading import open_llama

    llama = open_llama(Path(model_path), int(n_ctx), extra_buffers=extra_buffers == "1")
    llama.create_completion(_PROBE_PROMPT, max_tokens=2, temperature=0.0)
    llama.close()


if __name__ == "__main__":
    _child(*sys.argv[1:4])
