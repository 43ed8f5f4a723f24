"""Quantization policies: which type each weight matrix of a GGUF file gets.

A policy is a comma-separated list of ``GLOB=TYPE`` rules, matched against tensor names in order,
first match wins: ``blk.*.attn_*=Q4_K,blk.*.ffn_*=Q2_K,*=keep``. ``TYPE`` is a format this
package quantizes (``Q4_K``, ``Q5_0``...) or ``keep`` (the tensor is copied as the file holds it).
Only matrices (2-D tensors of more than one row) are ever requantized: norms and other vectors
are kept whatever the rules say, as llama.cpp's ``llama-quantize`` keeps 1-D tensors. A matrix that
no rule matches is kept.

A matrix whose rows are not a whole number of the chosen type's blocks falls back as
``llama-quantize`` does (``llama_tensor_get_type``): the 256-weight types to a 32-weight type.
The plan says which tensors fell back, so that a "Q2_K" file whose matrices mostly have rows of
640 (Gemma 3 270M) shows as what it is.
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass

from gguf import GGML_QUANT_SIZES, GGMLQuantizationType, LlamaFileType

from .gguf_files import Tensor

KEEP = "keep"

# llama-quantize's fallback for rows that are not a multiple of 256 weights (llama_tensor_get_type).
FALLBACK = {
    "Q2_K": "IQ4_NL",
    "Q3_K": "IQ4_NL",
    "IQ4_XS": "IQ4_NL",
    "Q4_K": "Q5_0",
    "Q5_K": "Q5_1",
    "Q6_K": "Q8_0",
}

# The named policies of the hybrid study (``quantbench compare-policies``). Every preset keeps the
# token embedding (tied to the output head in Gemma 3) as shipped, so that the policies differ in
# the transformer blocks only.
PRESETS = {
    "shipped": f"*={KEEP}",
    "all-Q4_K": f"blk.*=Q4_K,*={KEEP}",
    "all-Q2_K": f"blk.*=Q2_K,*={KEEP}",
    "attn-Q4_K-ffn-Q2_K": f"blk.*.attn_*=Q4_K,blk.*.ffn_*=Q2_K,*={KEEP}",
    "attn-Q2_K-ffn-Q4_K": f"blk.*.attn_*=Q2_K,blk.*.ffn_*=Q4_K,*={KEEP}",
    # llama.cpp's own mixes, as its llama_tensor_get_type (c392e50) chooses them for Gemma 3 270M (18
    # layers, 4 query heads per KV head): Q2_K gives attn_v Q4_K (n_gqa >= 4), attn_output and
    # ffn_down Q3_K; Q3_K_M gives attn_v Q5_K in the first two layers and Q4_K after, ffn_down Q5_K
    # in layer 0 (n_layer / 16) and Q4_K after, attn_output Q4_K. The rest of each block is the mix's
    # base type; rows that are not whole 256-weight blocks fall back as llama-quantize's do.
    "llama-Q2_K": f"blk.*.attn_v.weight=Q4_K,blk.*.attn_output.weight=Q3_K,blk.*.ffn_down.weight=Q3_K,"
                  f"blk.*=Q2_K,*={KEEP}",
    "llama-Q3_K_M": f"blk.0.attn_v.weight=Q5_K,blk.1.attn_v.weight=Q5_K,blk.*.attn_v.weight=Q4_K,"
                    f"blk.0.ffn_down.weight=Q5_K,blk.*.ffn_down.weight=Q4_K,blk.*.attn_output.weight=Q4_K,"
                    f"blk.*=Q3_K,*={KEEP}",
}


class PolicyError(ValueError):
    """A policy that cannot be parsed or applied: names the rule, the tensor and the type."""


@dataclass(frozen=True)
class Rule:
    glob: str
    type: str  # a format name, or KEEP


@dataclass(frozen=True)
class Policy:
    """Rules matched in order against tensor names (first match wins); ``text`` is how it was
    written (a preset's name resolves to its rules)."""

    text: str
    rules: tuple[Rule, ...]

    def choose(self, name: str) -> str:
        """The type the first matching rule names for tensor ``name`` (KEEP when none matches)."""
        for rule in self.rules:
            if fnmatch.fnmatchcase(name, rule.glob):
                return rule.type
        return KEEP


def quantizable() -> list[str]:
    """The formats a policy may name: weight formats (those with a gemv) that this package quantizes to."""
    import quantbench_kernels as qk  # noqa: PLC0415 (Numba: not for `quantbench inspect`'s import)

    return sorted(f.name for f in qk.formats("quantize", "gemv"))


def parse(text: str) -> Policy:
    """A policy from its text (``GLOB=TYPE,...``) or a preset's name. Raises PolicyError naming
    the rule that is empty, lacks ``=``, or names a type that cannot be quantized to."""
    if text in PRESETS:
        return Policy(text, parse(PRESETS[text]).rules)
    if not text.strip():
        raise PolicyError(f"empty policy: give GLOB=TYPE rules (e.g. 'blk.*=Q4_K,*=keep') or a preset "
                          f"({', '.join(PRESETS)})")
    types = quantizable()
    rules = []
    for n, part in enumerate(text.split(","), 1):
        glob, eq, qtype = (s.strip() for s in part.partition("="))
        if not eq or not glob or not qtype:
            raise PolicyError(f"policy rule {n} ({part.strip()!r}) is not GLOB=TYPE; presets: {', '.join(PRESETS)}")
        if qtype != KEEP and qtype not in types:
            raise PolicyError(f"policy rule {n} ({part.strip()!r}): {qtype!r} is not a type this package "
                              f"quantizes to; use one of {', '.join(types)} or {KEEP!r}")
        rules.append(Rule(glob, qtype))
    return Policy(text, tuple(rules))


@dataclass(frozen=True)
class Choice:
    """What the policy does to one tensor: ``source`` is the type the file holds, ``target`` the
    type written; ``requested`` is what the rule asked for when the rows made it fall back."""

    tensor: Tensor
    source: str
    target: str
    requested: str | None = None

    @property
    def changed(self) -> bool:
        return self.target != self.source

    @property
    def nbytes(self) -> int:
        """Bytes of the tensor as written."""
        block_weights, block_bytes = GGML_QUANT_SIZES[GGMLQuantizationType[self.target]]
        rows, row_weights = self.tensor.shape
        return rows * row_weights // block_weights * block_bytes


def is_matrix(t: Tensor) -> bool:
    """Whether a policy applies to ``t``: a 2-D tensor of more than one row (not a norm)."""
    return t.raw.ndim == 2 and t.shape[0] > 1


def _fits(row_weights: int, qtype: str) -> bool:
    return row_weights % GGML_QUANT_SIZES[GGMLQuantizationType[qtype]][0] == 0


def plan(tensors: list[Tensor], policy: Policy) -> list[Choice]:
    """The type of every tensor of a file under ``policy``, in file order. Raises PolicyError for
    a rule of a written policy that matches no tensor (a typo would copy the file unchanged), a
    matrix whose rows fit neither the chosen type nor its fallback, or whose type cannot be
    decoded here for requantizing (naming the rule or the tensor, its rows and the types)."""
    import quantbench_kernels as qk  # noqa: PLC0415

    if policy.text not in PRESETS and policy.text not in PRESETS.values():
        for n, rule in enumerate(policy.rules, 1):  # a preset's rules cover several families of models
            if not any(fnmatch.fnmatchcase(t.name, rule.glob) for t in tensors):
                raise PolicyError(f"policy rule {n} ({rule.glob}={rule.type}) matches no tensor of the file "
                                  f"(its tensors are named like {', '.join(t.name for t in tensors[:3])}, ...)")
    decodable = {f.name for f in qk.formats("dequantize")} | {"F32", "F16", "BF16"}
    out = []
    for t in tensors:
        source = t.qtype.name
        want = policy.choose(t.name) if is_matrix(t) else KEEP
        if want in (KEEP, source):
            out.append(Choice(t, source, source))
            continue
        if source not in decodable:
            raise PolicyError(f"tensor {t.name!r} is {source}, which this package cannot decode to requantize "
                              f"it as {want}")
        target, requested = want, None
        if not _fits(t.shape[1], want):
            target, requested = FALLBACK.get(want, want), want
            if not _fits(t.shape[1], target):
                raise PolicyError(f"tensor {t.name!r} has rows of {t.shape[1]} weights: neither {want} nor its "
                                  f"fallback {target} holds a whole number of blocks in them")
        out.append(Choice(t, source, target, requested))
    return out


def file_type(choices: list[Choice], original: int | None) -> int:
    """``general.file_type`` for the written file: the original's when nothing changed, else the
    ``MOSTLY_*`` type of the format that now holds the most requantized weights (a k-quant as
    its ``_S`` variant: one type throughout, no mix)."""
    weights: dict[str, int] = {}
    for c in choices:
        if c.changed:
            weights[c.target] = weights.get(c.target, 0) + c.tensor.shape[0] * c.tensor.shape[1]
    if not weights:
        return original if original is not None else LlamaFileType.GUESSED
    top = max(weights, key=lambda k: weights[k])
    members = LlamaFileType.__members__
    return int(members.get(f"MOSTLY_{top}") or members.get(f"MOSTLY_{top}_S") or LlamaFileType.GUESSED)
