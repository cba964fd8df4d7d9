"""The embedded model's speed with and without llama.cpp's extra buffer types (weight repacking), side by side.

Run: ``python bench/local_speed.py [--runs 3] [--prompt-words 300] [--max-tokens 128]``. Each setting runs in a child
process of its own, because on CPUs whose repacked kernels the host refuses (AMX on some VMs) the child dies by a
signal: that is reported as the result instead of a speed. Prompt evaluation and generation are timed separately
(tokens per second, median of the runs), at temperature 0 with the bundled SmolLM2 and huddle's thread count.
"""

from __future__ import annotations

import argparse
import json
import signal
import statistics
import subprocess
import sys

CHILD = """
import json, sys, time
from huddle.models.llama_loading import find_smollm2_gguf, open_llama
extra, runs, words, max_tokens = sys.argv[1] == "1", int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
llama = open_llama(find_smollm2_gguf(), 4096, extra_buffers=extra)
prompt = " ".join(f"word{i % 50}" for i in range(words))
rows = []
for _ in range(runs):
    llama.reset()
    started = time.perf_counter()
    first = llama.create_completion(prompt, max_tokens=1, temperature=0.0)
    prompt_s = time.perf_counter() - started
    llama.reset()
    started = time.perf_counter()
    messages = [{"role": "user", "content": "Write a short story about a lighthouse keeper."}]
    out = llama.create_chat_completion(messages, max_tokens=max_tokens, temperature=0.0)
    gen_s = time.perf_counter() - started
    rows.append([first["usage"]["prompt_tokens"] / prompt_s, out["usage"]["completion_tokens"] / gen_s])
print(json.dumps(rows))
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--prompt-words", type=int, default=300)
    parser.add_argument("--max-tokens", type=int, default=128)
    args = parser.parse_args()
    print(f"{'extra_buffers':14} {'prompt tok/s':>13} {'generate tok/s':>15}")
    for extra in (False, True):
        child = subprocess.run(
            [sys.executable, "-c", CHILD, "1" if extra else "0", str(args.runs), str(args.prompt_words),
             str(args.max_tokens)],
            capture_output=True, text=True, timeout=600,
        )  # fmt: skip
        if child.returncode < 0:
            print(f"{extra!s:14} died with {signal.Signals(-child.returncode).name}")
            continue
        if child.returncode != 0:
            print(f"{extra!s:14} failed: {child.stderr.strip().splitlines()[-1]}")
            continue
        rows = json.loads(child.stdout)
        prompt_rate = statistics.median(r[0] for r in rows)
        gen_rate = statistics.median(r[1] for r in rows)
        print(f"{extra!s:14} {prompt_rate:13.0f} {gen_rate:15.0f}")


if __name__ == "__main__":
    main()
