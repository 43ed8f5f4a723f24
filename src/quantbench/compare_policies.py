"""``quantbench compare-policies``: quantization policies of one model, side by side in size,
decode speed and quality.

Each policy (:data:`policy.PRESETS` by default) is applied to the model file (``requantize``);
then every variant reads the same natural text (``data/text.txt``, or the ``text`` argument) in lock step
through the reference forward pass (:mod:`gemma3`), and at each position its next-token
distribution is compared with the file as shipped, as llama.cpp's ``llama-perplexity
--kl-divergence`` does: KL(shipped || variant) (mean and 99th percentile), how often both put
the same token first, and each variant's own perplexity on the text. Speed is the decode step
of ``quantbench bench`` (every matrix through this package's gemv once, median ms per token).

The baseline is itself quantized (llama.cpp's Q4_K_M mix for the shipped Gemma file): the KL
divergences say how far each variant moves from it, not from the original float weights.
"""

from __future__ import annotations

import json
import os
import sys
from dataclasses import asdict, dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from . import decode_step
from .gemma3 import Config, Gemma3
from .gguf_files import read_file_header, read_tensors, replacing
from .policy import KEEP, PRESETS, Choice, is_matrix, parse, plan
from .requantize import requantize
from .tokenizer import Tokenizer

BASELINE = "shipped"


def default_text() -> str:
    """The natural text the quality columns are measured on (about 660 Gemma tokens)."""
    return resources.files("quantbench").joinpath("data/text.txt").read_text(encoding="utf-8")


@dataclass
class Row:
    """One policy's line of the table."""

    policy: str
    rules: str
    file_bytes: int
    bits_per_weight: float  # over every tensor of the file
    block_bits_per_weight: float  # over the blk.* matrices, which the policies change
    types: dict[str, int]  # blk.* matrices per type
    fell_back: int  # matrices whose rows made the rule's type fall back
    ms_per_token: float
    mean_kl: float
    p99_kl: float
    top1_agreement: float
    perplexity: float


def _sizes(path: Path, choices: list[Choice]) -> dict[str, Any]:
    """The size columns of a file written as ``choices`` say."""
    weights = sum(c.tensor.shape[0] * c.tensor.shape[1] for c in choices)
    blocks = [c for c in choices if c.tensor.name.startswith("blk.") and is_matrix(c.tensor)]
    types: dict[str, int] = {}
    for c in blocks:
        types[c.target] = types.get(c.target, 0) + 1
    return {
        "file_bytes": path.stat().st_size,
        "bits_per_weight": 8 * sum(c.nbytes for c in choices) / weights,
        "block_bits_per_weight": 8 * sum(c.nbytes for c in blocks) / sum(c.tensor.shape[0] * c.tensor.shape[1]
                                                                       for c in blocks),
        "types": dict(sorted(types.items())),
        "fell_back": sum(c.requested is not None for c in blocks),
    }


def _log_softmax(logits: np.ndarray) -> np.ndarray:
    z = logits.astype(np.float64)
    return z - np.logaddexp.reduce(z)


def quality(models: dict[str, Gemma3], ids: list[int], progress: bool = True) -> dict[str, dict[str, float]]:
    """Every model reads ``ids`` in lock step; per model, against the BASELINE model's next-token
    distributions: mean and 99th-percentile KL divergence, top-1 agreement, and its own
    perplexity on the text."""
    if len(ids) < 2:
        raise ValueError(f"the text is {len(ids)} token(s): quality needs at least 2")
    for m in models.values():
        m.reset()
    kl: dict[str, list[float]] = {k: [] for k in models}
    same: dict[str, int] = dict.fromkeys(models, 0)
    nll: dict[str, float] = dict.fromkeys(models, 0.0)
    for pos in tqdm(range(len(ids) - 1), desc="quality", unit="token", disable=not progress, file=sys.stderr):
        lp = {k: _log_softmax(m.step(ids[pos])) for k, m in models.items()}
        base = lp[BASELINE]
        p = np.exp(base)
        for k, q in lp.items():
            kl[k].append(float(np.sum(p * (base - q))))
            same[k] += int(np.argmax(q) == np.argmax(base))
            nll[k] -= float(q[ids[pos + 1]])
    n = len(ids) - 1
    return {k: {"mean_kl": float(np.mean(kl[k])), "p99_kl": float(np.percentile(kl[k], 99)),
                "top1_agreement": same[k] / n, "perplexity": float(np.exp(nll[k] / n))} for k in models}


IMATRIX = "+imatrix"  # the suffix of a policy's variant requantized with the importance matrix


def compare_policies(model: str | os.PathLike[str], out_dir: str | os.PathLike[str], *,
                     policies: dict[str, str] | None = None, text: str | None = None, max_tokens: int | None = None,
                     threads: int = 1, repeats: int = 5, progress: bool = True,
                     imatrix: str | os.PathLike[str] | None = None) -> tuple[list[Row], int]:
    """Requantize ``model`` under each policy into ``out_dir`` and measure every variant (see the
    module docstring): the rows, and the tokens of text they were measured on. ``policies`` maps
    names to policy texts; it must include BASELINE (``*=keep``). ``max_tokens`` cuts the text
    (for quick runs). With ``imatrix`` (an importance-matrix file), each policy also gets a variant
    requantized with it, named ``<policy>+imatrix``, beside the one without."""
    model, out_dir = Path(model), Path(out_dir)
    policies = dict(PRESETS if policies is None else policies)
    if BASELINE not in policies:
        raise ValueError(f"the policies must include {BASELINE!r} (the file as shipped): the KL columns' baseline")
    parsed = {name: parse(rules) for name, rules in policies.items()}
    # A model the forward pass cannot run, or a text it cannot tokenize, fails before minutes of
    # requantizing.
    config = Config.from_metadata(read_file_header(model).metadata, str(model))
    ids = Tokenizer.from_gguf(model).encode(default_text() if text is None else text)[:max_tokens]
    if not 2 <= len(ids) <= config.context_length:
        raise ValueError(f"the text is {len(ids)} token(s): quality needs at least 2, and at most the model's "
                         f"context of {config.context_length}")
    out_dir.mkdir(parents=True, exist_ok=True)
    paths, choices = {}, {}
    for name, pol in list(parsed.items()):
        if all(r.type == KEEP for r in pol.rules):
            paths[name], choices[name] = model, plan(read_tensors(model), pol)
            continue
        paths[name] = out_dir / f"{model.stem}.{name}.gguf"
        choices[name] = requantize(model, paths[name], pol, threads=threads, progress=progress)
        if imatrix is not None:
            weighted = name + IMATRIX
            parsed[weighted] = pol
            paths[weighted] = out_dir / f"{model.stem}.{name}.imatrix.gguf"
            choices[weighted] = requantize(model, paths[weighted], pol, threads=threads, progress=progress,
                                           imatrix=imatrix)
    models = {name: Gemma3(path, context=len(ids), threads=threads) for name, path in paths.items()}
    scores = quality(models, ids, progress)
    rows = []
    for name, path in paths.items():
        speed = decode_step.measure(decode_step.decode_step(path), threads, repeats)
        rules = ",".join(f"{r.glob}={r.type}" for r in parsed[name].rules)
        rows.append(Row(name, rules,
                        ms_per_token=speed["ms_per_token"], **_sizes(path, choices[name]), **scores[name]))
    return rows, len(ids)


def markdown(rows: list[Row], model: str, tokens: int, threads: int, imatrix: str | None = None) -> str:
    """The table, as Markdown, with what it was measured on."""
    weighted = (f" Policies marked {IMATRIX} were requantized with the importance matrix `{imatrix}` "
                f"(as `llama-quantize --imatrix`), the others without." if imatrix else "")
    lines = [
        f"Model: `{model}`; quality over {tokens} tokens of text, against the file as shipped "
        f"(itself quantized: the KL columns say how far a policy moves from it, not from float weights); "
        f"decode step with {threads} thread(s).{weighted}",
        "",
        "| policy | file MB | bits/weight (all) | bits/weight (blk.*) | blk.* matrices by type | fell back "
        "| decode ms/token | mean KL | p99 KL | same top-1 | perplexity |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        types = ", ".join(f"{n} {t}" for t, n in r.types.items())
        lines.append(f"| {r.policy} | {r.file_bytes / 1e6:.1f} | {r.bits_per_weight:.2f} "
                     f"| {r.block_bits_per_weight:.2f} "
                     f"| {types} | {r.fell_back} | {r.ms_per_token:.1f} | {r.mean_kl:.4f} | {r.p99_kl:.3f} "
                     f"| {r.top1_agreement:.1%} | {r.perplexity:.2f} |")
    return "\n".join(lines) + "\n"


def plot(rows: list[Row], path: str | os.PathLike[str], model: str) -> None:
    """Size against quality (mean KL from the shipped file, which sits at 0), the decode speed in
    each label: a PNG."""
    import matplotlib  # noqa: PLC0415  (only this command needs it: the models extra)

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    fig, ax = plt.subplots(figsize=(7.5, 4.8), dpi=120)
    middle = (min(r.file_bytes for r in rows) + max(r.file_bytes for r in rows)) / 2
    plain = {r.policy: r for r in rows if not r.policy.endswith(IMATRIX)}
    best = min(r.mean_kl for r in plain.values())
    for r in rows:
        base = plain.get(r.policy[: -len(IMATRIX)]) if r.policy.endswith(IMATRIX) else None
        if base is not None:  # the same file size: an arrow down from the policy without, a short label
            ax.annotate("", (r.file_bytes / 1e6, r.mean_kl), (base.file_bytes / 1e6, base.mean_kl),
                        arrowprops=dict(arrowstyle="->", color="0.5", lw=0.8))
            ax.scatter(r.file_bytes / 1e6, r.mean_kl, s=40, marker="D")
            ax.annotate(f"{IMATRIX}: perplexity {r.perplexity:.1f}", (r.file_bytes / 1e6, r.mean_kl),
                        textcoords="offset points", xytext=(6, -10), ha="left", fontsize=6, color="0.3")
            continue
        left = r.file_bytes > middle  # labels point inwards, above the points but the lowest
        ax.scatter(r.file_bytes / 1e6, r.mean_kl, s=40)
        ax.annotate(f"{r.policy}: {r.block_bits_per_weight:.2f} bits/weight in blk.*\n"
                    f"{r.ms_per_token:.1f} ms/token, perplexity {r.perplexity:.1f}", (r.file_bytes / 1e6, r.mean_kl),
                    textcoords="offset points", xytext=(-8 if left else 8, -20 if r.mean_kl == best else 8),
                    ha="right" if left else "left", fontsize=7)
    ax.set_xlabel("file size (MB)")
    ax.set_ylabel("mean KL divergence from the shipped file (nats)")
    ax.set_title(f"{model}: size against quality, per quantization policy", fontsize=9)
    ax.margins(x=0.3, y=0.15)
    fig.tight_layout()
    fig.savefig(path, format="png")
    plt.close(fig)


def write(rows: list[Row], out_dir: str | os.PathLike[str], model: str, tokens: int, threads: int,
          imatrix: str | None = None) -> list[Path]:
    """The table as Markdown and JSON and the plot as PNG in ``out_dir`` (each written whole:
    to a unique temporary name, then renamed; see :func:`quantbench.gguf_files.replacing`)."""
    out_dir = Path(out_dir)
    made = []
    for name, content in (("policies.md", markdown(rows, model, tokens, threads, imatrix)),
                          ("policies.json", json.dumps({"model": model, "tokens": tokens, "threads": threads,
                                                        "imatrix": imatrix,
                                                        "rows": [asdict(r) for r in rows]}, indent=1) + "\n")):
        with replacing(out_dir / name) as tmp:
            tmp.write_text(content, encoding="utf-8")
        made.append(out_dir / name)
    with replacing(out_dir / "policies.png") as tmp:
        plot(rows, tmp, model)
    made.append(out_dir / "policies.png")
    return made
