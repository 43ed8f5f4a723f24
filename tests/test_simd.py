"""The vector-IR dot kernels (kernels/simd.py and the formats' block intrinsics) on inputs the
public API never makes, and on the generic IR path that CPUs without pmaddwd take."""

import os
import subprocess
import sys

import llvmlite.binding as llvm
import numba
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import quantbench_kernels as qk
from pytest_quantbench import strategies as qst
from pytest_quantbench.bitexact import assert_bit_identical
from quantbench_kernels import compilation, refmath, simd

DOT = [f.name for f in qk.formats("gemv")]
@pytest.mark.parametrize("name", DOT)
@given(data=st.data())
def test_gemv_kernel_on_any_activation_blocks(name, data):
    """Activation blocks straight from the activation format's strategy (quants -128..127 and any
    d, edge cases weighted), not only those the activation quantizer makes: the kernel still
    equals the reference."""
    fmt = qk.get_format(name)
    nb = data.draw(st.integers(1, 20), label="blocks per row")
    rows = data.draw(st.integers(1, 3), label="rows")
    w = data.draw(qst.blocks(name, n_blocks=rows * nb)).reshape(rows, nb, fmt.block_bytes)
    act = data.draw(qst.blocks(fmt.activation, n_blocks=nb))
    expected = fmt.reference.gemv(w, act, 1)
    for threads in (1, 2):
        assert_bit_identical(expected, fmt.numba.gemv(w, act, threads), f"{name} gemv, {threads} thread(s)")


@pytest.mark.parametrize("q8", [-128, 127])
@pytest.mark.parametrize("fill", [0x00, 0x80, 0xFF])
@pytest.mark.parametrize("name", DOT)
def test_gemv_kernel_on_extreme_blocks(name, fill, q8):
    """Every byte of the weights at 0x00, 0x80 or 0xFF (quants and scales at their extremes, the
    signed ones included) against q8 = -128 or 127 everywhere: the largest integer sums."""
    fmt = qk.get_format(name)
    w = np.full((2, 13, fmt.block_bytes), fill, dtype=np.uint8)  # 13 blocks: a step of 8, of 4, of 1
    blocks = w.view(fmt.block_dtype)
    # Finite scales of one (MXFP4's exponent 128 is 2**0) and mins of minus one.
    for field, value in {"d": np.float16(1), "e": 128, "dmin": np.float16(-1), "m": np.float16(-1)}.items():
        if field in fmt.block_dtype.names:
            blocks[field] = value
    act = np.zeros(13, dtype=qk.get_format(fmt.activation).block_dtype)
    act["d"], act["qs"] = 1, q8
    for field, value in {"bsums": q8 * 16, "s": q8 * 32}.items():  # Q8_K's sums of 16, Q8_1's d x sum
        if field in act.dtype.names:
            act[field] = value
    act = act.view(np.uint8).reshape(13, -1)
    expected = fmt.reference.gemv(w, act, 1)
    assert np.all(np.isfinite(expected))
    assert_bit_identical(expected, fmt.numba.gemv(w, act, 1), f"{name} gemv")


def _random_blocks(fmt, rng, n):
    """``n`` blocks of random bytes, their f16 fields (scales, mins, sums) finite."""
    blocks = rng.integers(0, 256, (n, fmt.block_bytes), dtype=np.uint8)
    fields = blocks.view(fmt.block_dtype)
    for name in fmt.block_dtype.names:
        if fmt.block_dtype[name] == np.float16:
            fields[name] = rng.standard_normal(fields[name].shape).astype(np.float16)
    return blocks


@pytest.mark.parametrize("name", DOT)
def test_gemv_kernel_on_every_row_length_from_1_to_17_blocks(name):
    """The row dots step through a row 8 blocks at a time, then 4, then one (the 8-lane k-quants 4
    or one): every remainder, on weights and activations with random bytes (finite scales)."""
    fmt = qk.get_format(name)
    rng = np.random.default_rng(17)
    for nb in range(1, 18):
        w = _random_blocks(fmt, rng, 3 * nb).reshape(3, nb, fmt.block_bytes)
        act = _random_blocks(qk.get_format(fmt.activation), rng, nb)
        assert_bit_identical(fmt.reference.gemv(w, act, 1), fmt.numba.gemv(w, act, 1), f"{name} gemv, {nb} blocks")


@pytest.mark.parametrize("name", DOT)
def test_a_gemv_kernel_given_float_values_quantizes_them_as_the_api_does(name):
    """The kernels also take x itself (1-D, or in activation blocks) and quantize it in the same
    call (what qk.Matrix does): the result is the gemv of qk.quantize_activation(x), bit for bit;
    a value that is not finite is a ValueError, never a dot of garbage."""
    fmt = qk.get_format(name)
    rng = np.random.default_rng(3)
    nb = 2 if fmt.block_weights == 256 else 13
    w = _random_blocks(fmt, rng, 5 * nb).reshape(5, nb, fmt.block_bytes)
    x = (rng.standard_normal(nb * fmt.block_weights) * 3).astype(np.float32)
    expected = fmt.numba.gemv(w, qk.quantize_activation(x, name), 1)
    for threads in (1, 2):
        for values in (x, x.reshape(-1, qk.get_format(fmt.activation).block_weights)):
            assert_bit_identical(expected, fmt.numba.gemv(w, values, threads), f"{name} gemv of float x")
    x[nb * fmt.block_weights // 2] = np.nan
    with pytest.raises(ValueError, match="not finite"):
        fmt.numba.gemv(w, x, 1)


def test_a_row_dot_of_an_unknown_kind_of_values_or_sub_block_count_is_refused_naming_it():
    with pytest.raises(ValueError, match="kind must be one of .*'int8'.*got 'float'"):
        simd.row_dot_intrinsic(lambda *args: None, 18, "float", lambda *args: None)
    with pytest.raises(ValueError, match="sub_blocks must be 1, 4 or 8, got 3"):
        simd.row_dot_intrinsic(lambda *args: None, 18, "signed", lambda *args: None, sub_blocks=3)
    with pytest.raises(ValueError, match="pairs of blocks need whole blocks .* got 1 sub-blocks of 'int8'"):
        simd.row_dot_intrinsic(lambda *args: None, 34, "int8", lambda *args: None, decode_pair=lambda *args: None)


def test_a_row_sums_spec_takes_only_the_options_that_go_together():
    """Whole steps' sums leave no lane to scale: no spec type holds both; each holds what it needs."""
    with pytest.raises(TypeError, match="lane_scales"):
        simd.WholeSteps(None, 136, None, step_sums=lambda *args: None, lane_scales=lambda *args: None)
    with pytest.raises(TypeError, match="step_sums"):
        simd.ScaledLanes(None, 144, None, lane_scales=lambda *args: None, step_sums=lambda *args: None)
    with pytest.raises(TypeError, match="lane_scales"):
        simd.ScaledLanes(None, 144, None)
    with pytest.raises(ValueError, match=r"sub_blocks must be 1, 4 or 8 .* got 3"):
        simd.RowSums(None, 136, None, sub_blocks=3)
    assert simd.WholeSteps(None, 136, None, sub_blocks=8, step_sums=print).steps() == [1]
    assert simd.RowSums(None, 84, None, lane_counts=(4, 1)).steps() == [4, 1]


GENERIC = "pmaddwd=generic,pmaddubsw=generic,psignb=generic,vpdpbusd=none,f16c=False,masks=False,lookup_dot=none"


def _codegen_under(env: dict) -> str:
    probe = subprocess.run([sys.executable, "-c", "from quantbench_kernels import simd; print(simd.CODEGEN)"],
                           env=env, capture_output=True, text=True, timeout=120)
    return probe.stdout.strip()


def _without_ci(**extra: str) -> dict:
    """This environment without CI (the dev Hypothesis profile: the IR is the same for every input,
    it is the code path that is tested), with ``extra`` set."""
    return {**{k: v for k, v in os.environ.items() if k != "CI"}, **extra}


@pytest.mark.parametrize("name", DOT)
def test_a_large_dequantize_streams_its_output_with_the_same_bits(name, monkeypatch):
    """From compilation.STREAM_FROM_BYTES up (here: any size), dequantize writes with non-temporal
    stores, which need a 16-byte aligned output: the same bits as the reference on one and two
    threads (an odd block count splits into uneven chunks); an output 4 bytes off that grid gets
    plain stores instead of a fault."""
    fmt = qk.get_format(name)
    raw = _random_blocks(fmt, np.random.default_rng(5), 67)
    expected = qk.dequantize(raw, name, backend="reference")
    streamed = []

    def spy(serial, parallel, threads, work, blocks, out, stream):
        streamed.append(stream)
        return dispatch(serial, parallel, threads, work, blocks, out, stream)

    dispatch = compilation.dispatch
    monkeypatch.setattr(compilation, "STREAM_FROM_BYTES", 0)
    monkeypatch.setattr(compilation, "dispatch", spy)
    buf = np.empty(expected.nbytes + 32, np.uint8)
    for skew in (0, 4):  # bytes past a 16-byte boundary
        start = -buf.ctypes.data % 16 + skew
        out = buf[start:start + expected.nbytes].view(np.float32).reshape(expected.shape)
        for threads in (1, 2):
            out.fill(np.nan)
            qk.dequantize(raw, name, threads=threads, out=out)
            assert_bit_identical(expected, out, f"{name} dequantize, output {skew} bytes off, {threads} threads")
    assert streamed == [True, True, False, False]


def test_quantbench_generic_ir_forces_the_generic_spelling():
    assert _codegen_under(dict(os.environ, QUANTBENCH_GENERIC_IR="1")) == GENERIC


HOST = dict(llvm.get_host_cpu_features())
HOST_VNNI = bool(HOST.get("avxvnni") or (HOST.get("avx512vnni") and HOST.get("avx512vl")))


@pytest.mark.skipif(not HOST_VNNI, reason="this CPU has no VNNI: its dots already take pmaddubsw and pmaddwd")
def test_quantbench_no_vnni_takes_the_avx2_spelling_on_a_vnni_cpu():
    """Where the CPU has VNNI the dots of 32-weight blocks take vpdpbusd (and Q2_K's, with AVX-512
    VBMI, a 512-bit lookup and vpdpbusd); QUANTBENCH_NO_VNNI=1 takes the AVX2 spelling (pmaddubsw,
    then pmaddwd) that CPUs without VNNI run, and "0" leaves the CPU's."""
    vnni = _codegen_under(_without_ci(QUANTBENCH_NO_VNNI="0"))
    assert "vpdpbusd=none" not in vnni
    codegen = _codegen_under(_without_ci(QUANTBENCH_NO_VNNI="1"))
    assert "vpdpbusd=none" in codegen and "lookup_dot=none" in codegen


def test_the_spelling_compiled_is_the_one_the_environment_asks_for():
    """.ci/run reruns the dot and dequantize tests, this one among them, under QUANTBENCH_GENERIC_IR=1
    with NUMBA_CPU_NAME=generic (the generic IR compiled for a CPU without AVX: what ARM and CPUs
    without AVX2 get) and, on a VNNI CPU, under QUANTBENCH_NO_VNNI=1: each step compiles the
    spelling it names (here the variant is not tested, only named), and a plain run the host's."""
    if os.environ.get("NUMBA_CPU_NAME") == "generic" or os.environ.get("QUANTBENCH_GENERIC_IR", "0") != "0":
        assert simd.CODEGEN == GENERIC
        return
    assert ("pmaddubsw=generic" in simd.CODEGEN) == (not HOST.get("avx2"))
    if os.environ.get("QUANTBENCH_NO_VNNI", "0") != "0":
        assert "vpdpbusd=none" in simd.CODEGEN and "lookup_dot=none" in simd.CODEGEN
    else:
        assert ("vpdpbusd=none" in simd.CODEGEN) == (not HOST_VNNI)


# Values that make C's sequential loops and a vector tree disagree if the tree is careless:
# signed zeros, a and -a ties, NaN, infinities, subnormals.
SPECIAL = np.array([0.0, -0.0, np.nan, np.inf, -np.inf, 1.0, -1.0, 2.0, -2.0, 1e-45, -1e-45], dtype=np.float32)


@numba.njit
def _extremes(x):
    out = np.empty((x.shape[0], 4), dtype=np.float32)
    for i in range(x.shape[0]):
        out[i, 0] = simd.first_largest32(x[i], 0)
        out[i, 1] = simd.min32(x[i], 0)
        out[i, 2] = simd.max32(x[i], 0)
        out[i, 3] = simd.amax32(x[i], 0)
    return out


@pytest.mark.parametrize("draw", ["special", "normal"])
def test_a_blocks_extremes_are_the_elements_cs_loops_pick(draw):
    rng = np.random.default_rng(7)
    x = (rng.choice(SPECIAL, (20000, 32)) if draw == "special" else rng.standard_normal((20000, 32))).astype(np.float32)
    if draw == "special":
        x[:64] = rng.choice(SPECIAL[[0, 1, 2]], (64, 32))  # zeros and NaN only: the fallbacks
    got = _extremes(x)
    expected = np.stack([refmath.first_largest(x), refmath.running_min(x), refmath.running_max(x, -np.inf),
                         refmath.running_max(np.abs(x))], axis=1)
    assert_bit_identical(expected, got, "first_largest32 / min32 / max32 / amax32")
    assert np.array_equal(np.signbit(expected), np.signbit(got))  # NaN-free columns: the zeros' signs too


@numba.njit
def _first_largest256(x):
    out = np.empty(x.shape[0], dtype=np.float32)
    for i in range(x.shape[0]):
        out[i] = simd.first_largest256(x[i], 0)
    return out


@pytest.mark.parametrize("draw", ["special", "normal"])
def test_a_q8_k_blocks_first_largest_element_is_cs_over_all_256(draw):
    rng = np.random.default_rng(11)
    x = (rng.choice(SPECIAL, (3000, 256)) if draw == "special" else rng.standard_normal((3000, 256))).astype(np.float32)
    if draw == "special":
        x[:64] = rng.choice(SPECIAL[[0, 1, 2]], (64, 256))  # zeros and NaN only: no element beats 0
        x[64:128] = rng.choice(SPECIAL[[0, 1, 2, 5, 6]], (64, 256))  # ties of 1 and -1: the first wins
    else:
        x[:, 255] = np.abs(x).max(axis=1) * 2  # the largest as the last element
    got = _first_largest256(x)
    expected = refmath.first_largest(x)
    assert_bit_identical(expected, got, "first_largest256")
    assert np.array_equal(np.signbit(expected), np.signbit(got))


@numba.njit
def _levels(x, sub, inv, add, nmax):
    out = np.empty((x.shape[0], 16), dtype=np.uint8)
    high = np.empty(x.shape[0], dtype=np.uint32)
    for i in range(x.shape[0]):
        high[i] = simd.levels32(x[i], 0, out[i], 0, sub, inv, add, nmax)
    return out, high


@pytest.mark.parametrize("nmax", [15, 31, 255])
def test_levels32_are_cs_int8_casts_capped_and_packed(nmax):
    rng = np.random.default_rng(nmax)
    x = np.concatenate([rng.standard_normal((500, 32)) * 40, rng.choice(SPECIAL, (100, 32)),
                        rng.choice([3e9, -3e9, 2.0**31, 127.9, -128.9, -129.0], (50, 32))]).astype(np.float32)
    sub, inv, add = np.float32(-0.5), np.float32(0.75), np.float32(8.5)
    out, high = _levels(x, sub, inv, add, nmax)
    with np.errstate(invalid="ignore", over="ignore"):
        levels = np.minimum(nmax, refmath.c_int8((x - sub) * inv + add))
    np.testing.assert_array_equal(out, ((levels[:, :16] & 0xF) | ((levels[:, 16:] & 0xF) << 4)).astype(np.uint8))
    bits = ((levels >> 4) & 1).astype(np.uint64) << np.arange(32, dtype=np.uint64)
    np.testing.assert_array_equal(high, bits.sum(axis=1).astype(np.uint32))


@pytest.mark.skipif(not simd.F16C, reason="the CPU has no F16C: the integer encoder is used")
def test_f16c_encoding_equals_numpys_rounding_and_the_nan_rule():
    rng = np.random.default_rng(3)
    bits = np.concatenate([rng.integers(0, 2**32, 200_000, dtype=np.uint64).astype(np.uint32),
                           np.arange(0x33000000, 0x33800000, 97, dtype=np.uint32),  # f16 subnormals, ties
                           np.arange(0x477FE000, 0x47800100, dtype=np.uint32),  # 65504 .. overflow
                           np.array([0, 0x80000000, 0x7F800000, 0xFF800000, 0x7FC00000, 0xFFC00001], np.uint32)])
    x = bits.view(np.float32)
    got = _f16c(x)
    with np.errstate(over="ignore"):
        expected = x.astype(np.float16).view(np.uint16).astype(np.int64)
    nan = np.isnan(x)
    expected[nan] = ((bits[nan] >> 16) & 0x8000) | 0x7E00
    np.testing.assert_array_equal(got, expected)


@numba.njit
def _f16c(x):
    out = np.empty(x.size, dtype=np.int64)
    for i in range(x.size):
        out[i] = simd.f16c_bits(x[i])
    return out


_REVERSED_64 = simd.byte_shuffle(range(63, -1, -1))


@numba.njit
def _unpacking(q, times):
    moved = np.empty_like(q)
    sums = np.empty(q.size // 32, dtype=np.int32)
    pairs = np.empty(q.size // 2, dtype=np.int16)
    for c in range(q.size // 64):
        _REVERSED_64(q, 64 * c, moved, 64 * c)
    for c in range(q.size // 32):
        sums[c] = simd.sum32_int8(q, 32 * c)
        simd.pair_sums32(q, 32 * c, pairs, 16 * c, times)
    return moved, sums, pairs


@pytest.mark.parametrize("times", [0, 1, 4, 32])
def test_the_activation_unpacking_intrinsics_move_sum_and_pair_as_numpy_does(times):
    q = np.concatenate([np.random.default_rng(times).integers(-128, 128, 64 * 40, dtype=np.int8),
                        np.full(64, -128, np.int8), np.full(64, 127, np.int8)])  # the extremes: no overflow
    moved, sums, pairs = _unpacking(q, times)
    np.testing.assert_array_equal(moved, q.reshape(-1, 64)[:, ::-1].reshape(-1))
    np.testing.assert_array_equal(sums, q.reshape(-1, 32).astype(np.int32).sum(axis=1))
    np.testing.assert_array_equal(pairs, (times * q.reshape(-1, 2).astype(np.int32).sum(axis=1)).astype(np.int16))


@pytest.mark.parametrize("order", [[], [0, 2], [0, -1]])
def test_a_byte_shuffle_with_an_index_outside_its_bytes_is_refused(order):
    with pytest.raises(ValueError, match="indices below its length"):
        simd.byte_shuffle(order)
