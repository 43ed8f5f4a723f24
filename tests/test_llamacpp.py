"""llama.cpp's own kernels as the speed comparison (quantbench.llamacpp): they compute what
this package's kernels compute, the compiled gemv row loop included, and the throughput table puts
each of ours beside the llama.cpp kernel of the same op, format, size and threads."""

import numpy as np
import pytest

import quantbench_kernels as qk
from pytest_quantbench.table import LLAMACPP, derive, format_table, tag
from quantbench import llamacpp

pytest.importorskip("ggml", reason="ggml-python (a test extra) is not installed")

WEIGHTS = [f.name for f in qk.formats("gemv")]


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(5)
    return (rng.standard_t(5, (48, 512)) * 0.02).astype(np.float32), rng.standard_normal(512).astype(np.float32)


@pytest.mark.parametrize("name", WEIGHTS)
def test_llama_cpps_kernels_compute_what_ours_do(name, data):
    w, x = data
    theirs = llamacpp.kernels(name)
    q = qk.quantize(w, name)
    np.testing.assert_array_equal(theirs.dequantize(q), qk.dequantize(q, name).ravel())
    if name != "IQ4_NL":  # ggml's quantize_row_iq4_nl_ref skips the search that llama-quantize runs
        np.testing.assert_array_equal(theirs.quantize(w).ravel(), q.ravel())
    np.testing.assert_array_equal(theirs.quantize_activation(x).ravel(), qk.quantize_activation(x, name).ravel())
    one = theirs.gemv(q, x, 1)
    np.testing.assert_allclose(one, qk.gemv(q, x, name), rtol=1e-4, atol=1e-4 * float(np.abs(one).max()))


@pytest.mark.parametrize("name", ["Q4_0", "Q4_K"])  # each format's parallel loop compiles for seconds
def test_llama_cpps_gemv_on_two_threads_is_its_one_thread_gemv(name, data):
    w, x = data
    q = qk.quantize(w, name)
    theirs = llamacpp.kernels(name)
    np.testing.assert_array_equal(theirs.gemv(q, x, 2), theirs.gemv(q, x, 1))  # the same vec_dot per row


def test_llama_cpps_dequantize_writes_into_out_and_refuses_a_wrong_one(data):
    q = qk.quantize(data[0], "Q4_0")
    out = np.empty(data[0].size, dtype=np.float32)
    assert llamacpp.kernels("Q4_0").dequantize(q, out=out) is out
    np.testing.assert_array_equal(out, qk.dequantize(q, "Q4_0").ravel())
    with pytest.raises(ValueError, match="out must be C-contiguous float32 of 24576 weights"):
        llamacpp.kernels("Q4_0").dequantize(q, out=np.empty(10, dtype=np.float32))


def test_llama_cpps_kernels_refuse_shapes_that_would_crash_them(data):
    """Called with a wrong x, the C code would read past its buffers or abort: refused first."""
    theirs = llamacpp.kernels("Q4_K")
    q = qk.quantize(data[0], "Q4_K")
    with pytest.raises(ValueError, match="x has 256 values where the rows hold 512"):
        theirs.gemv(q, data[1][:256], 1)
    with pytest.raises(ValueError, match="rows of 287 bytes are not whole Q4_K blocks"):
        theirs.gemv(q[:, :-1], data[1], 1)
    with pytest.raises(ValueError, match="100 values are not whole Q4_K blocks of 256"):
        theirs.quantize(data[1][:100])


def test_where_llama_cpp_has_no_kernel_the_comparison_says_none():
    assert llamacpp.kernels("Q8_K").dequantize is None  # ggml has no to_float for Q8_K
    assert llamacpp.kernels("Q8_1").gemv is None  # an activation format: no dot of its own


def _row(impl: str, threads: int, seconds: float, op: str = "gemv") -> tuple[dict, float, float]:
    info = tag(op=op, fmt="Q4_0", size="16M", impl=impl, weights=1 << 24, nbytes=1 << 23, threads=threads)
    return info, seconds, 0.0


def test_the_table_compares_with_llama_cpp_on_the_same_threads_else_on_one():
    rows = derive([_row("numba-1t", 1, 1.0), _row("numba-2t", 2, 0.5), _row(f"{LLAMACPP}-1t", 1, 2.0),
                   _row(f"{LLAMACPP}-2t", 2, 1.5), _row("numba-2t", 2, 0.25, op="dequantize"),
                   _row(f"{LLAMACPP}-1t", 1, 1.0, op="dequantize")])
    ratios = {(r.info["op"], r.info["impl"], r.info["threads"]): r.vs_llamacpp for r in rows}
    assert ratios[("gemv", "numba-1t", 1)] == 2.0
    assert ratios[("gemv", "numba-2t", 2)] == 3.0  # against llama.cpp on two threads
    assert ratios[("dequantize", "numba-2t", 2)] == 4.0  # llama.cpp measured on one thread only
    assert ratios[("gemv", f"{LLAMACPP}-1t", 1)] is None
    header = format_table(rows)[0]
    assert "x llama.cpp" in header
    assert "x llama.cpp" not in format_table(derive([_row("numba-1t", 1, 1.0)]))[0]


def test_a_ratio_paired_in_time_with_llama_cpp_wins_over_the_separate_rows():
    paired, alone = _row("numba-1t", 1, 1.0), _row("numba-2t", 2, 0.5)
    paired[0]["llamacpp_paired"] = 1.7  # llama.cpp's calls timed in between this row's rounds
    rows = derive([paired, alone, _row(f"{LLAMACPP}-1t", 1, 2.0), _row(f"{LLAMACPP}-2t", 2, 1.5)])
    ratios = {r.info["impl"]: r.vs_llamacpp for r in rows}
    assert ratios["numba-1t"] == 1.7 and ratios["numba-2t"] == 3.0


@pytest.mark.slow  # the perf suite in a pytest process of its own
def test_the_perf_suite_takes_x_llama_cpp_from_the_calls_paired_with_each_round(tmp_path):
    """The paired calls must survive to the table: merging the rounds of a row once dropped them, and
    x llama.cpp then came from llama.cpp's own row, measured alone seconds later (its ratio not
    paired at all, against a row whose rounds were interleaved with llama.cpp's calls)."""
    import json
    import subprocess
    import sys
    from pathlib import Path

    from downstream import environment  # without an xdist worker's variables: benchmarks would be off

    out = tmp_path / "perf.json"
    run = subprocess.run(
        [sys.executable, "-m", "pytest", str(Path(__file__).parent / "perf"), "--perf", "-q", "-p", "no:randomly",
         "-p", "no:cacheprovider", "-k", "test_gemv and 256x256 and Q4_0 and numba-1t",
         "--benchmark-max-time", "0.05", f"--benchmark-json={out}"],
        capture_output=True, text=True, timeout=600, env=environment())
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    (bench,) = json.loads(out.read_text())["benchmarks"]  # llama.cpp's own row is not selected
    info = bench["extra_info"]
    low, high = info["llamacpp_paired_ci"]
    assert low <= info["llamacpp_paired"] <= high and info["speedup_vs_llamacpp"] == info["llamacpp_paired"]
    assert "x llama.cpp" in run.stdout
