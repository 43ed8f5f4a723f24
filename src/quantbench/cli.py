"""The ``quantbench`` command (also ``python -m pytest_quantbench``).

``quantbench inspect FILE.gguf [--json]``: a model file's quant map (which type each tensor got),
totals per type, the per-layer pattern and the key metadata, read from the header alone
(:mod:`quantbench.gguf_header`).

``quantbench bench FILE.gguf [--threads N ...] [--repeats R] [--json] [--llamacpp]``: the decode step (every
weight matrix one token multiplies, through this package's gemv; :mod:`quantbench.decode_step`):
ms per token, the tokens/s that bounds, G weights/s, and the time by format and by tensor kind;
with ``--llamacpp``, llama.cpp's kernels on the same matrices beside them, tokens interleaved.

``quantbench requantize IN.gguf OUT.gguf --policy POLICY [--threads N]``: the file with its
matrices requantized under a policy (``GLOB=TYPE,...`` or a preset; :mod:`quantbench.policy`),
written whole or not at all (:mod:`quantbench.requantize`); prints what changed and what fell back.

``quantbench generate MODEL.gguf --prompt TEXT [--tokens N]``: greedy decoding with the reference
forward pass (Gemma 3; :mod:`quantbench.gemma3`) and the file's own tokenizer.

``quantbench compare-policies MODEL.gguf [--out DIR]``: the preset policies side by side (size, decode
ms per token, KL divergence from the shipped file, top-1 agreement, perplexity):
``policies.md``, ``policies.json`` and ``policies.png`` in DIR (:mod:`quantbench.compare_policies`).

A file that cannot be read is one line on stderr naming the problem (and, for a corrupt header,
its byte offset), and exit code 2; bad option values exit with argparse's usage error (2).
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any

from gguf import LlamaFileType

from .gguf_files import GGUFFileError
from .gguf_header import GGUFHeaderError, Header, read_header
from .policy import PRESETS, Policy, PolicyError, parse
from .tokenizer import TokenizerError

EXIT_BAD_FILE = 2
LAYER = re.compile(r"^blk\.(\d+)\.(.+)$")


def _file_type(value: Any) -> str:
    try:
        return f"{value} ({LlamaFileType(value).name})"
    except (ValueError, TypeError):
        return str(value)


def _ranges(layers: list[int]) -> str:
    """0,1,2,3,7,9,10 -> '0-3,7,9-10'."""
    out, start, prev = [], None, None
    for n in sorted(layers) + [None]:
        if start is not None and (n is None or n != prev + 1):
            out.append(str(start) if start == prev else f"{start}-{prev}")
            start = None
        if n is not None and start is None:
            start = n
        prev = n
    return ",".join(out)


def layer_pattern(header: Header) -> list[tuple[str, str]]:
    """(tensor kind, which type it has in which layers) for the ``blk.N.`` tensors, the most
    common type last as "in the other K" (or "in all K", or "in blk ... only" for a kind that
    some layers lack)."""
    by_kind: dict[str, dict[str, list[int]]] = defaultdict(lambda: defaultdict(list))
    all_layers: set[int] = set()
    for t in header.tensors:
        m = LAYER.match(t.name)
        if m:
            by_kind[m.group(2)][t.qtype.name].append(int(m.group(1)))
            all_layers.add(int(m.group(1)))
    out = []
    for kind, types in by_kind.items():
        ordered = sorted(types.items(), key=lambda kv: (len(kv[1]), kv[0]))
        if len(ordered) == 1:
            name, layers = ordered[0]
            where = f"all {len(layers)}" if set(layers) == all_layers else f"blk {_ranges(layers)} only"
            out.append((kind, f"{name} in {where}"))
            continue
        parts = [f"{name} in blk {_ranges(layers)}" for name, layers in ordered[:-1]]
        name, layers = ordered[-1]
        parts.append(f"{name} in the other {len(layers)}")
        out.append((kind, "  ".join(parts)))
    return out


def summary(header: Header) -> dict[str, Any]:
    """What ``inspect`` prints, as data (``--json``)."""
    meta = header.metadata
    arch = meta.get("general.architecture")
    per_type: dict[str, dict[str, int]] = {}
    for t in header.tensors:
        entry = per_type.setdefault(t.qtype.name, {"tensors": 0, "weights": 0, "bytes": 0})
        entry["tensors"] += 1
        entry["weights"] += t.weights
        entry["bytes"] += t.nbytes
    return {
        "version": header.version,
        "file_bytes": header.file_bytes,
        "architecture": arch,
        "layers": meta.get(f"{arch}.block_count"),
        "embedding_width": meta.get(f"{arch}.embedding_length"),
        "context": meta.get(f"{arch}.context_length"),
        "file_type": _file_type(meta.get("general.file_type")),
        "name": meta.get("general.name"),
        "types": per_type,
        "layer_pattern": dict(layer_pattern(header)),
        "tensors": [{"name": t.name, "type": t.qtype.name, "shape": list(t.shape), "bytes": t.nbytes,
                     "bits_per_weight": round(t.bits_per_weight, 4)} for t in header.tensors],
    }


def _print(path: Path, s: dict[str, Any]) -> None:
    total = sum(e["bytes"] for e in s["types"].values())
    print(f"{path.name}: GGUF v{s['version']}, {len(s['tensors'])} tensors, {s['file_bytes'] / 1e6:.1f} MB "
          f"({s['name'] or 'unnamed'})")
    shown = {k: "-" if s[k] in (None, "None") else s[k]
             for k in ("architecture", "layers", "embedding_width", "context", "file_type")}
    print(f"architecture {shown['architecture']}, {shown['layers']} layers, embedding width "
          f"{shown['embedding_width']}, context {shown['context']}, file type {shown['file_type']}")
    print()
    print(f"{'type':<8} {'tensors':>7} {'weights':>12} {'bytes':>12} {'share':>6}")
    for name, e in sorted(s["types"].items(), key=lambda kv: -kv[1]["bytes"]):
        share = f"{e['bytes'] / total:>6.1%}" if total else f"{'-':>6}"  # tensors of 0 bytes: no share
        print(f"{name:<8} {e['tensors']:>7} {e['weights']:>12} {e['bytes']:>12} {share}")
    if s["layer_pattern"]:
        print()
        width = max(len(k) for k in s["layer_pattern"])
        for kind, text in s["layer_pattern"].items():
            print(f"{kind:<{width}}  {text}")
    print()
    width = max(len(t["name"]) for t in s["tensors"]) if s["tensors"] else 4
    print(f"{'tensor':<{width}} {'type':<6} {'shape':<14} {'bytes':>11} {'bits/w':>7}")
    for t in s["tensors"]:
        shape = "x".join(str(d) for d in t["shape"])
        print(f"{t['name']:<{width}} {t['type']:<6} {shape:<14} {t['bytes']:>11} {t['bits_per_weight']:>7.3f}")


def inspect(path: Path, as_json: bool) -> int:
    try:
        header = read_header(path)
    except GGUFHeaderError as err:
        print(f"quantbench inspect: {path}: {err}", file=sys.stderr)
        return EXIT_BAD_FILE
    s = summary(header)
    try:
        if as_json:
            print(json.dumps(s, indent=1))
        else:
            _print(path, s)
    except BrokenPipeError:  # quantbench inspect ... | head
        sys.stderr.close()
    return 0


def _print_bench(path: Path, results: list[dict[str, Any]]) -> None:
    first = results[0]
    print(f"{path.name}: decode step = {first['matrices']} matrices, {first['weights']} weights, one gemv each "
          f"(median of {first['repeats']} tokens)")
    for r in results:
        theirs = r.get("llamacpp")
        print()
        label = "automatic threads" if r["threads"] == "auto" else f"{r['threads']} thread(s)"
        print(f"{label}: {r['ms_per_token']:.2f} ms per token (matmuls only: at most "
              f"{r['tokens_per_s_bound']:.1f} tokens/s), {r['gweights_per_s']:.2f} G weights/s; spread "
              f"{min(r['token_ms']):.2f}-{max(r['token_ms']):.2f} ms, IQR {r['iqr_over_median']:.1%} of the median")
        if theirs:
            print(f"  llama.cpp's kernels, tokens interleaved with these: {theirs['ms_per_token']:.2f} ms per token "
                  f"(at most {theirs['tokens_per_s_bound']:.1f} tokens/s): this package {r['x_llamacpp']:.2f}x as fast")
        for title in ("type", "kind"):
            groups = r[f"by_{title}"]
            width = max(len(title), *(len(k) for k in groups))
            extra = f" {'llama.cpp ms':>12} {'x llama':>7}" if theirs else ""
            print(f"  {title:<{width}} {'ms':>8} {'weights':>11} {'G w/s':>7} {'share':>6}{extra}")
            for name, g in groups.items():
                if theirs:
                    t = theirs[f"by_{title}"][name]["ms"]
                    extra = f" {t:>12.3f} {t / g['ms']:>7.2f}"
                print(f"  {name:<{width}} {g['ms']:>8.3f} {g['weights']:>11} {g['weights'] / g['ms'] / 1e6:>7.2f} "
                      f"{g['share']:>6.1%}{extra}")


def bench(path: Path, threads: list[int | str], repeats: int, as_json: bool, llamacpp: bool = False) -> int:
    from . import decode_step  # noqa: PLC0415 (Numba: only the commands that compute import it)

    try:
        step = decode_step.decode_step(path)
        against = decode_step.llamacpp_step(step) if llamacpp else None
    except (GGUFFileError, RuntimeError, ValueError) as err:
        print(f"quantbench bench: {err}", file=sys.stderr)
        return EXIT_BAD_FILE
    results = [decode_step.measure(step, None if t == "auto" else t, repeats, against=against) for t in threads]
    flags = decode_step.slower_than_one_thread(results)
    if as_json:
        print(json.dumps({"file": str(path), "results": results, "slower_than_one_thread": flags}, indent=1))
    else:
        _print_bench(path, results)
        for line in flags:
            print(f"\nnote: {line}")
    return 0


def _policy_type(text: str) -> Policy:
    try:
        return parse(text)
    except PolicyError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def requantize(src: Path, dst: Path, policy: Policy, threads: int | None, progress: bool,
               imatrix: Path | None = None) -> int:
    from .imatrix import ImatrixError  # noqa: PLC0415
    from .requantize import requantize as write  # noqa: PLC0415

    try:
        choices = write(src, dst, policy, threads=threads, progress=progress, imatrix=imatrix)
    except (GGUFFileError, PolicyError, ImatrixError) as err:
        print(f"quantbench requantize: {err}", file=sys.stderr)
        return EXIT_BAD_FILE
    except OSError as err:  # the reader names its own; these are the output's: read-only, full, name too long
        print(f"quantbench requantize: cannot write {str(dst)!r}: {err.strerror or err}", file=sys.stderr)
        return EXIT_BAD_FILE
    moved: dict[tuple[str, str], list[str]] = defaultdict(list)
    for c in choices:
        if c.changed or c.requested:
            moved[(c.source, c.target if not c.requested else f"{c.target} (fell back from {c.requested})")].append(
                c.tensor.name)
    print(f"{dst}: {dst.stat().st_size} bytes, {len(choices)} tensors, policy {policy.text!r}")
    for (source, target), names in sorted(moved.items()):
        print(f"  {len(names):>4} x {source} -> {target}: {names[0]}{', ...' if len(names) > 1 else ''}")
    kept = sum(1 for c in choices if not c.changed and not c.requested)
    print(f"  {kept:>4} tensors kept as they were")
    return 0


def imatrix(path: Path, text: Path, out: Path, tokens: int | None, threads: int | None, progress: bool) -> int:
    """``quantbench imatrix``: the importance of every matrix's input columns over a text, through
    the reference forward pass, written as llama.cpp's GGUF imatrix file."""
    from .gemma3 import Gemma3  # noqa: PLC0415
    from .imatrix import ImatrixError, collect, save  # noqa: PLC0415
    from .tokenizer import Tokenizer  # noqa: PLC0415

    try:
        words = text.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        print(f"quantbench imatrix: the text {str(text)!r}: {err}", file=sys.stderr)
        return EXIT_BAD_FILE
    try:
        ids = Tokenizer.from_gguf(path).encode(words)[:tokens]
        if len(ids) < 2:
            raise ValueError(f"the text {str(text)!r} gives {len(ids)} token(s): give a longer one")
        model = Gemma3(path, context=min(len(ids), 512), threads=threads)
        importance = collect(model, ids, dataset=text.name, progress=progress)
        save(importance, out)
    except (GGUFFileError, TokenizerError, ImatrixError, ValueError, OSError) as err:
        print(f"quantbench imatrix: {err}", file=sys.stderr)
        return EXIT_BAD_FILE
    n = max(importance.counts.values())
    print(f"{out}: the importance of {len(importance.sums)} matrices over {n} tokens of {text.name}")
    return 0


def generate(path: Path, prompt: str, tokens: int, threads: int | None) -> int:
    from .gemma3 import Gemma3  # noqa: PLC0415
    from .tokenizer import Tokenizer  # noqa: PLC0415

    try:
        tokenizer = Tokenizer.from_gguf(path)
        ids = tokenizer.encode(prompt)
        model = Gemma3(path, context=len(ids) + tokens, threads=threads)
    except (GGUFFileError, TokenizerError, ValueError) as err:
        print(f"quantbench generate: {err}", file=sys.stderr)
        return EXIT_BAD_FILE
    out, _ = model.generate(ids, tokens)
    print(f"prompt ids: {ids}")
    print(f"generated ids: {out}")
    print(prompt + tokenizer.decode(out))
    return 0


def _named_policy(text: str) -> tuple[str, str]:
    name, colon, rules = text.partition(":")
    if not colon or not re.fullmatch(r"[A-Za-z0-9._-]{1,60}", name):
        raise argparse.ArgumentTypeError(f"expected NAME:RULES with a NAME of 1-60 characters of A-Za-z0-9._- "
                                         f"(e.g. 'mine:blk.*=Q8_0,*=keep'), got {text!r}")
    if name == "shipped":
        raise argparse.ArgumentTypeError("'shipped' names the file as it is, the baseline: "
                                         "give your policy another name")
    _policy_type(rules)
    return name, rules


def compare_policies(path: Path, out: Path, tokens: int | None, threads: int, progress: bool,
                     named: list[tuple[str, str]] | None, imatrix: Path | None = None) -> int:
    from . import compare_policies  # noqa: PLC0415

    try:  # before the minutes of work whose plot it draws
        import matplotlib  # noqa: F401, PLC0415
    except ImportError:
        print("quantbench compare-policies: it draws its plot with matplotlib, which is not installed "
              "(pip install 'pytest-quantbench[models]')", file=sys.stderr)
        return EXIT_BAD_FILE
    policies = None
    if named:
        policies = {compare_policies.BASELINE: PRESETS[compare_policies.BASELINE], **dict(named)}
    try:
        rows, n = compare_policies.compare_policies(path, out, policies=policies, max_tokens=tokens, threads=threads,
                                                    progress=progress, imatrix=imatrix)
    except (GGUFFileError, PolicyError, TokenizerError, ValueError, OSError) as err:
        print(f"quantbench compare-policies: {err}", file=sys.stderr)
        return EXIT_BAD_FILE
    shown = None if imatrix is None else imatrix.name
    made = compare_policies.write(rows, out, path.name, n, threads, shown)
    print(compare_policies.markdown(rows, path.name, n, threads, shown))
    print("written: " + ", ".join(str(p) for p in made))
    return 0


def positive_int(text: str) -> int:
    """An argparse ``type``: a whole number of at least 1 (counts, threads, rounds), else a usage
    error naming the text given."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive whole number, got {text!r}")
    return value


def thread_count(text: str) -> int:
    """An argparse ``type``: :func:`positive_int` within Numba's thread pool here (a kernel asked
    for more would run on fewer, under a label that says otherwise)."""
    import numba  # here: the CLI's other commands start without it

    value = positive_int(text)
    if value > numba.config.NUMBA_NUM_THREADS:
        raise argparse.ArgumentTypeError(f"at most {numba.config.NUMBA_NUM_THREADS} threads here (Numba's pool), "
                                         f"got {text!r}")
    return value


def thread_count_or_auto(text: str) -> int | str:
    """:func:`thread_count`, or "auto": the kernels' automatic choice (threads=None)."""
    return "auto" if text == "auto" else thread_count(text)


def weight_formats(text: str) -> list[str]:
    """An argparse ``type``: comma-separated names of weight formats (those with a gemv), as the
    registry spells them; an unknown name or an activation format is a usage error naming it."""
    import quantbench_kernels as qk

    names = []
    for name in text.split(","):
        try:
            fmt = qk.get_format(name)
        except ValueError as e:
            raise argparse.ArgumentTypeError(str(e)) from None
        if not fmt.supports("gemv"):
            raise argparse.ArgumentTypeError(f"{fmt.name} is an activation format, not a weight format "
                                             "(it has no gemv)")
        names.append(fmt.name)
    return names


def main(argv: list[str] | None = None) -> int:
    from importlib.metadata import version

    parser = argparse.ArgumentParser(prog="quantbench", description="GGUF model files: what they hold, how fast")
    parser.add_argument("--version", action="version", version=f"%(prog)s {version('pytest-quantbench')}")
    commands = parser.add_subparsers(dest="command", required=True)
    p = commands.add_parser("inspect", help="the quant map of a GGUF file: types, totals, per-layer pattern")
    p.add_argument("file", type=Path, metavar="FILE.gguf")
    p.add_argument("--json", action="store_true", help="print it as JSON")
    b = commands.add_parser("bench", help="the decode step: every matrix one token multiplies, through gemv")
    b.add_argument("file", type=Path, metavar="FILE.gguf")
    b.add_argument("--threads", type=thread_count_or_auto, nargs="+", default=[1, 2], metavar="N",
                   help="thread counts to measure, or 'auto' for the API's automatic choice (default: 1 2)")
    b.add_argument("--repeats", type=positive_int, default=7, metavar="R", help="tokens timed; the median is shown")
    b.add_argument("--json", action="store_true", help="print the results as JSON")
    b.add_argument("--llamacpp", action="store_true",
                   help="time llama.cpp's own kernels on the same matrices too, tokens interleaved (needs ggml-python)")
    r = commands.add_parser("requantize", help="rewrite a GGUF file's matrices under a quantization policy")
    r.add_argument("src", type=Path, metavar="IN.gguf")
    r.add_argument("dst", type=Path, metavar="OUT.gguf")
    r.add_argument("--policy", type=_policy_type, required=True, metavar="POLICY",
                   help=f"GLOB=TYPE rules, first match wins (e.g. 'blk.*.attn_*=Q4_K,blk.*=Q2_K,*=keep'), or a "
                        f"preset: {', '.join(PRESETS)}")
    r.add_argument("--threads", type=thread_count, default=None, metavar="N", help="threads for the quantizers")
    r.add_argument("--imatrix", type=Path, default=None, metavar="FILE",
                   help="weight by this importance matrix, as llama-quantize --imatrix (quantbench imatrix writes one)")
    r.add_argument("--no-progress", action="store_true", help="no progress bar")
    m = commands.add_parser("imatrix", help="the importance of every matrix's inputs over a text, as llama-imatrix")
    m.add_argument("file", type=Path, metavar="MODEL.gguf")
    m.add_argument("--text", type=Path, required=True, metavar="FILE", help="the text to run through the model")
    m.add_argument("-o", "--output", type=Path, required=True, metavar="OUT", help="the imatrix file to write (GGUF)")
    m.add_argument("--tokens", type=positive_int, default=None, metavar="N", help="at most N tokens of the text")
    m.add_argument("--threads", type=thread_count, default=None, metavar="N", help="threads for every gemv")
    m.add_argument("--no-progress", action="store_true", help="no progress bar")
    g = commands.add_parser("generate", help="greedy decoding with the reference forward pass (Gemma 3)")
    g.add_argument("file", type=Path, metavar="MODEL.gguf")
    g.add_argument("--prompt", required=True, help="the text to continue")
    g.add_argument("--tokens", type=positive_int, default=32, metavar="N", help="tokens to generate (default 32)")
    g.add_argument("--threads", type=thread_count, default=None, metavar="N", help="threads for every gemv")
    c = commands.add_parser("compare-policies", help="the preset policies side by side: size, speed, quality")
    c.add_argument("file", type=Path, metavar="MODEL.gguf")
    c.add_argument("--out", type=Path, default=Path("policies"), metavar="DIR",
                   help="where the requantized files, the table and the plot go (default ./policies)")
    c.add_argument("--tokens", type=positive_int, default=None, metavar="N",
                   help="measure quality on the first N tokens of the text only (default: all)")
    c.add_argument("--threads", type=thread_count, default=1, metavar="N", help="threads (default 1)")
    c.add_argument("--policy", type=_named_policy, action="append", metavar="NAME:RULES", dest="policies",
                   help="compare this policy (repeatable) instead of the presets; the shipped file is always "
                        "the baseline, e.g. --policy 'mine:blk.*.ffn_down*=Q6_K,blk.*=Q4_K,*=keep'")
    c.add_argument("--imatrix", type=Path, default=None, metavar="FILE",
                   help="also requantize each policy with this importance matrix, side by side")
    c.add_argument("--no-progress", action="store_true", help="no progress bars")
    args = parser.parse_args(argv)
    if args.command == "requantize":
        return requantize(args.src, args.dst, args.policy, args.threads, not args.no_progress, args.imatrix)
    if args.command == "imatrix":
        return imatrix(args.file, args.text, args.output, args.tokens, args.threads, not args.no_progress)
    if args.command == "generate":
        return generate(args.file, args.prompt, args.tokens, args.threads)
    if args.command == "compare-policies":
        return compare_policies(args.file, args.out, args.tokens, args.threads, not args.no_progress,
                                args.policies, args.imatrix)
    if args.command == "bench":
        return bench(args.file, args.threads, args.repeats, args.json, args.llamacpp)
    return inspect(args.file, args.json)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
