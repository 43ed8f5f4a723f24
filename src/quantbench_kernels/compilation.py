"""How the kernels are compiled and run: Numba's settings, its on-disk cache, and the thread policy.

Every kernel is compiled in nopython mode with ``fastmath=False`` (no FMA contraction, no
reassociation) and ``error_model="numpy"`` (x / 0 gives inf or NaN as in C, instead of raising
ZeroDivisionError), so that it rounds exactly as the NumPy reference does. The shared math the
kernels inline lives in :mod:`quantbench_kernels.jitmath`.
"""

from __future__ import annotations

import glob
import hashlib
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numba
import numba.extending
import numpy as np

from . import autothreads, simd

PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__))


def source_stamp(package_dir: str, codegen: str) -> str:
    """A sha256 over every ``.py`` file under ``package_dir`` (its path and bytes) and ``codegen``
    (the vector-IR spelling that :mod:`simd` chose): editing any source changes it."""
    digest = hashlib.sha256(codegen.encode())
    for path in sorted(glob.glob(os.path.join(package_dir, "**", "*.py"), recursive=True)):
        with open(path, "rb") as f:
            digest.update(path[len(package_dir):].encode() + b"\0" + f.read())
    return digest.hexdigest()


def _install_cache_locator() -> bool:
    """Make Numba's on-disk cache of this package's kernels safe to use.

    Numba keys a cached kernel on its own source file only, but the kernels inline helpers from
    other modules: editing a helper would leave stale machine code in the cache. This locator
    stamps every kernel of the package with :func:`source_stamp` instead, so any edit recompiles.
    It relies on Numba's cache-locator classes; if they are not where this expects, caching is
    simply turned off.
    """
    from numba.core import caching

    in_tree = getattr(caching, "InTreeCacheLocator", None) or getattr(caching, "_InTreeCacheLocator", None)
    impl = getattr(caching, "CacheImpl", None) or getattr(caching, "_CacheImpl", None)
    if in_tree is None or impl is None or not isinstance(getattr(impl, "_locator_classes", None), list):
        return False
    stamp = source_stamp(PACKAGE_DIR, simd.CODEGEN)

    class PackageSourcesLocator(in_tree):  # type: ignore[misc, valid-type]
        def get_source_stamp(self) -> str:
            return stamp

        @classmethod
        def from_function(cls, py_func, py_file):  # type: ignore[no-untyped-def]
            if not os.path.abspath(py_file).startswith(PACKAGE_DIR + os.sep):
                return None
            return super().from_function(py_func, py_file)

    if not any(c.__name__ == "PackageSourcesLocator" for c in impl._locator_classes):
        impl._locator_classes.insert(0, PackageSourcesLocator)
    return True


def _cache_writable() -> bool:
    """Whether one of Numba's cache locators can write this package's compiled kernels somewhere:
    beside the sources (a checkout, a writable site-packages), NUMBA_CACHE_DIR, or the user's cache
    folder. With none of them (a read-only site-packages and no writable home) Numba would refuse
    to compile a cached kernel at all, so the cache is turned off instead."""
    from numba.core import caching

    impl = getattr(caching, "CacheImpl", None) or getattr(caching, "_CacheImpl", None)
    classes = getattr(impl, "_locator_classes", [])
    for cls in classes:
        try:
            if cls.from_function(_cache_writable, __file__) is not None:
                return True
        except Exception:  # noqa: BLE001 - a locator that cannot even look is not one that can write
            continue
    return False


# QUANTBENCH_NUMBA_CACHE=0 turns the on-disk cache of compiled kernels off.
CACHE = (os.environ.get("QUANTBENCH_NUMBA_CACHE", "1") != "0" and _install_cache_locator()
         and _cache_writable())

# The settings of every kernel; see the module docstring.
SETTINGS = dict(cache=CACHE, fastmath=False, error_model="numpy")


def jit(fn: Callable[..., Any]) -> Callable[..., Any]:
    """A kernel: ``numba.njit`` with :data:`SETTINGS`, releasing the GIL."""
    return numba.njit(nogil=True, **SETTINGS)(fn)


def pjit(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Like :func:`jit`, with ``parallel=True`` for ``prange`` loops."""
    return numba.njit(nogil=True, parallel=True, **SETTINGS)(fn)


def inline(fn: Callable[..., Any]) -> Callable[..., Any]:
    """A helper that Numba inlines into its callers (no call overhead in inner loops)."""
    return numba.njit(inline="always", **SETTINGS)(fn)


def helper(fn: Callable[..., Any]) -> Callable[..., Any]:
    """A large helper that several kernels call (a quantizer's search over scales, run once per
    sub-block): compiled once per signature and linked into its callers, where LLVM inlines it or
    not. :func:`inline` re-types and re-optimises the whole body at every call site of every kernel:
    for these searches that was a third of a cold start's compile time (docs/results). The price is
    a call per sub-block, up to about a tenth of a quantizer's time where groups are 16 weights, so
    code with one call site, or called per weight, stays :func:`inline`."""
    return numba.njit(**SETTINGS)(fn)


def activation_blocks(quantize_block: Callable[..., Any], block_weights: int, block_bytes: int) -> Callable[..., Any]:
    """A function for the dot kernels, ``blocks(x)``: an activation format's blocks (uint8, 2-D) as
    they are, or float32 values (1-D, or (n_blocks, ``block_weights``)) quantized to new blocks, one
    ``quantize_block(values, blk)`` (an inlined kernel writing one uint8 block of ``block_bytes``)
    each, so that a gemv quantizes its activation in the same call. Values that are not all finite
    raise ValueError (the API checks them before, naming the value; this guards direct callers)."""

    def blocks(x: Any) -> Any:
        raise TypeError("activation blocks are for Numba kernels")

    @numba.extending.overload(blocks, jit_options=dict(SETTINGS, cache=False), inline="always")
    def _blocks(x):  # type: ignore[no-untyped-def]
        if isinstance(x, numba.types.Array) and x.dtype == numba.types.uint8 and x.ndim == 2:
            return lambda x: x
        if isinstance(x, numba.types.Array) and x.dtype == numba.types.float32 and x.ndim in (1, 2):
            def quantized(x):  # type: ignore[no-untyped-def]
                values = x.reshape((x.size // block_weights, block_weights))
                # A value is inf or NaN when its exponent bits are all set: the largest exponent
                # field, an integer max that LLVM vectorises (a test per value does not).
                bits = x.reshape(x.size).view(np.uint32)
                top = np.uint32(0)
                for i in range(bits.size):
                    top = max(top, bits[i] & np.uint32(0x7F800000))
                if top == np.uint32(0x7F800000):
                    raise ValueError("the activation holds a value that is not finite")
                out = np.empty((values.shape[0], block_bytes), dtype=np.uint8)
                for i in range(values.shape[0]):
                    quantize_block(values[i], out[i])
                return out
            return quantized
        return None

    return blocks


@dataclass(frozen=True)
class Loops:
    """What a format module declares (``BlockFormat.loops``, beside its block kernels) for the loops
    around them: ``tools/generate_loops.py`` writes each format's loops, serial and parallel, from this
    spec into :mod:`quantbench_kernels.loops`, and registers them as the format's Numba ops. The
    block's size and the activation format come from the ``BlockFormat``.

    The loops call the format module's block kernels by fixed names:

    - ``_dequantize_one(blocks, out, i, stream)``: block ``i`` into ``out[i]`` (an intrinsic,
      ``simd.indexed_dequantize_intrinsic``, or an inlined function; ``stream``: with non-temporal
      stores, see :data:`STREAM_FROM_BYTES`);
    - ``_quantize_block(x, blk, *scratch)``: one block of values ``x`` into uint8 ``blk``, given
      the :attr:`scratch` arrays, allocated once per range of blocks;
    - with :attr:`row_inputs`, ``_row_dot``: a ``simd.row_sums_intrinsic`` or
      ``simd.row_dot_intrinsic``;
    - with :attr:`quantize_activation`, ``_quantize_activation_block(x, blk)``.

    Generated rather than written once: Numba caches only top-level functions of a module whose
    callees are fixed at compile time, so each format needs loops of its own (a loop taking the
    block kernel as an argument is never cached).
    """

    # The quantizer's cost per value, in weights of work (dispatch's measure for one thread or all).
    quantize_work: int = 8
    # (name, NumPy dtype name, shape) of each scratch array ``_quantize_block`` takes.
    scratch: tuple[tuple[str, str, int | tuple[int, ...]], ...] = ()
    # The dotted name (in the module of the loops) of a jitted function ``act -> (acts, q8)``: what
    # the row dots read from the activation (blocks or float32 values); None: no gemv. Jitted, not
    # inlined: Numba's array analysis of the parallel gemv fails on some inlined ones.
    row_inputs: str | None = None
    # Take rows two at a time (``gemv_rows``' ``two_rows``).
    two_rows: bool = False
    # (``when``, ``row_dot``): a faster row dot (a name in the format module) that is exact when
    # ``when(q8)`` (another) holds for the activation's quants, checked once per call.
    faster_row_dot: tuple[str, str] | None = None
    # The format is also an activation format with its own quantizer (llama.cpp's ``from_float``).
    quantize_activation: bool = False
    # Quantizing given an importance matrix: "rows" (a loop over the rows calling
    # ``_quantize_imatrix_block(x, qw, blk, sigma2, *imatrix_scratch)``, ``sigma2`` the row's mean
    # square), "ignored" (llama.cpp ignores the importance: the plain quantizer), or None (no Numba
    # kernel yet: the reference backend's).
    quantize_imatrix: str | None = None
    imatrix_scratch: tuple[tuple[str, str, int | tuple[int, ...]], ...] = ()


@inline
def gemv_rows(row_dot: Any, block_bytes: int, w: np.ndarray, acts: tuple, q8: np.ndarray, out: np.ndarray,
              start: int, stop: int, two_rows: bool) -> None:
    """Rows ``start:stop`` of ``w`` (uint8 (rows, nb, ``block_bytes``), C-contiguous) times an
    unpacked activation (``q8``, ``acts``), into ``out``, by ``row_dot`` (a format's
    ``simd.row_sums_intrinsic``): a row per call, or with ``two_rows`` two, one from each half of
    the range, so that a core streams two distant parts of the weights at once. Each row's sum is
    the one-row call's, bit for bit. A format takes two rows where that measured faster
    (docs/results); two neighbouring rows would prefetch overlapping lines."""
    nb = w.shape[1]
    row_bytes = nb * block_bytes
    if two_rows:
        half = (stop - start) // 2
        for k in range(half):
            a = start + k
            b = a + half
            out[a], out[b] = row_dot(w, (a * row_bytes, b * row_bytes), nb, q8, acts)
        if (stop - start) % 2:
            out[stop - 1] = row_dot(w, (stop - 1) * row_bytes, nb, q8, acts)
    else:
        for r in range(start, stop):
            out[r] = row_dot(w, r * row_bytes, nb, q8, acts)


# Work (in weights) below which the serial kernel is used when the caller leaves ``threads`` unset.
PARALLEL_MIN_WEIGHTS = 1 << 20

# Parallel kernels split rows (or blocks) into this many contiguous chunks, each with its own
# scratch buffers; a constant (not the thread count) so that the kernels stay cacheable.
PARALLEL_CHUNKS = 64

# Where a serial kernel's range starts when it calls the range kernel that the parallel kernel's
# chunks call too: an int64 like the chunks' starts, so that both calls share one compiled
# signature (a literal 0 is typed Literal[int](0) and compiled the range kernel a second time).
START = np.int64(0)


def read_only(a: np.ndarray) -> np.ndarray:
    """``a`` as a read-only view (``a`` itself when it is one already): how the loops hand the
    dequantize and quantize kernels their inputs, so that each has one compiled signature whatever
    the caller's array is. Numba types a read-only array apart from a writable one, so a
    memory-mapped model file's blocks (read-only) beside a NumPy array (writable) compiled each
    kernel twice. gemv takes its inputs as they come: a new view costs about half a microsecond,
    a seventh of a one-row gemv call."""
    if not a.flags.writeable:
        return a
    view = a.view()
    view.flags.writeable = False
    return view


def resolve_threads(threads: int | None, work_weights: int) -> int:
    """How many threads a kernel call uses: ``threads`` if given (capped at Numba's pool),
    else all of them when the work is at least :data:`PARALLEL_MIN_WEIGHTS` weights, else 1."""
    pool = numba.config.NUMBA_NUM_THREADS
    if threads is None:
        return pool if work_weights >= PARALLEL_MIN_WEIGHTS else 1
    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
        raise ValueError(f"threads must be a positive int or None, got {threads!r}")
    return min(threads, pool)


def dispatch(
    serial: Callable[..., Any], parallel: Callable[..., Any], threads: int | None, work_weights: int,
    *args: Any,
) -> Any:
    """Run ``serial(*args)`` or, on more than one thread, ``parallel(*args)`` with that many; the
    automatic choice (``threads=None``) as :mod:`quantbench_kernels.autothreads` measures it pays."""
    # The serial cases first, in as few steps as possible: a small gemv's whole call takes a few
    # microseconds, and resolve_threads' checks cost half of one.
    if (work_weights < PARALLEL_MIN_WEIGHTS if threads is None else type(threads) is int and threads == 1):
        return serial(*args)
    n = resolve_threads(threads, work_weights)
    if n == 1:
        return serial(*args)
    if threads is None:
        return autothreads.run(serial, lambda: _on_threads(n, parallel, args), work_weights, *args)
    return _on_threads(n, parallel, args)


def _on_threads(n: int, parallel: Callable[..., Any], args: tuple[Any, ...]) -> Any:
    previous = _swap_threads(n)
    try:
        return parallel(*args)
    finally:
        _swap_threads(previous)


# Outputs from this size up are written with non-temporal stores (simd.store_weights), which
# leave them out of the caches: past the caches' share of one core they would not stay there anyway.
STREAM_FROM_BYTES = 16 << 20


def dispatch_dequantize(serial: Callable[..., Any], parallel: Callable[..., Any], threads: int | None,
                        blocks: np.ndarray, out: np.ndarray) -> None:
    """:func:`dispatch` for a dequantize kernel ``(blocks, out, stream)``: ``stream`` (non-temporal
    stores) where ``out`` (float32) holds at least :data:`STREAM_FROM_BYTES` and starts on a
    16-byte boundary (NumPy aligns large arrays so; a view that does not gets plain stores)."""
    stream = out.nbytes >= STREAM_FROM_BYTES and out.ctypes.data % simd.STREAM_BYTES == 0
    dispatch(serial, parallel, threads, out.size, read_only(blocks), out, stream)


@numba.njit(cache=False)  # Numba cannot cache it: the thread count functions are ctypes pointers
def _swap_threads(n: int) -> int:
    """Set this thread's Numba thread count to ``n``, returning the previous one. Compiled: from
    Python, ``numba.get_num_threads`` and two ``set_num_threads`` cost a tenth of a small gemv."""
    previous = numba.get_num_threads()
    numba.set_num_threads(n)
    return previous
