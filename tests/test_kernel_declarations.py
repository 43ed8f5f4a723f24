"""What a kernel may declare and what every kernel is held to: float-activation dots, inputs left
untouched, the same bits twice, quiet NumPy, distances in the declared precision, float16 overflow
named, and the quantizer a kernel follows."""

from __future__ import annotations

import dataclasses
import warnings

import gguf
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from mutants import float_gemv, half_q6_k, halves_x, huge_scale_q6_k_block, noisy, zeroes_blocks

import quantbench_kernels as qk
from pytest_quantbench import Kernel
from pytest_quantbench import strategies as qst
from pytest_quantbench.conformance import (
    ConformanceError,
    check_dequantize,
    check_gemv,
    check_quantize,
    check_vec_dot,
    float_dot_bound,
    ulps,
)
from quantbench_kernels.qtypes import iq4_nl, q6_k


def _model_like(name: str, rows: int, cols: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Weights quantized from transformer-like values, and a normal activation."""
    rng = np.random.default_rng(seed)
    return qk.quantize(qst.weight_like(rng, (rows, cols)), name), rng.standard_normal(cols).astype(np.float32)


def _dequantized(name: str, w: np.ndarray) -> np.ndarray:
    return gguf.quants.dequantize(np.asarray(w), qk.get_format(name).qtype)


FLOAT_FORMATS = ["Q4_0", "Q5_1", "Q8_0", "Q2_K", "Q4_K", "Q6_K", "IQ4_NL", "MXFP4"]


@pytest.mark.parametrize("name", FLOAT_FORMATS)
def test_a_float_activation_gemv_passes_when_it_says_so(name):
    w, x = _model_like(name, 64, 4096)
    fmt = qk.get_format(name)
    d = check_gemv(Kernel("mv", name, "gemv", float_gemv(name), activation="float32"), fmt, w, x)
    assert d.criterion == "within the rounding bound of a float32-activation dot"
    assert 0 < d.bound_share < 1 and d.values == 64


def test_a_float_activation_gemv_fails_the_quantized_activation_model_and_is_told_what_to_declare():
    w, x = _model_like("Q4_K", 64, 4096)
    with pytest.raises(ConformanceError, match=r"rows outside it(.|\n)*declare activation=\"float32\"") as err:
        check_gemv(Kernel("mv", "Q4_K", "gemv", float_gemv("Q4_K")), qk.get_format("Q4_K"), w, x)
    assert len(str(err.value).splitlines()) <= 8


def test_a_float16_float_activation_gemv_passes_as_float16_and_not_as_float32():
    w, x = _model_like("Q4_0", 16, 640)
    fmt = qk.get_format("Q4_0")
    half = Kernel("half-mv", "Q4_0", "gemv", float_gemv("Q4_0", np.float16), activation="float32", precision="float16")
    assert check_gemv(half, fmt, w, x).criterion == "within float16 precision of a float32-activation dot"
    with pytest.raises(ConformanceError, match="outside it"):
        check_gemv(dataclasses.replace(half, precision="float32"), fmt, w, x)


def _flip_at_mean_magnitude(name: str, w: np.ndarray, x: np.ndarray) -> tuple[np.ndarray, int]:
    """``w`` with, in every row, one weight moved one quant level: the weight whose |x| is nearest
    the mean |x| (found by flipping bit 0 of each quant byte of its block and keeping the flip
    that moves exactly that weight)."""
    fmt = qk.get_format(name)
    j = int(np.argmin(np.abs(np.abs(x) - np.abs(x).mean())))
    block, within = divmod(j, fmt.block_weights)
    start = block * fmt.block_bytes
    before = _dequantized(name, w[:1])[0]
    field = "ql" if "ql" in fmt.block_dtype.names else "qs"
    offset = fmt.block_dtype.fields[field][1]
    for byte in range(offset, offset + fmt.block_dtype.fields[field][0].itemsize):
        for bit in (0, 4):
            flipped = w.copy()
            flipped[:, start + byte] ^= 1 << bit
            moved = np.flatnonzero(_dequantized(name, flipped[:1])[0] != before)
            if moved.tolist() == [j]:
                return flipped, j
    raise AssertionError(f"no single-bit flip moves weight {within} of a {name} block alone")


# (format, row width, adds per block declared): the bound of any summation order grows as the row's
# length squared, so one level of a 4- or 5-bit format at a weight of mean |x| is caught in rows up
# to about 1,024 weights (the default shapes' 256- and 640-wide rows, Hypothesis' 1-3 blocks), and
# in 4096-wide rows by a kernel that declares it sums in 8 lanes (adds_per_block = block / 8); the
# finer levels of Q6_K and Q8_0 need narrower rows or the lanes declared.
FLIPS = [("Q4_0", 640, None), ("Q4_K", 1024, None), ("Q2_K", 1024, None), ("IQ4_NL", 1024, None),
         ("Q5_1", 1024, None), ("Q4_K", 4096, 32), ("Q4_0", 4096, 4), ("Q2_K", 4096, 32), ("Q6_K", 1024, 32),
         ("Q8_0", 640, 4)]


@pytest.mark.parametrize("name", FLOAT_FORMATS)
def test_a_float_activation_gemv_declaring_eight_lanes_passes_in_4096_wide_rows(name):
    w, x = _model_like(name, 64, 4096)
    fmt = qk.get_format(name)
    kernel = Kernel("mv", name, "gemv", float_gemv(name), activation="float32", adds_per_block=fmt.block_weights // 8)
    assert check_gemv(kernel, fmt, w, x).bound_share < 1


@pytest.mark.parametrize(("name", "cols", "adds_per_block"), FLIPS)
def test_one_quant_level_at_a_weight_of_mean_activation_fails_a_float_activation_gemv(name, cols, adds_per_block):
    w, x = _model_like(name, 8, cols)
    flipped, j = _flip_at_mean_magnitude(name, w, x)
    mv = float_gemv(name)
    kernel = Kernel("flipped", name, "gemv", lambda wr, xr: mv(flipped, xr), activation="float32",
                    adds_per_block=adds_per_block)
    with pytest.raises(ConformanceError, match=r"8 of 8 rows outside it\n  first at row 0"):
        check_gemv(kernel, qk.get_format(name), w, x)


def test_the_float_bound_holds_the_exact_sum_and_is_tight_enough_to_mean_something():
    w, x = _model_like("Q4_K", 32, 4096)
    weights = _dequantized("Q4_K", w)
    exact, bound, magnitude = float_dot_bound(weights, x, 256)
    sequential = np.array([np.float32(0)] * 32)
    for i in range(4096):  # the worst order a correct kernel may take: one accumulator, left to right
        sequential = (sequential + weights[:, i] * x[i]).astype(np.float32)
    assert np.all(np.abs(sequential - exact) <= bound)
    assert np.all(bound < 1e-3 * magnitude)
    tighter = float_dot_bound(weights, x, 256, adds_per_block=8)[1]  # a kernel summing in 32 lanes
    assert np.all(tighter < bound / 4)


def test_a_kernel_that_halves_its_callers_x_fails_naming_the_read_only_input():
    w, x = _model_like("Q4_K", 4, 1024)
    halves = halves_x
    with pytest.raises(ConformanceError, match="raised ValueError: .*read-only(.|\n)*writable_inputs=True"):
        check_gemv(Kernel("halves", "Q4_K", "gemv", halves), qk.get_format("Q4_K"), w, x)
    with pytest.raises(ConformanceError, match=r"changed its input x in place: 1024 of 1024 values differ, first at "
                                               r"index 0"):
        check_gemv(Kernel("halves", "Q4_K", "gemv", halves, writable_inputs=True), qk.get_format("Q4_K"), w, x)
    assert x.flags.writeable  # the caller's own array, untouched and still its own


def test_a_c_kernel_writing_its_read_only_input_through_the_pointer_is_caught():
    import ctypes

    w, x = _model_like("Q4_K", 4, 1024)

    def scribbles(wr, xr):  # as C code given xr.ctypes.data may: the read-only flag does not stop it
        y = qk.gemv(wr, xr, "Q4_K")
        ctypes.memset(xr.ctypes.data, 0, 8)
        return y

    with pytest.raises(ConformanceError, match=r"changed its input x in place: 2 of 1024 values differ, first at "
                                               r"index 0"):
        check_gemv(Kernel("scribbles", "Q4_K", "gemv", scribbles), qk.get_format("Q4_K"), w, x)


def test_a_dequantizer_that_zeroes_its_callers_blocks_fails_naming_the_input():
    raw = qk.quantize(np.random.default_rng(0).standard_normal(512).astype(np.float32), "Q4_K")
    zeroes = zeroes_blocks
    fmt = qk.get_format("Q4_K")
    with pytest.raises(ConformanceError, match="read-only"):
        check_dequantize(Kernel("zeroes", "Q4_K", "dequantize", zeroes), fmt, raw)
    with pytest.raises(ConformanceError, match="changed its input raw in place"):
        check_dequantize(Kernel("zeroes", "Q4_K", "dequantize", zeroes, writable_inputs=True), fmt, raw)


def test_a_kernel_giving_other_bits_on_a_second_call_fails_unless_it_says_it_may():
    w, x = _model_like("Q4_K", 16, 1024)
    kernel = Kernel("noisy", "Q4_K", "gemv", noisy)
    with pytest.raises(ConformanceError, match="gave different results on two calls with the same input: .* rows "
                                               "differ(.|\n)*deterministic=False"):
        check_gemv(kernel, qk.get_format("Q4_K"), w, x)
    assert check_gemv(dataclasses.replace(kernel, deterministic=False), qk.get_format("Q4_K"), w, x).bound_share < 1


def test_a_kernel_reusing_its_output_buffer_is_not_mistaken_for_a_nondeterministic_one():
    raw = qk.quantize(np.random.default_rng(0).standard_normal(512).astype(np.float32), "Q4_K")
    out = np.empty((2, 256), np.float32)
    kernel = Kernel("reuses", "Q4_K", "dequantize", lambda r: qk.dequantize(r, "Q4_K", out=out))
    assert check_dequantize(kernel, qk.get_format("Q4_K"), raw).criterion == "bit-identical"


@pytest.mark.parametrize("name", [f.name for f in qk.formats() if f.qtype in gguf.quants._type_traits
                                  and f.activation is not None])
@settings(max_examples=30)
@given(data=st.data())
def test_gguf_pys_numpy_dequantizers_pass_with_numpy_warnings_as_errors(name, data):
    raw = data.draw(qst.blocks(name, n_blocks=st.integers(1, 3)))
    fmt = qk.get_format(name)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        check_dequantize(Kernel("gguf-py", name, "dequantize", lambda r: gguf.quants.dequantize(r, fmt.qtype)),
                         fmt, raw)


def test_a_float16_intermediate_overflow_is_named_as_such():
    raw = huge_scale_q6_k_block()
    kernel = Kernel("half", "Q6_K", "dequantize", half_q6_k, precision="float16")
    with pytest.raises(ConformanceError) as err:
        check_dequantize(kernel, qk.get_format("Q6_K"), raw)
    message = str(err.value)
    assert "expected 0.0 (0x00000000), got nan" in message
    assert "distance: none, non-finite where the reference is finite (exact value 0.0)" in message
    assert "float16 overflows on the way: its largest finite value is 65504, and this block's largest scale is " \
           "65504" in message and "extreme_scales=False" in message


@settings(max_examples=40)
@given(raw=qst.blocks("Q6_K", n_blocks=st.integers(1, 3), extreme=False))
def test_without_extreme_scales_the_float16_dequantizer_passes(raw):
    assert np.abs(raw.view(q6_k.BLOCK_DTYPE)["d"].astype(np.float32)).max() <= 1.0
    check_dequantize(Kernel("half", "Q6_K", "dequantize", half_q6_k, precision="float16", extreme_scales=False),
                     qk.get_format("Q6_K"), raw)


def test_non_finite_values_on_both_sides_are_counted_as_matched_not_as_a_distance():
    raw = huge_scale_q6_k_block()
    raw.view(q6_k.BLOCK_DTYPE)["d"] = np.inf  # every weight inf * 0: NaN in the reference too
    d = check_dequantize(Kernel("half", "Q6_K", "dequantize", half_q6_k, precision="float16"),
                         qk.get_format("Q6_K"), raw)
    assert d.non_finite == 256 and d.max_ulps == 0


def test_distances_are_counted_in_the_declared_precision():
    expected = np.float32([1.0, 1.0, np.nan, 2.0])
    actual = np.float32([1.0, 1.0 + 2.0**-23, np.nan, np.inf])
    assert ulps(expected, actual).tolist() == [0, 1, -1, -1]
    assert ulps(expected, np.float32([1.0 + 2.0**-10, 1, 0, 0]), "float16")[0] == 1
    assert ulps(expected, np.float32([1.0 + 2.0**-7, 1, 0, 0]), "bfloat16")[0] == 1
    assert ulps(np.float32([-1.0]), np.float32([1.0]), "float16")[0] == 2 * 0x3C00


def _zero_first_block(x: np.ndarray) -> np.ndarray:
    x = x.copy()
    x[:32] = 0  # a block llama.cpp's quantize_row_iq4_nl_ref leaves its quants undefined in
    return x


def test_iq4_nl_kernels_are_checked_against_the_quantizer_they_declare():
    fmt = qk.get_format("IQ4_NL")
    x = _zero_first_block(qst.weight_like(np.random.default_rng(3), (256,)))
    no_search = Kernel("ref", "IQ4_NL", "quantize", lambda v: iq4_nl.quantize_row_ref_ref(v.reshape(-1, 32))[0] ^
                       np.where(np.arange(18) >= 2, 0x11, 0).astype(np.uint8) * (np.arange(8) == 0)[:, None],
                       reference="quantize_row_iq4_nl_ref")
    # Its undefined quants (block 0: all zero) are written otherwise here, and not held against it.
    assert check_quantize(no_search, fmt, x).criterion == "bit-identical"
    with pytest.raises(ConformanceError, match=r"not bit-identical to the reference \(quantize_iq4_nl\)"):
        check_quantize(dataclasses.replace(no_search, reference=None), fmt, x)
    searching = Kernel("search", "IQ4_NL", "quantize", lambda v: qk.quantize(v, "IQ4_NL"))
    with pytest.raises(ConformanceError, match=r"\(quantize_row_iq4_nl_ref\): .*\n  first at block 1"):
        check_quantize(dataclasses.replace(searching, reference="quantize_row_iq4_nl_ref"), fmt, x)
    assert fmt.quantizer_names == ("quantize_iq4_nl", "quantize_row_iq4_nl_ref")
    assert qk.get_format("Q4_K").quantizer_names == ("quantize_row_q4_K_ref",)


def test_the_no_search_iq4_nl_reference_equals_llama_cpps_from_float():
    ggml_kernels = pytest.importorskip("ggml_kernels", reason="ggml-python is not installed")
    from_float = ggml_kernels.from_float("IQ4_NL")
    rng = np.random.default_rng(7)
    for scale in (1e-6, 0.02, 3.0, 1e4):
        x = _zero_first_block((rng.standard_t(4, 32 * 64) * scale).astype(np.float32))
        expected, defined = iq4_nl.quantize_row_ref_ref(x.reshape(-1, 32))
        got = from_float(x).reshape(-1, 18)
        assert np.array_equal(got[defined], expected[defined])
        assert not defined[0, 2:].any() and defined[1:].all()


@pytest.mark.parametrize(("declared", "problem"), [
    (dict(op="dequantize", activation="float32"), "activation= is for the dot products"),
    (dict(op="gemv", activation="float16"), "activation 'float16' is not one of 'float32'"),
    (dict(op="gemv", activation="float32", exact=True), "exact=True asks for the reference's float order"),
    (dict(op="quantize", reference="quantize_q9"), "reference 'quantize_q9' is not one of IQ4_NL's quantizers: "
                                                   "quantize_iq4_nl, quantize_row_iq4_nl_ref"),
    (dict(op="dequantize", reference="quantize_iq4_nl"), "reference= names a quantizer"),
    (dict(op="gemv", deterministic="yes"), "deterministic must be True or False"),
])
def test_a_declaration_that_means_nothing_is_refused_naming_it(declared, problem):
    kernel = Kernel(**{"name": "k", "qtype": "IQ4_NL", "fn": print, "op": "gemv", **declared})
    assert problem in kernel.problem()


def test_a_kernels_repr_is_one_short_line():
    assert repr(Kernel("mine", "Q4_K", "gemv", print, activation="float32")) == "Kernel('mine', Q4_K, gemv)"


def test_vec_dot_kernels_take_the_float_model_too():
    w, x = _model_like("Q4_K", 1, 1024)
    fmt = qk.get_format("Q4_K")
    kernel = Kernel("dot", "Q4_K", "vec_dot", lambda wr, xr: float(_dequantized("Q4_K", wr.reshape(1, -1))[0] @ xr),
                    activation="float32")
    assert check_vec_dot(kernel, fmt, w.reshape(-1, fmt.block_bytes), x).values == 1


def _failed_call(err: BaseException):
    from types import SimpleNamespace

    report = SimpleNamespace(when="call", failed=True, longrepr="the long traceback")
    try:
        raise err
    except BaseException:  # noqa: BLE001 - caught to give pytest an ExceptionInfo with a traceback
        return report, SimpleNamespace(excinfo=pytest.ExceptionInfo.from_current())


def test_several_distinct_failures_that_hypothesis_groups_are_each_shown_short():
    import builtins

    from pytest_quantbench.findings import shorten_failure

    group = getattr(builtins, "ExceptionGroup", None) or pytest.importorskip("exceptiongroup").ExceptionGroup
    first, second = ConformanceError("kernel 'k' gave different results"), ConformanceError("kernel 'k' raised")
    first.__notes__ = ["Falsifying example: one"]
    second.__notes__ = ["Explanation:", "    These lines were always and only run by failing test cases:",
                        "You can reproduce this test case by ..."]
    report, call = _failed_call(group("Hypothesis found 2 distinct failures", [first, second]))
    shorten_failure(report, call, verbosity=0)
    assert report.longrepr == ("kernel 'k' gave different results\nFalsifying example: one\n\n"
                               "kernel 'k' raised\nYou can reproduce this test case by ...\n(-vv shows the traceback)")
    report, call = _failed_call(group("2 failures", [first, ValueError("a bug of the plugin's")]))
    shorten_failure(report, call, verbosity=0)
    assert report.longrepr == "the long traceback"  # anything else keeps pytest's whole report
    report, call = _failed_call(first)
    shorten_failure(report, call, verbosity=2)
    assert report.longrepr == "the long traceback"  # -vv
