"""What this CPU offers the kernels, read once at import: x86 features by name (pmaddwd,
pmaddubsw, pshufb, psignb, VNNI's vpdpbusd, AVX-512 VBMI's vpermb, F16C, mask registers), each
``None``/False where the host lacks it or ``QUANTBENCH_GENERIC_IR`` / ``QUANTBENCH_NO_VNNI`` asks
for the portable spelling, and :data:`CODEGEN`, the spelling's name in the kernels' cache stamp."""

from __future__ import annotations

import os

import llvmlite.binding as llvm
from numba.core import config as numba_config


def _flag(name: str) -> bool:
    """Whether environment variable ``name`` is set to anything but empty or "0"."""
    return os.environ.get(name, "") not in ("", "0")


def _host_features() -> dict | None:
    """The host CPU's features, or None where the generic IR must be used: QUANTBENCH_GENERIC_IR
    set, or Numba compiling for another target (NUMBA_CPU_NAME / NUMBA_CPU_FEATURES, as portable
    caches do: then the host's features say nothing about the target)."""
    if _flag("QUANTBENCH_GENERIC_IR"):
        return None
    if numba_config.CPU_NAME or numba_config.CPU_FEATURES:
        return None
    return dict(llvm.get_host_cpu_features())


def _pmaddwd_intrinsics(features: dict | None) -> list[tuple[str, int]]:
    """(LLVM intrinsic, i16 lanes) of the host's pmaddwd, widest first; empty for the generic IR."""
    out = []
    if features and features.get("avx512bw"):
        out.append(("llvm.x86.avx512.pmaddw.d.512", 32))
    if features and features.get("avx2"):
        out.append(("llvm.x86.avx2.pmadd.wd", 16))
    return out


def _pshufb_intrinsic(features: dict | None) -> str | None:
    """x86's byte shuffle on 256-bit vectors (a 16-entry table lookup per 128-bit half), or None."""
    return "llvm.x86.avx2.pshuf.b" if features and features.get("avx2") else None


def _pmaddubsw_intrinsic(features: dict | None) -> tuple[str, int] | None:
    """(LLVM intrinsic, i8 lanes) of x86's pmaddubsw on 256-bit vectors, or None for the generic IR."""
    if features and features.get("avx2"):
        return "llvm.x86.avx2.pmadd.ub.sw", 32
    return None


def _vpdpbusd_intrinsic(features: dict | None) -> str | None:
    """x86's VNNI dot of unsigned by signed bytes on 256-bit vectors (AVX-VNNI, or AVX-512 VNNI
    with VL), or None."""
    if features and (features.get("avxvnni") or (features.get("avx512vnni") and features.get("avx512vl"))):
        return "llvm.x86.avx512.vpdpbusd.256"
    return None


def _wide_lookup_dot_intrinsics(features: dict | None) -> tuple[str, str] | None:
    """(vpermb, vpdpbusd) on 512-bit vectors: AVX-512 VBMI's 64-entry byte lookup and AVX-512
    VNNI's dot of unsigned by signed bytes, or None where the CPU lacks either."""
    if features and all(features.get(f) for f in ("avx512bw", "avx512vbmi", "avx512vnni")):
        return "llvm.x86.avx512.permvar.qi.512", "llvm.x86.avx512.vpdpbusd.512"
    return None


def _psignb_intrinsic(features: dict | None) -> str | None:
    """x86's psignb on 256-bit vectors (``a`` negated, kept or zeroed by the sign of ``b``), or None."""
    return "llvm.x86.avx2.psign.b" if features and features.get("avx2") else None


_FEATURES = _host_features()
PMADDWDS = _pmaddwd_intrinsics(_FEATURES)
PMADDWD = PMADDWDS[0] if PMADDWDS else None
PMADDUBSW = _pmaddubsw_intrinsic(_FEATURES)
PSHUFB = _pshufb_intrinsic(_FEATURES)
PSIGNB = _psignb_intrinsic(_FEATURES)
VPDPBUSD = None if _flag("QUANTBENCH_NO_VNNI") else _vpdpbusd_intrinsic(_FEATURES)
# QUANTBENCH_NO_VNNI turns this off too: the AVX2 spelling is then what every format runs.
WIDE_LOOKUP_DOT = None if _flag("QUANTBENCH_NO_VNNI") else _wide_lookup_dot_intrinsics(_FEATURES)
# f16 -> f32 in one instruction (vcvtph2ps) where the CPU has F16C; it quiets a signalling NaN
# (sets the top mantissa bit), which the bit-exact checks allow: NaNs compare equal in any payload.
F16C = bool(_FEATURES and _FEATURES.get("f16c"))
# AVX-512's mask registers on 256-bit vectors: a 32-bit word is a <32 x i1> lane mask as it is.
MASK_REGISTERS = bool(_FEATURES and _FEATURES.get("avx512bw") and _FEATURES.get("avx512vl"))
# Part of the kernels' cache stamp: code compiled for one spelling must not be reused for another.
CODEGEN = (f"pmaddwd={PMADDWD[0] if PMADDWD else 'generic'},"
           f"pmaddubsw={PMADDUBSW[0] if PMADDUBSW else 'generic'},"
           f"psignb={PSIGNB or 'generic'},vpdpbusd={VPDPBUSD or 'none'},f16c={F16C},masks={MASK_REGISTERS},"
           f"lookup_dot={'vpermb+vpdpbusd.512' if WIDE_LOOKUP_DOT else 'none'}")
