"""One token of a GGUF model: this package's decode step (``quantbench bench``: the matmuls alone)
against llama.cpp generating whole tokens (llama-cpp-python: matmuls, norms, attention, sampling's
logits), in alternating processes, so that both see the same machine.

llama-cpp-python is not a dependency (it builds llama.cpp from source for ~10 minutes); install it
into a virtual environment of its own and pass that environment's python::

    python3 -m venv /tmp/llvenv && /tmp/llvenv/bin/pip install llama-cpp-python numpy
    .venv/bin/python tests/perf/decode_vs_llama_cpp.py MODEL.gguf --llama-python /tmp/llvenv/bin/python

On a KVM guest that reports AMX but does not enable it, llama.cpp's native build dies of SIGILL in
its AMX matmul (``tilezero``): build it without AMX, e.g. ``CMAKE_ARGS="-DGGML_NATIVE=OFF
-DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_AVX512=ON -DGGML_AVX512_VNNI=ON -DGGML_AVX_VNNI=ON"``.

Prints, per thread count, the medians over the rounds: llama.cpp's ms per token (the median of
``--tokens`` single-token evals after a short prompt, greedy) and ours (``quantbench bench --json``),
and ``bound / llama.cpp``: the tokens/s our matmuls bound over the tokens/s llama.cpp generates.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

WARM_UP = 4  # llama.cpp's first tokens, not counted


def llama_side(model: str, threads: int, tokens: int) -> None:
    """Run under llama-cpp-python's interpreter: print llama.cpp's median ms per generated token."""
    import numpy as np
    from llama_cpp import Llama

    llm = Llama(model_path=model, n_threads=threads, n_threads_batch=threads, n_ctx=512, verbose=False)
    llm.eval(llm.tokenize(b"The quick brown fox jumps over the lazy dog. Once upon a time"))
    seconds = []
    for _ in range(tokens):
        token = int(np.argmax(llm.scores[llm.n_tokens - 1]))
        start = time.perf_counter()
        llm.eval([token])
        seconds.append(time.perf_counter() - start)
    print(json.dumps({"ms_per_token": 1e3 * float(np.median(seconds[WARM_UP:]))}))


def _json(cmd: list[str]) -> dict:
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    if proc.returncode:
        sys.exit(f"{' '.join(cmd)} failed ({proc.returncode}): {proc.stderr.strip()[-2000:]}")
    return json.loads(proc.stdout[proc.stdout.index("{"):])


def parse_arguments(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line, checked: a missing model, a count below 1 or too few tokens to time is
    a usage error naming it. (Plain checks: the llama.cpp side runs under llama-cpp-python's
    interpreter, which need not have this package.)"""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("model", type=Path)
    p.add_argument("--llama-python", required=True, help="a python that can import llama_cpp")
    p.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--tokens", type=int, default=40, help="tokens llama.cpp generates per round")
    p.add_argument("--llama-side", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if min(args.threads) < 1 or args.rounds < 1:
        p.error(f"--threads and --rounds must be at least 1, got {args.threads} and {args.rounds}")
    if args.tokens <= WARM_UP:
        p.error(f"--tokens must be more than the {WARM_UP} warm-up tokens, got {args.tokens}")
    if not args.model.is_file():
        p.error(f"{args.model}: no such file")
    if not args.llama_side and not Path(args.llama_python).is_file():
        p.error(f"--llama-python {args.llama_python}: no such file")
    return args


def main() -> None:
    args = parse_arguments()
    if args.llama_side:
        llama_side(str(args.model), args.threads[0], args.tokens)
        return
    theirs: dict[int, list[float]] = {t: [] for t in args.threads}
    ours: dict[int, list[float]] = {t: [] for t in args.threads}
    for _ in range(args.rounds):
        for t in args.threads:
            theirs[t].append(_json([args.llama_python, __file__, str(args.model), "--llama-side", "--threads", str(t),
                                    "--tokens", str(args.tokens), "--llama-python", "-"])["ms_per_token"])
            bench = _json([sys.executable, "-m", "quantbench", "bench", str(args.model), "--threads", str(t),
                           "--repeats", "9", "--json"])
            ours[t].append(bench["results"][0]["ms_per_token"])
    print(f"{args.model.name}: medians of {args.rounds} alternating rounds")
    print(f"{'threads':>7} {'llama.cpp ms/token':>18} {'our matmuls ms':>14} {'bound / llama.cpp':>17}  "
          "rounds: theirs / ours")
    for t in args.threads:
        a, b = statistics.median(theirs[t]), statistics.median(ours[t])
        print(f"{t:>7} {a:>18.2f} {b:>14.2f} {a / b:>16.2f}x  {', '.join(f'{v:.1f}' for v in theirs[t])} / "
              f"{', '.join(f'{v:.1f}' for v in ours[t])}")


if __name__ == "__main__":
    main()
