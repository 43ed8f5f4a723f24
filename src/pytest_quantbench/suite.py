"""The tests that ``pytest --quantbench`` adds; pytest collects this file when the option is given.

For every registered kernel: a Hypothesis conformance test, a conformance test per matching tensor
of each ``--quantbench-gguf`` file, and a throughput benchmark per size; beside them the bandwidth
probe and the reference implementations are measured in the same session. Per GGUF file, the
decode step (every matrix one token multiplies, through the package's gemv) is a benchmark too.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from gguf import GGML_QUANT_SIZES
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import quantbench_kernels as qk
from pytest_quantbench import findings, options, workloads
from pytest_quantbench import strategies as qst
from pytest_quantbench.ops import OPS
from pytest_quantbench.registration import BadEntry, Kernel, ab_pairs, registered_kernels
from pytest_quantbench.table import LLAMACPP, PROBE, REFERENCE, tag
from quantbench import decode_step, llamacpp
from quantbench.gguf_files import GGUFFileError, read_tensors

XDIST_SKIP = "quantbench benchmarks do not run under pytest-xdist (-n): run pytest --quantbench without -n to measure"
NO_GGUF = "no GGUF files given: pass --quantbench-gguf=PATH or set the quantbench_gguf ini option"
NO_AB = "no A/B comparison asked for: pass --quantbench-ab OLD,NEW (two registered kernel names)"
NO_MATCH = "the GGUF files hold no tensor in the format of a registered kernel"


def _usable(entry: Kernel | BadEntry) -> Kernel:
    """The kernel, or a test failure that names what is wrong with the registration."""
    problem = entry.message if isinstance(entry, BadEntry) else entry.problem()
    if problem:
        pytest.fail(problem, pytrace=False)
    return entry


def _labels(paths: list) -> dict:
    """A test-id label per GGUF path: its file name, or as many of its last folders as tell it
    apart from another file of the same name; never how the path was written (absolute, ./, ..)."""
    parts = {p: Path(os.path.abspath(p)).parts for p in paths}
    labels = {}
    for p in paths:
        depth = 1
        while depth < len(parts[p]) and any(
                q != p and parts[q][-depth:] == parts[p][-depth:] and parts[q] != parts[p] for q in paths):
            depth += 1
        labels[p] = "/".join(parts[p][-depth:])
    return labels


def _unchecked(label: str, tensors: list, checked: set) -> list[tuple[str, str]]:
    """(test id, reason) per quantized format of a file that no kernel here checks, the reason
    saying how many tensors and weights it holds and why."""
    known = {f.qtype for f in qk.formats()}
    by_type: dict = {}
    for t in tensors:
        if GGML_QUANT_SIZES[t.qtype][0] > 1 and t.qtype not in checked:  # quantized (not F32, F16, BF16...)
            by_type.setdefault(t.qtype, []).append(t)
    out = []
    for qtype, found in sorted(by_type.items(), key=lambda kv: kv[0].name):
        why = (f"no registered kernel is for {qtype.name}" if qtype in known
               else f"pytest-quantbench has no {qtype.name} format yet")
        weights = sum(t.shape[0] * t.shape[1] for t in found)
        out.append((f"{label}:{qtype.name}-unchecked",
                    f"{label}: {len(found)} {qtype.name} tensors ({weights} weights) not checked: {why}"))
    return out


def _gguf_cases(config: pytest.Config, kernels: list[Kernel | BadEntry]) -> list:
    cases = []
    paths = options.gguf_paths(config)
    labels = _labels(paths)
    for path in paths:
        try:
            tensors = read_tensors(path)
        except GGUFFileError as err:
            cases.append(pytest.param(None, err, id=f"{labels[path]}:unreadable"))
            continue
        except Exception as err:  # noqa: BLE001 - never stop the collection of the user's own tests
            problem = GGUFFileError(f"GGUF file {str(path)!r} could not be read: {type(err).__name__}: {err}")
            cases.append(pytest.param(None, problem, id=f"{labels[path]}:unreadable"))
            continue
        usable = [k for k in kernels if isinstance(k, Kernel) and k.problem() is None]
        for k in usable:
            fmt = qk.get_format(k.qtype)
            for t in tensors:
                if t.qtype == fmt.qtype:
                    cases.append(pytest.param(k, t, id=f"{k.id}-{labels[path]}:{t.name}"))
        unchecked = _unchecked(labels[path], tensors, {qk.get_format(k.qtype).qtype for k in usable})
        findings.note_unchecked(config, [reason for _, reason in unchecked])
        cases.extend(pytest.param(None, None, id=i, marks=pytest.mark.skip(reason=r)) for i, r in unchecked)
    if cases:
        return cases
    reason = NO_GGUF if not options.gguf_paths(config) else NO_MATCH
    return [pytest.param(None, None, id="no-gguf", marks=pytest.mark.skip(reason=reason))]


def _shape_cases(config: pytest.Config, kernels: list[Kernel | BadEntry]) -> list:
    """(kernel, shape) for every usable dot and dequantize kernel and each ``--quantbench-shapes``
    shape whose rows are whole blocks of its format (the quantizers' NumPy reference takes seconds
    per large shape: they meet Hypothesis' rows and the GGUF tensors)."""
    cases = []
    for k in kernels:
        if not isinstance(k, Kernel) or k.problem() is not None or OPS[k.op].bytes_out:
            continue
        fmt = qk.get_format(k.qtype)
        cases.extend(pytest.param(k, shape, id=f"{k.id}-{shape.label}") for shape in options.shapes(config)
                     if shape.unfit_for(fmt) is None)
    return cases or [pytest.param(None, None, id="no-shapes", marks=pytest.mark.skip(
        reason="no dot or dequantize kernel, or no shape (--quantbench-shapes)"))]


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    config = metafunc.config
    registered = registered_kernels(config)
    kernels = registered.tested
    names = metafunc.fixturenames
    if "qb_tensor" in names:
        metafunc.parametrize("qb_kernel,qb_tensor", _gguf_cases(config, kernels))
    elif "qb_shape" in names:
        metafunc.parametrize("qb_kernel,qb_shape", _shape_cases(config, kernels))
    elif "qb_kernel" in names:
        chosen = registered.benchmarked if "benchmark" in names else kernels
        metafunc.parametrize("qb_kernel", chosen, ids=lambda entry: entry.id)
    if "qb_reference" in names:
        pairs = sorted({(k.format_name, k.op) for k in kernels if isinstance(k, Kernel) and k.problem() is None})
        metafunc.parametrize("qb_reference", pairs, ids=[f"{f}-{op}" for f, op in pairs])
    if "qb_llamacpp" in names:
        pairs = sorted({(k.format_name, k.op) for k in kernels if isinstance(k, Kernel) and k.problem() is None
                        and k.op in LLAMACPP_OPS})
        metafunc.parametrize("qb_llamacpp", pairs, ids=[f"{f}-{op}" for f, op in pairs])
    if "qb_ab" in names:
        cases = [case for old, new in options.ab_names(config)
                 for case in ab_pairs(registered.benchmarked, old, new)] or [
            pytest.param(None, id="no-ab", marks=pytest.mark.skip(reason=NO_AB))]
        metafunc.parametrize("qb_ab", cases, ids=lambda c: c.id if isinstance(c, BadEntry) else
                             f"{c[0].name}-vs-{c[1].name}-{c[1].format_name}-{c[1].op}")
    if "qb_gguf_path" in names:
        paths = options.gguf_paths(config)
        labels = _labels(paths)
        metafunc.parametrize("qb_gguf_path", [pytest.param(p, id=labels[p]) for p in paths] or [
            pytest.param(None, id="no-gguf", marks=pytest.mark.skip(reason=NO_GGUF))])
    if "qb_size" in names:
        metafunc.parametrize("qb_size", options.sizes(config), ids=lambda s: s.label)
    if "qb_pass" in names and options.passes(config) > 1:
        # The plugin orders the items pass by pass (pytest_collection_modifyitems).
        n = options.passes(config)
        metafunc.parametrize("qb_pass", range(n), ids=[f"pass{i}" for i in range(n)])


@pytest.fixture
def qb_pass() -> int:
    """Which pass over the benchmarks this is (0 unless --quantbench-passes is above 1)."""
    return 0


def _results(request: pytest.FixtureRequest, kernel: Kernel) -> dict:
    """This test's conformance record (one per test, filled by every input it checks)."""
    for name, result in request.node.user_properties:
        if name == findings.CONFORMANCE_PROPERTY:
            return result
    return findings.start_conformance(request.node, (kernel.name, kernel.format_name, kernel.op),
                                    kernel.criterion.describe())


def _check(request: pytest.FixtureRequest, kernel: Kernel, args: tuple) -> None:
    fmt = qk.get_format(kernel.qtype)
    result = _results(request, kernel)
    d = OPS[kernel.op].check(kernel, fmt, *args, verbose=request.config.get_verbosity() >= 2)
    findings.add_distance(result, d.max_ulps, d.bound_share, d.values, d.non_finite)


class Drawn(tuple):
    """A drawn input, printed short in Hypothesis' falsifying example (the failure's own message
    shows the failing block's bytes): each array's dtype and shape."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "(" + ", ".join(f"{a.dtype}{list(a.shape)}" if isinstance(a, np.ndarray) else repr(a)
                               for a in self) + ")"

    def _repr_pretty_(self, p, cycle: bool) -> None:  # Hypothesis' pretty printer
        p.text(repr(self))


# Hypothesis calls the test once per example with the same request: each example adds its distance.
@settings(deadline=None, print_blob=True, suppress_health_check=[
    HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_conformance(qb_kernel: Kernel | BadEntry, data: st.DataObject, request: pytest.FixtureRequest) -> None:
    """The kernel meets its criterion (bit-identical, or within the dot products' rounding bound)
    on Hypothesis-drawn inputs (edge cases weighted)."""
    kernel = _usable(qb_kernel)
    drawn = OPS[kernel.op].draw(qk.get_format(kernel.qtype), kernel.extreme_scales).map(Drawn)
    _check(request, kernel, data.draw(drawn, label="input"))


def test_conformance_shape(qb_kernel: Kernel | None, qb_shape: options.Size, request: pytest.FixtureRequest) -> None:
    """The kernel meets its criterion on a fixed shape of model-like weights (--quantbench-shapes):
    the rows and widths that Hypothesis' few blocks never reach."""
    kernel = _usable(qb_kernel)
    fmt = qk.get_format(kernel.qtype)
    op = OPS[kernel.op]
    rng = np.random.default_rng(0)
    dense = qst.weight_like(rng, (1 if op.one_row else qb_shape.rows, qb_shape.cols_for(fmt)))
    _check(request, kernel, op.bench_args(fmt, dense, rng))


def test_conformance_gguf(qb_kernel: Kernel | None, qb_tensor, request: pytest.FixtureRequest) -> None:
    """The kernel meets its criterion on a real tensor of a GGUF file."""
    if isinstance(qb_tensor, GGUFFileError):
        pytest.fail(str(qb_tensor), pytrace=False)
    kernel = _usable(qb_kernel)
    _check(request, kernel, OPS[kernel.op].from_tensor(qk.get_format(kernel.qtype), qb_tensor.raw))


def _skip_unless_measuring(config: pytest.Config) -> None:
    if options.using_xdist(config):
        pytest.skip(XDIST_SKIP)


def _skip_unless_whole_blocks(fmt: qk.BlockFormat, size: options.Size) -> None:
    unfit = size.unfit_for(fmt)
    if unfit:
        pytest.skip(unfit)


def test_throughput(qb_kernel: Kernel | BadEntry, qb_size: options.Size, qb_pass: int, benchmark, request) -> None:
    """Time the kernel (pytest-benchmark: its --benchmark-* options apply)."""
    _skip_unless_measuring(request.config)
    kernel = _usable(qb_kernel)
    fmt = qk.get_format(kernel.qtype)
    _skip_unless_whole_blocks(fmt, qb_size)
    work = workloads.build(fmt, kernel.op, qb_size)
    info = tag(op=kernel.op, fmt=fmt.name, size=qb_size.label, impl=kernel.name, weights=work.n_weights,
               nbytes=work.nbytes, threads=kernel.threads_label, pass_no=qb_pass)
    workloads.measure(benchmark, work, kernel.fn, info, request.config, paired=workloads.paired_probes(qb_size))


def test_ab(qb_ab: tuple[Kernel, Kernel] | BadEntry, qb_size: options.Size, benchmark, request) -> None:
    """Time the new kernel of --quantbench-ab OLD,NEW with the old one's calls in between its rounds,
    on the same inputs: judged on the pairs, in one process (see gate.ab_compare)."""
    _skip_unless_measuring(request.config)
    if isinstance(qb_ab, BadEntry):
        _usable(qb_ab)  # fails, saying why there is no pair
    old, new = (_usable(k) for k in qb_ab)
    fmt = qk.get_format(new.qtype)
    _skip_unless_whole_blocks(fmt, qb_size)
    work = workloads.build(fmt, new.op, qb_size)
    info = tag(op=new.op, fmt=fmt.name, size=qb_size.label, impl=new.name, weights=work.n_weights,
               nbytes=work.nbytes, threads=new.threads_label)
    info["ab_baseline"] = old.name
    old_call = work.opposite_caller(old.fn)
    workloads.measure(benchmark, work, new.fn, info, request.config, paired={"A": old_call}, ab=True)


def test_throughput_reference(qb_reference: tuple[str, str], qb_size: options.Size, benchmark, request) -> None:
    """Time the NumPy reference, for the speed-up column."""
    _skip_unless_measuring(request.config)
    name, op = qb_reference
    fmt = qk.get_format(name)
    _skip_unless_whole_blocks(fmt, qb_size)
    if OPS[op].bytes_out and qb_size.weights > (1 << 20):
        pytest.skip("the NumPy reference quantizer takes minutes above 1M weights")
    work = workloads.build(fmt, op, qb_size)
    info = tag(op=op, fmt=fmt.name, size=qb_size.label, impl=REFERENCE, weights=work.n_weights, nbytes=work.nbytes,
               threads=1)
    workloads.measure(benchmark, work, OPS[op].reference(fmt), info, request.config)


LLAMACPP_OPS = ("dequantize", "quantize", "gemv")  # the ops quantbench.llamacpp times


def test_throughput_llamacpp(qb_llamacpp: tuple[str, str], qb_size: options.Size, benchmark, request) -> None:
    """Time llama.cpp's own kernel of the op on one thread, where ggml-python is installed: the
    table's ``x llama.cpp`` column (:mod:`quantbench.llamacpp`)."""
    _skip_unless_measuring(request.config)
    if why := llamacpp.unavailable_reason():
        pytest.skip(why)
    name, op = qb_llamacpp
    fmt = qk.get_format(name)
    _skip_unless_whole_blocks(fmt, qb_size)
    fn = getattr(llamacpp.kernels(name), op)
    if fn is None:
        pytest.skip(f"llama.cpp has no {op} of {name}")
    work = workloads.build(fmt, op, qb_size)
    info = tag(op=op, fmt=fmt.name, size=qb_size.label, impl=f"{LLAMACPP}-1t", weights=work.n_weights,
               nbytes=work.nbytes, threads=1)
    workloads.measure(benchmark, work, fn, info, request.config)


def test_throughput_probe(qb_size: options.Size, qb_pass: int, benchmark, request) -> None:
    """Time np.copyto of the size's weights as float32: this session's memory bandwidth."""
    _skip_unless_measuring(request.config)
    work = workloads.probe(qb_size)
    info = tag(op="copyto", fmt="-", size=qb_size.label, impl=PROBE, weights=work.n_weights, nbytes=work.nbytes,
               threads=1, pass_no=qb_pass)
    workloads.measure(benchmark, work, np.copyto, info, request.config)


def _decode_step(path: str, impl: str, benchmark, request) -> None:
    """Time one token's matmuls of a GGUF file (quantbench.decode_step), every matrix once,
    threads as the kernels pick them: through this package's gemv, or llama.cpp's kernels."""
    _skip_unless_measuring(request.config)
    try:
        step = decode_step.decode_step(path)
    except GGUFFileError as err:
        # An unreadable file already fails its conformance test; a format without a gemv here is
        # named among the unchecked ones: the decode steps say why they cannot run.
        pytest.skip(f"no decode step: {err}")
    calls = None
    if impl == LLAMACPP:
        try:
            calls = decode_step.llamacpp_step(step)
        except (RuntimeError, ValueError) as err:
            pytest.skip(str(err))
    xs = decode_step.activations(step)
    work = workloads.Workload([(step, xs)], sum(m.weights for m in step),
                              sum(m.tensor.raw.nbytes + 4 * m.tensor.shape[1] for m in step))
    info = tag(op="decode-step", fmt=Path(path).name, size="1 token", impl=impl, weights=work.n_weights,
               nbytes=work.nbytes, threads=None)
    workloads.measure(benchmark, work, lambda s, x: decode_step.run_once(s, x, None, calls), info, request.config)


def test_decode_step(qb_gguf_path, benchmark, request) -> None:
    """Time one token's matmuls of a GGUF file: every matrix through the package's gemv once."""
    _decode_step(qb_gguf_path, options.BUILTIN_NAME, benchmark, request)


def test_decode_step_llamacpp(qb_gguf_path, benchmark, request) -> None:
    """The same token through llama.cpp's own kernels, where ggml-python is installed: the decode
    step's ``x llama.cpp`` in the table."""
    _decode_step(qb_gguf_path, LLAMACPP, benchmark, request)
