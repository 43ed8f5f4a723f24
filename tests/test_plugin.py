"""``pytest --quantbench`` run for real in throwaway downstream projects (pytester), in this process
(tests/downstream.py); the runs that need a process of their own are in test_end_to_end.py."""

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from downstream import run as _run

import quantbench_kernels as qk


def test_without_the_option_the_projects_tests_are_untouched(project):
    result = project.runpytest_inprocess("-p", "no:cacheprovider")
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(["plugins:*quantbench*"])  # installed and loaded...
    result.stdout.no_fnmatch_line("*quantbench:*")  # ...and silent without the option
    result.stdout.no_fnmatch_line("*test_conformance*")


# What an installed plugin must not bring into a run that does not ask for it: pytest imports every
# plugin's entry point in every run, and these cost about 0.6 s of import together.
HEAVY = ("numba", "llvmlite", "hypothesis", "quantbench_kernels", "numpy", "gguf")


def test_importing_the_entry_point_imports_nothing_heavy():
    probe = ("import sys, pytest_quantbench.plugin; "
             f"print(sorted({{m.split('.')[0] for m in sys.modules}} & {set(HEAVY) | {'pytest'}!r}))")
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_a_plain_pytest_run_with_the_plugin_installed_imports_nothing_heavy(pytester):
    pytester.makepyfile(test_plain=f"""
import sys

def test_plain(request):
    assert request.config.pluginmanager.has_plugin("quantbench")  # installed and loaded
    assert sorted({{m.split(".")[0] for m in sys.modules}} & {set(HEAVY)!r}) == []
""")
    pytester.runpytest_subprocess("-p", "no:cacheprovider").assert_outcomes(passed=1)


def test_a_downstream_test_gets_the_fixtures_without_the_option(pytester):
    pytester.makepyfile(test_uses_the_fixtures="""
def test_blocks(quant_blocks, q4_k_blocks, tiny_gguf):
    assert quant_blocks("Q8_0", 3).shape == (3, 34) and q4_k_blocks.shape == (64, 144)
    assert tiny_gguf.read_bytes()[:4] == b"GGUF"
""")
    result = pytester.runpytest_inprocess("-p", "no:cacheprovider")
    result.assert_outcomes(passed=1)


def test_a_correct_custom_kernel_passes_conformance_and_gets_a_table_row(project):
    result = _run(project, "--quantbench", "-k", "own or mine or probe or Q4_K-dequantize", "-v",
                  "--benchmark-json=bench.json")
    result.stdout.fnmatch_lines([
        "*test_own*PASSED*",
        "*test_conformance?mine-Q4_K-dequantize? PASSED*",
        "*test_throughput?mine-Q4_K-dequantize-16x4096? PASSED*",
        "*quantbench summary*",
        "Q4_K*dequantize*mine*16x4096*bit-identical (* values*, 4 tests)",
    ])
    assert result.ret == 0
    saved = {b["extra_info"]["impl"]: b["extra_info"] for b in json.loads((project.path / "bench.json").read_text())[
        "benchmarks"]}
    mine = saved["mine"]
    assert mine["op"] == "dequantize" and mine["weights"] == 16 * 4096
    assert mine["weights_per_s"] > 0 and 0 < mine["roofline"] and mine["speedup_vs_reference"] > 0
    assert saved["np.copyto"]["bytes"] == 2 * 4 * 16 * 4096


def test_llama_cpps_own_kernel_is_a_comparison_row_where_ggml_is_installed(project):
    pytest.importorskip("ggml", reason="ggml-python (a test extra) is not installed")
    result = _run(project, "--quantbench", "-k", "mine or probe or llamacpp", "-v", "--benchmark-json=bench.json")
    result.stdout.fnmatch_lines(["*test_throughput_llamacpp?Q4_K-dequantize-16x4096? PASSED*"])
    table = [line for line in result.stdout.lines if line.startswith("Q4_K") and "dequantize" in line]
    assert any("llama.cpp-1t" in line for line in table), table
    assert any(" mine " in line and re.search(r"\d+\.\d+x +\d", line) for line in table), table  # x llama.cpp
    saved = {b["extra_info"]["impl"]: b["extra_info"] for b in json.loads((project.path / "bench.json").read_text())[
        "benchmarks"]}
    assert saved["mine"]["speedup_vs_llamacpp"] > 0
    assert result.ret == 0


def test_the_decode_step_of_a_gguf_file_has_llama_cpps_beside_it(project):
    pytest.importorskip("ggml", reason="ggml-python (a test extra) is not installed")
    import gguf

    rng = np.random.default_rng(3)
    two_tensors = [(name, qtype, qk.quantize(rng.standard_normal((rows, cols)).astype(np.float32), qtype))
                   for name, qtype, rows, cols in [("blk.0.attn_q.weight", "Q4_0", 64, 256),
                                                   ("token_embd.weight", "Q4_K", 64, 256)]]
    writer = gguf.GGUFWriter(project.path / "two.gguf", arch="llama")
    for name, qtype, raw in two_tensors:
        writer.add_tensor(name, raw, raw_dtype=qk.get_format(qtype).qtype)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    result = _run(project, "--quantbench", "--quantbench-gguf=two.gguf", "-k", "decode_step", "-v",
                  "--benchmark-json=bench.json")
    result.stdout.fnmatch_lines_random(["*test_decode_step?two.gguf? PASSED*",
                                        "*test_decode_step_llamacpp?two.gguf? PASSED*"])
    saved = {b["extra_info"]["impl"]: b["extra_info"] for b in json.loads((project.path / "bench.json").read_text())[
        "benchmarks"]}
    assert saved["llama.cpp"]["op"] == saved["quantbench-numba"]["op"] == "decode-step"
    assert saved["quantbench-numba"]["speedup_vs_llamacpp"] > 0  # the table's x llama.cpp for the decode step
    assert result.ret == 0


def test_a_kernel_wrong_in_one_weight_fails_with_where_and_how(project):
    result = _run(project, "--quantbench", "-k", "conformance and broken", which="broken")
    assert result.ret == 1
    result.stdout.fnmatch_lines([
        "*kernel 'broken' (Q4_K dequantize) is not bit-identical to the reference: 1 of * weights differ*",
        "*first at block 0, weight 3: expected * (0x*), got * (0x*)*",
        "*block 0 bytes: * * *",
        "*@reproduce_failure(*",
    ])


def test_shape_bugs_that_hypothesis_small_draws_miss_fail_on_the_fixed_shapes(project):
    hypothesis_only = _run(project, "--quantbench", "-k", "test_conformance and not gguf and not shape",
                           which="shapes")
    hypothesis_only.assert_outcomes(passed=2)  # at most 3 rows of 3 blocks: neither bug shows
    result = _run(project, "--quantbench", "-k", "conformance_shape", which="shapes")
    result.assert_outcomes(passed=6, failed=2)
    result.stdout.fnmatch_lines_random([
        "FAILED *test_conformance_shape?zero-past-1024-Q4_0-gemv-1031x256?*",
        "FAILED *test_conformance_shape?wide-rows-wrong-Q4_0-gemv-5x4096?*",
        "*kernel 'zero-past-1024' (Q4_0 gemv) is not within the rounding bound of the reference: 7 of 1031 rows "
        "outside it*",
        "*first at row 1024: expected *, got 0.0 (0x00000000)*",
        "*kernel 'wide-rows-wrong' (Q4_0 gemv) is not within the rounding bound of the reference: 5 of 5 rows*",
    ])
    result.stdout.no_fnmatch_line("*Traceback*")
    assert len(re.findall(r"^_+ test_conformance_shape", result.stdout.str(), re.M)) == 2


def test_the_fixed_shapes_are_chosen_by_option_and_a_bad_one_is_a_usage_error(project):
    result = _run(project, "--quantbench", "-k", "conformance_shape", "--quantbench-shapes=none", which="shapes")
    result.assert_outcomes(skipped=1)
    result = _run(project, "--quantbench", "-k", "conformance_shape", "--quantbench-shapes=2x64,large",
                  "--collect-only", "-q", which="shapes")
    for shape in ("2x64", "one-block", "3x640", "1031x256", "5x4096", "2048x4096", "2x65536"):
        result.stdout.fnmatch_lines([f"*zero-past-1024-Q4_0-gemv-{shape}]"])
    for bad in ("3x100", "7", "", "99999x99999"):
        result = _run(project, "--quantbench", f"--quantbench-shapes={bad}", which="shapes")
        assert result.ret == pytest.ExitCode.USAGE_ERROR
        result.stderr.fnmatch_lines(["*--quantbench-shapes: *"])


def test_a_quantizer_given_importance_is_checked_byte_for_byte_naming_row_block_and_byte(project):
    result = _run(project, "--quantbench", "-k", "conformance and not gguf and not shape", which="imatrix")
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines([
        "*kernel 'unweighted' (Q5_0 quantize_imatrix) is not bit-identical to the reference (quantize_q5_0 with an "
        "importance matrix): * of * bytes differ*",
        "*first at row *, block *, byte * (*): expected 0x*, got 0x*",
        "*(-vv shows the block's float inputs)",
    ])


def test_bad_registrations_fail_and_name_the_kernel(project):
    result = _run(project, "--quantbench", "-k",
                  "conformance and not gguf and not shape and (transposer or q9 or raiser)",
                  which="bad")
    result.assert_outcomes(failed=3)
    result.stdout.fnmatch_lines_random([
        "*kernel 'transposer': unknown op 'transpose'; the ops are dequantize, quantize, quantize_imatrix, vec_dot, "
        "gemv*",
        "*kernel 'q9': unknown or unsupported qtype 'Q9_K'*",
        "*kernel 'raiser' (Q4_K dequantize) raised RuntimeError: no AVX-1024 on this CPU*",
    ])


def test_a_kernel_with_the_wrong_signature_or_that_raises_fails_in_a_line_per_test_and_is_not_timed(project):
    result = _run(project, "--quantbench", "-W", "error", "-k", "wrongsig or raiser or quantbench-numba or probe",
                  which="wrongsig")
    # wrongsig: conformance, benchmark; raiser: conformance, 3 shapes, benchmark; the built-in row, the probe
    result.assert_outcomes(failed=1 + 1 + 1 + 3 + 1, passed=2)
    result.stdout.fnmatch_lines_random([
        "kernel 'wrongsig' (Q4_K dequantize): fn(raw, scale) cannot be called as a dequantize kernel, fn(raw): "
        "missing a required argument: 'scale'",
        "raiser (Q4_K dequantize) raised RuntimeError on its first, untimed call: no AVX-1024 on this CPU; not "
        "measured",
    ])
    out = result.stdout.str()
    assert "Traceback" not in out and "was not used at all" not in out and "workloads.py" not in out
    sections = re.split(r"^_+ test_\S+ _+$", out.split("= FAILURES =")[1].split("= quantbench summary")[0], flags=re.M)
    assert len(sections) == 1 + 7 and all(len(s.strip().splitlines()) <= 12 for s in sections)
    measured = findings_measured(out)
    assert "quantbench-numba" in measured and not {"wrongsig", "raiser"} & set(measured)


def findings_measured(stdout: str) -> list[str]:
    """The kernels the summary table shows a speed for."""
    return [line.split()[2] for line in stdout.splitlines()
            if re.match(r"^Q4_K\s+dequantize\s+\S+\s+\S+\s+16x4096\s+[0-9.]+", line)]


def test_kernels_from_the_ini_option(pytester):
    pytester.makepyfile(mykernels="""
import quantbench_kernels as qk
from pytest_quantbench import Kernel
KERNELS = [Kernel(name="from-ini", qtype="Q2_K", op="gemv",
                  fn=lambda w, x: qk.gemv(w, x, "Q2_K", backend="reference"))]
""")
    pytester.makeini("[pytest]\nquantbench_kernels =\n    mykernels:KERNELS\n    nosuchmodule:X\n")
    pytester.syspathinsert()
    result = _run(pytester, "--quantbench", "-k", "conformance and not shape and (from-ini or nosuchmodule)",
                  "--hypothesis-seed=1")
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(["*quantbench_kernels line 'nosuchmodule:X': ModuleNotFoundError*"])


def test_conformance_on_every_matching_tensor_of_a_gguf_file(project):
    from pytest_quantbench.fixtures import write_tiny_gguf

    path = write_tiny_gguf(project.path / "tiny.gguf")
    truncated = project.path / "truncated.gguf"
    truncated.write_bytes(path.read_bytes()[:-700])
    # The project registers "mine": the built-ins are not tested unless asked.
    own = _run(project, "--quantbench", f"--quantbench-gguf={path}", "-k", "gguf", "-v")
    # One line per quantized format that no kernel here checks, with its counts and the reason.
    # Skipped: the 12 other formats of tiny.gguf, TQ2_0, and the decode steps, ours and llama.cpp's
    # (TQ2_0 has no gemv).
    own.assert_outcomes(passed=2, skipped=15)
    own.stdout.fnmatch_lines_random([
        "quantbench: tiny.gguf: 1 Q2_K tensors (3072 weights) not checked: no registered kernel is for Q2_K",
        "quantbench: tiny.gguf: 2 Q8_0 tensors (1408 weights) not checked: no registered kernel is for Q8_0",
        "quantbench: tiny.gguf: 1 TQ2_0 tensors (512 weights) not checked: pytest-quantbench has no TQ2_0 format yet",
    ])
    # -W error: no RuntimeWarning of the reference's inf and NaN reaches the user's run.
    result = _run(project, "--quantbench", f"--quantbench-gguf={path}", "-k", "gguf", "-v",
                  "--quantbench-builtins", "test", "-W", "error")
    # tiny.gguf has two Q4_K and two Q8_0 tensors and one of each other format: 2 per Q4_K and Q8_0
    # kernel, 1 per other; the built-ins have 5 ops per format, "mine" is a Q4_K dequantize.
    result.assert_outcomes(passed=2 * 2 * 5 + 11 * 1 * 5 + 2, skipped=3)  # TQ2_0 and the decode steps
    result.stdout.fnmatch_lines_random([
        "*test_conformance_gguf?mine-Q4_K-dequantize-tiny.gguf:blk.0.attn_output.weight? PASSED*",
        "*test_conformance_gguf?quantbench-numba-Q2_K-gemv-tiny.gguf:blk.0.ffn_down.weight? PASSED*",
        "*test_conformance_gguf?quantbench-numba-Q6_K-vec_dot-tiny.gguf:blk.0.ffn_up.weight? PASSED*",
        "*test_conformance_gguf?quantbench-numba-Q3_K-quantize-tiny.gguf:blk.0.attn_k.weight? PASSED*",
        "*test_conformance_gguf?quantbench-numba-Q5_K-dequantize-tiny.gguf:blk.0.attn_v.weight? PASSED*",
        "*test_conformance_gguf?quantbench-numba-Q5_0-gemv-tiny.gguf:blk.1.attn_q.weight? PASSED*",
        "*test_conformance_gguf?quantbench-numba-IQ4_XS-quantize-tiny.gguf:blk.1.ffn_down.weight? PASSED*",
    ])
    assert result.ret == 0
    bad = _run(project, "--quantbench", f"--quantbench-gguf={truncated}", "-k", "gguf")
    bad.assert_outcomes(failed=1, skipped=2)  # the decode steps skip: the failure is said once
    bad.stdout.fnmatch_lines(["*truncated.gguf*truncated or corrupt*"])


def test_the_old_windows_option_still_works_and_says_it_is_deprecated(project):
    result = _run(project, "--quantbench", "-k", "throughput and (mine or probe)", "--quantbench-windows=2", "-v")
    assert result.ret == 0, result.stdout.str()
    result.stdout.fnmatch_lines(["*test_throughput?mine-Q4_K-dequantize-16x4096-pass1? PASSED*",
                                 "*PytestDeprecationWarning: --quantbench-windows is deprecated*"])


def test_the_gate_refuses_missing_or_corrupt_baselines(project):
    select = ["--quantbench", "-k", "throughput and (mine or probe)", "--quantbench-fail-on=5"]
    missing = _run(project, *select, "--quantbench-compare=nothere")
    assert missing.ret == 1
    missing.stdout.fnmatch_lines(["*no stored quantbench run 'nothere'*", "*quantbench gate FAILED*"])
    (project.path / ".quantbench").mkdir(exist_ok=True)
    (project.path / ".quantbench" / "broken.json").write_text('{"version": 1, "benchm')
    corrupt = _run(project, *select, "--quantbench-compare=broken")
    assert corrupt.ret == 1
    corrupt.stdout.fnmatch_lines(["*stored run*broken.json is unreadable or corrupt*"])
    info = {"impl": "mine", "format": "Q4_K", "op": "dequantize", "size": "16x4096", "pass": 0, "weights": 65536,
            "bytes": 36864 + 262144}
    other = {"version": 1, "machine": {"cpu": "a different CPU", "cores": 2, "arch": "x86_64", "system": "Linux"},
             "benchmarks": [{"key": "mine|Q4_K|dequantize|16x4096", "info": info, "rounds": [1.0]}]}
    (project.path / ".quantbench" / "other.json").write_text(json.dumps(other))
    elsewhere = _run(project, *select, "--quantbench-compare=other")
    assert elsewhere.ret == 1
    elsewhere.stdout.fnmatch_lines(["*the baseline was measured on another machine*"])


def test_several_passes_run_pass_by_pass_and_merge_in_the_table(project):
    select = ["--quantbench", "-k", "throughput and (mine or probe)", "--quantbench-passes=2", "-v"]
    result = _run(project, *select, "--quantbench-save=two")
    assert result.ret == 0, result.stdout.str()
    order = [line.split("::")[1].split(" ")[0] for line in result.stdout.lines if line.startswith("quantbench::")]
    assert order == [
        "test_throughput[mine-Q4_K-dequantize-16x4096-pass0]",
        "test_throughput_probe[16x4096-pass0]",
        "test_throughput[mine-Q4_K-dequantize-16x4096-pass1]",
        "test_throughput_probe[16x4096-pass1]",
    ]
    assert len([line for line in result.stdout.lines if line.startswith("Q4_K   dequantize")]) == 1
    stored = json.loads((project.path / ".quantbench" / "two.json").read_text())
    assert sorted((b["info"]["impl"], b["info"]["pass"]) for b in stored["runs"][0]["benchmarks"]) == [
        ("mine", 0), ("mine", 1), ("np.copyto", 0), ("np.copyto", 1)]
    # Compared with the stored run: a verdict on the row, whichever the timings give (the first run
    # may have shared the cores with other workers' compiles: 0.14x in one cold fresh-clone run).
    again = _run(project, *select, "--quantbench-compare=two", "--quantbench-fail-on=1000")
    assert again.ret == 0, again.stdout.str()
    assert re.search(r"^mine\|Q4_K\|dequantize\|16x4096 +[0-9.]+ +\[.*\] +(same|faster|slower) +1 ",
                     again.stdout.str(), re.M), again.stdout.str()


TINY = Path(__file__).parent / "data" / "tiny.gguf"


def _copy(folder):
    # The committed file: writing it anew quantizes a tensor of every format.
    folder.mkdir(exist_ok=True)
    return Path(shutil.copy(TINY, folder / "tiny.gguf"))


def test_gguf_test_ids_do_not_depend_on_how_the_path_is_written(project):
    path = _copy(project.path / "models")
    forms = ["--quantbench-gguf=models/tiny.gguf", "--quantbench-gguf=./models/../models/tiny.gguf",
             f"--quantbench-gguf={path}"]
    ids = []
    for form in forms:
        result = _run(project, "--quantbench", form, "-k", "gguf", "--collect-only", "-q")
        ids.append(sorted(line for line in result.stdout.lines if "test_conformance_gguf" in line))
    assert ids[0] and ids[0] == ids[1] == ids[2]
    assert "quantbench::test_conformance_gguf[mine-Q4_K-dequantize-tiny.gguf:blk.0.attn_q.weight]" in ids[0]
    # Two files of one name in different folders keep apart by their folder.
    other = _copy(project.path / "other")
    both = _run(project, "--quantbench", forms[0], f"--quantbench-gguf={other}", "-k", "gguf", "--collect-only", "-q")
    both.stdout.fnmatch_lines_random(["*-models/tiny.gguf:blk.0.attn_q.weight]",
                                      "*-other/tiny.gguf:blk.0.attn_q.weight]"])


def test_a_gguf_path_outside_the_project_given_as_a_separate_word_is_a_usage_error(project, tmp_path_factory):
    # The layout that lost the project's ini and kernels: the model in a sibling folder, rootdir
    # moved to the folder above both (no warning was given, the built-ins alone ran and passed).
    elsewhere = tmp_path_factory.mktemp("models")
    path = _copy(elsewhere)
    result = _run(project, "--quantbench", "--quantbench-gguf", str(path), "-k", "gguf", "--collect-only", "-q")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([f"*--quantbench-gguf {path}: given as two words, pytest takes a path outside "
                                 f"{project.path} for a test path and moves its rootdir*"
                                 f"write --quantbench-gguf={path}"])
    inside = _copy(project.path / "models")  # inside the project: the rootdir stays, and it works
    result = _run(project, "--quantbench", "--quantbench-gguf", str(inside), "-k", "gguf", "--collect-only", "-q")
    assert result.ret == 0 and any("test_conformance_gguf[mine-" in line for line in result.stdout.lines)


def test_the_builtins_are_a_comparison_row_unless_asked_and_off_when_told(project):
    compared = _run(project, "--quantbench", "-k", "mine or probe or Q4_K-dequantize",
                    "--quantbench-baseline", "quantbench-numba")
    assert compared.ret == 0
    compared.stdout.fnmatch_lines([
        "quantbench: kernels: mine: Q4_K dequantize",
        "quantbench: built-in kernels (quantbench-numba) measured beside them, not tested*: Q4_K dequantize",
        "*x base*base*conformance",
        "Q4_K*dequantize*mine*?*16x4096*x*quantbench-numba*bit-identical (* values*, 4 tests)",
    ])
    compared.stdout.no_fnmatch_line("*test_conformance?quantbench-numba*")
    compared.stdout.no_fnmatch_line("*Name (time in*")  # pytest-benchmark's own table is off...
    off = _run(project, "--quantbench", "-k", "mine or probe", "--quantbench-builtins=off",
               "--quantbench-benchmark-table")
    assert off.ret == 0
    off.stdout.no_fnmatch_line("*quantbench-numba*")
    off.stdout.fnmatch_lines(["*Name (time in*"])  # ...unless asked for


def test_the_readme_quick_start_project_passes_conformance(pytester):
    example = Path(__file__).parents[1] / "examples" / "quickstart"
    for name in ("conftest.py", "mylib.py", "pytest.ini"):
        shutil.copy(example / name, pytester.path / name)
    pytester.syspathinsert()
    result = _run(pytester, "--quantbench", "-k", "conformance", "-W", "error")
    result.assert_outcomes(passed=2 + 2 * 4, skipped=1)  # 4 fixed shapes each; the GGUF test: no file given
    result.stdout.fnmatch_lines_random(["Q4_0*dequantize*mylib*bit-identical*", "Q8_0*dequantize*mylib*bit-identical*"])
