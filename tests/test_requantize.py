"""Quantization policies, ``quantbench requantize`` and ``quantbench compare-policies``, on a tiny
Gemma 3 file made here (tests/tiny_gemma3.py); one real requantization of Gemma 3 270M with the
``[models]`` extra."""

from __future__ import annotations

import json
import os
import stat
import sys
from pathlib import Path

import gguf
import numpy as np
import pytest
import tiny_gemma3

import quantbench_kernels as qk
from quantbench import compare_policies
from quantbench import requantize as rq
from quantbench.cli import main
from quantbench.gguf_files import GGUFFileError, read_tensors
from quantbench.gguf_header import read_header
from quantbench.policy import FALLBACK, PRESETS, PolicyError, parse, plan


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_gemma3.write(tmp_path_factory.mktemp("gemma3") / "tiny.gguf")


# --- policies -----------------------------------------------------------------------------------

def test_the_first_matching_rule_wins_and_unmatched_matrices_are_kept() -> None:
    p = parse("blk.*.attn_*=Q4_K,blk.*=Q2_K")
    assert p.choose("blk.3.attn_q.weight") == "Q4_K"
    assert p.choose("blk.3.ffn_up.weight") == "Q2_K"
    assert p.choose("token_embd.weight") == "keep"


@pytest.mark.parametrize("text, message", [
    ("", "empty policy"),
    ("blk.*", r"rule 1 \('blk.\*'\) is not GLOB=TYPE"),
    ("blk.*=Q4_K,=Q2_K", r"rule 2 \('=Q2_K'\) is not GLOB=TYPE"),
    ("*=Q9_K", "'Q9_K' is not a type this package quantizes to; use one of IQ4_NL"),
    ("*=Q8_K", "'Q8_K' is not a type this package quantizes to"),  # an activation format
])
def test_a_bad_policy_is_refused_naming_the_rule(text: str, message: str) -> None:
    with pytest.raises(PolicyError, match=message):
        parse(text)


def test_norms_are_never_requantized_and_short_rows_fall_back_as_llama_quantize_does(tiny: Path) -> None:
    choices = {c.tensor.name: c for c in plan(read_tensors(tiny), parse("*=Q2_K"))}
    assert choices["blk.0.attn_norm.weight"].target == "F32" and not choices["blk.0.attn_norm.weight"].changed
    assert choices["blk.0.attn_q.weight"].target == "Q2_K" and choices["blk.0.attn_q.weight"].requested is None
    down = choices["blk.0.ffn_down.weight"]  # rows of 384 weights
    assert (down.target, down.requested) == (FALLBACK["Q2_K"], "Q2_K") == ("IQ4_NL", "Q2_K")


def test_llama_cpp_s_mixes_choose_per_tensor_and_layer_as_its_llama_tensor_get_type(tiny: Path) -> None:
    q2 = {c.tensor.name: c for c in plan(read_tensors(tiny), parse("llama-Q2_K"))}
    q3m = {c.tensor.name: c for c in plan(read_tensors(tiny), parse("llama-Q3_K_M"))}
    assert [q2[f"blk.3.{m}.weight"].target for m in ("attn_q", "attn_v", "attn_output", "ffn_up")] == \
        ["Q2_K", "Q4_K", "Q3_K", "Q2_K"]
    assert (q2["blk.3.ffn_down.weight"].requested, q2["blk.3.ffn_down.weight"].target) == ("Q3_K", "IQ4_NL")
    assert [q3m[f"blk.{i}.attn_v.weight"].target for i in range(4)] == ["Q5_K", "Q5_K", "Q4_K", "Q4_K"]
    assert [q3m[f"blk.{i}.ffn_down.weight"].requested for i in range(3)] == ["Q5_K", "Q4_K", "Q4_K"]
    assert [q3m[f"blk.5.{m}.weight"].target for m in ("attn_k", "attn_output", "ffn_gate")] == ["Q3_K", "Q4_K", "Q3_K"]
    assert q2["token_embd.weight"].target == q3m["token_embd.weight"].target == "Q8_0"  # kept as shipped


def test_every_format_is_decoded_for_requantizing_and_one_that_cannot_be_is_named(tmp_path: Path) -> None:
    mixed = Path(__file__).parent / "data" / "tiny.gguf"  # a tensor in every format, and TQ2_0
    with pytest.raises(PolicyError, match="'blk.1.ffn_up_exps.weight' is TQ2_0, which this package cannot decode"):
        rq.requantize(mixed, tmp_path / "out.gguf", parse("*=Q8_0"), progress=False)
    choices = rq.requantize(mixed, tmp_path / "out.gguf", parse("*exps*=keep,*=Q8_0"), progress=False)
    sources = {c.source for c in choices if c.target == "Q8_0"}
    assert {"Q2_K", "Q3_K", "Q4_K", "Q5_K", "Q6_K", "Q4_0", "Q4_1", "Q5_0", "Q5_1", "IQ4_NL", "IQ4_XS",
            "F16"} <= sources
    written = {t.name: t for t in read_tensors(tmp_path / "out.gguf")}
    for c in choices:
        if c.changed:
            assert np.array_equal(np.asarray(written[c.tensor.name].raw), qk.quantize(c.tensor.to_float32(), "Q8_0"))


def test_a_written_rule_that_matches_no_tensor_is_refused_naming_it(tiny: Path) -> None:
    tensors = read_tensors(tiny)
    with pytest.raises(PolicyError, match=r"policy rule 2 \(attn_\*=Q4_K\) matches no tensor of the file "
                                          r"\(its tensors are named like output_norm.weight, token_embd.weight, "):
        plan(tensors, parse("blk.*=Q8_0,attn_*=Q4_K"))
    plan(tensors, parse("*attn_*=Q4_K"))  # the glob matches whole names
    for preset in PRESETS:  # a preset's rules are written for several families: some match nothing here
        plan(tensors, parse(preset))


def test_rows_that_fit_neither_the_type_nor_its_fallback_are_refused(tiny: Path) -> None:
    t = read_tensors(tiny)
    odd = [x for x in t if x.name == "blk.0.ffn_down.weight"][0]
    narrow = type(odd)(odd.name, odd.qtype, (odd.shape[0], 48), odd.raw)  # 48: not a multiple of 32
    with pytest.raises(PolicyError, match="rows of 48 weights: neither Q4_K nor its fallback Q5_0"):
        plan([narrow], parse("*=Q4_K"))


# --- requantize -----------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def requantized(tiny: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list]:
    out = tmp_path_factory.mktemp("rq") / "mix.gguf"
    return out, rq.requantize(tiny, out, parse("attn-Q4_K-ffn-Q2_K"), progress=False)


def test_the_written_file_holds_the_promised_type_per_tensor_and_all_metadata(tiny: Path, requantized) -> None:
    out, choices = requantized
    reader, original = gguf.GGUFReader(out), gguf.GGUFReader(tiny)
    assert [(t.name, t.tensor_type.name) for t in reader.tensors] == [(c.tensor.name, c.target) for c in choices]
    assert [list(t.shape) for t in reader.tensors] == [list(t.shape) for t in original.tensors]
    kinds = {(c.source, c.target, c.requested) for c in choices if c.tensor.name.startswith("blk.0.")}
    assert ("Q8_0", "IQ4_NL", "Q2_K") in kinds  # ffn_down: rows of 384
    assert ("Q4_K", "Q2_K", None) in kinds  # ffn_up
    assert ("Q5_0", "Q4_K", None) in kinds  # attn_k
    for key, field in original.fields.items():
        if key.startswith("GGUF.") or key == "general.file_type":
            continue
        assert reader.fields[key].contents() == field.contents(), key
    # Requantized per layer: 196,608 weights to Q2_K (ffn_gate, ffn_up), 131,072 to Q4_K (attn_k,
    # attn_v, attn_output; attn_q was Q4_K already), 98,304 to IQ4_NL (ffn_down).
    assert reader.fields["general.file_type"].contents() == gguf.LlamaFileType.MOSTLY_Q2_K


def test_requantized_tensors_decode_to_the_requantized_values_and_kept_ones_are_byte_identical(
        tiny: Path, requantized) -> None:
    out, choices = requantized
    written = {t.name: t for t in read_tensors(out)}
    for c in choices:
        new = written[c.tensor.name]
        if not c.changed:
            assert np.array_equal(np.asarray(new.raw), np.asarray(c.tensor.raw)), c.tensor.name
            continue
        expected = qk.quantize(c.tensor.to_float32(), c.target)
        assert np.array_equal(np.asarray(new.raw), expected), c.tensor.name
        assert np.array_equal(qk.dequantize(np.asarray(new.raw), c.target), qk.dequantize(expected, c.target))


def test_a_custom_alignment_is_kept(tmp_path: Path) -> None:
    src = tiny_gemma3.write(tmp_path / "aligned.gguf", alignment=256)
    out = tmp_path / "out.gguf"
    rq.requantize(src, out, parse("all-Q2_K"), progress=False)
    reader = gguf.GGUFReader(out)
    assert reader.alignment == 256 and reader.fields["general.alignment"].contents() == 256
    assert all(t.data_offset % 256 == 0 for t in reader.tensors)
    assert [t.tensor_type.name for t in reader.tensors][:3] == ["F32", "Q8_0", "F32"]


def test_llama_cpps_own_gguf_loader_reads_the_written_file(requantized) -> None:
    ggml = pytest.importorskip("ggml", reason="ggml-python (a test extra) is not installed")
    out, choices = requantized
    params = ggml.gguf_init_params(no_alloc=True, ctx=None)
    ctx = ggml.gguf_init_from_file(str(out).encode(), params)
    assert ctx, "ggml's gguf_init_from_file refused the file"
    try:
        assert ggml.gguf_get_n_tensors(ctx) == len(choices)
        for i, c in enumerate(choices):
            assert ggml.gguf_get_tensor_name(ctx, i).decode() == c.tensor.name
            assert ggml.gguf_get_tensor_type(ctx, i) == gguf.GGMLQuantizationType[c.target].value
    finally:
        ggml.gguf_free(ctx)


def test_an_interrupted_run_leaves_the_old_output_and_no_partial_file(tiny: Path, tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "out.gguf"
    out.write_bytes(b"the previous output")
    real, calls = rq.encode, []

    def interrupted(choice, threads=None, importance=None):  # type: ignore[no-untyped-def]
        calls.append(choice)
        if len(calls) == 20:
            raise KeyboardInterrupt
        return real(choice, threads, importance)

    monkeypatch.setattr(rq, "encode", interrupted)
    with pytest.raises(KeyboardInterrupt):
        rq.requantize(tiny, out, parse("all-Q4_K"), progress=False)
    assert out.read_bytes() == b"the previous output"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.gguf"]


def test_concurrent_runs_to_one_output_leave_one_whole_file(tiny: Path, tmp_path: Path) -> None:
    import concurrent.futures

    out = tmp_path / "out.gguf"
    policies = ["all-Q4_K", "all-Q2_K", "attn-Q4_K-ffn-Q2_K", "attn-Q2_K-ffn-Q4_K"]
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        list(pool.map(lambda p: rq.requantize(tiny, out, parse(p), progress=False), policies))
    singles = {}
    for p in policies:
        rq.requantize(tiny, tmp_path / f"{p}.gguf", parse(p), progress=False)
        singles[p] = (tmp_path / f"{p}.gguf").read_bytes()
    assert out.read_bytes() in singles.values()  # one run's whole file, not a mix
    assert not list(tmp_path.glob(".*partial"))


@pytest.mark.parametrize("where, message", [
    ("same", "is the input file itself"),
    ("dir", "is a directory"),
    ("nodir", "does not exist"),
])
def test_an_unusable_output_is_refused_before_anything_is_written(tiny: Path, tmp_path: Path, where: str,
                                                                  message: str) -> None:
    dst = {"same": tiny, "dir": tmp_path, "nodir": tmp_path / "missing" / "out.gguf"}[where]
    before = tiny.read_bytes()
    with pytest.raises(GGUFFileError, match=message):
        rq.requantize(tiny, dst, parse("all-Q4_K"), progress=False)
    assert tiny.read_bytes() == before


def test_a_tensor_with_non_finite_weights_is_named(tiny: Path, tmp_path: Path) -> None:
    bad = tmp_path / "nan.gguf"
    data = bytearray(tiny.read_bytes())
    # ffn_down is Q8_0: its first block's scale d is the tensor's first 2 bytes.
    offset = next(t.offset for t in read_header(tiny).tensors if t.name == "blk.0.ffn_down.weight")
    data[offset:offset + 2] = np.float16(np.nan).tobytes()
    bad.write_bytes(bytes(data))
    with pytest.raises(PolicyError, match=r"'blk.0.ffn_down.weight' \(Q8_0\) holds a non-finite weight \(weight 0"):
        rq.requantize(bad, tmp_path / "out.gguf", parse("blk.0.ffn_down*=Q4_0,*=keep"), progress=False)
    assert not (tmp_path / "out.gguf").exists()


def test_the_command_prints_what_changed_and_exits_2_on_a_bad_file_or_policy(tiny: Path, tmp_path: Path,
                                                                           capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "q.gguf"
    assert main(["requantize", str(tiny), str(out), "--policy", "blk.*.ffn_down*=Q6_K,*=keep", "--no-progress"]) == 0
    printed = capsys.readouterr().out
    assert "6 x Q8_0 -> Q8_0 (fell back from Q6_K): blk.0.ffn_down.weight" in printed
    assert main(["requantize", str(tmp_path / "none.gguf"), str(out), "--policy", "*=keep", "--no-progress"]) == 2
    assert "cannot be read" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_:
        main(["requantize", str(tiny), str(out), "--policy", "*=Q7"])
    assert exit_.value.code == 2
    assert "'Q7' is not a type this package quantizes to" in capsys.readouterr().err


# --- compare-policies -----------------------------------------------------------------------------

def test_compare_policies_writes_the_table_json_and_plot(tiny: Path, tmp_path: Path) -> None:
    rows, tokens = compare_policies.compare_policies(tiny, tmp_path, max_tokens=24, repeats=1, progress=False)
    assert tokens == 24
    by = {r.policy: r for r in rows}
    assert list(by) == list(PRESETS)
    base = by["shipped"]
    assert base.mean_kl == pytest.approx(0, abs=1e-12) and base.top1_agreement == 1
    assert all(r.mean_kl > 0 and r.p99_kl >= r.mean_kl for n, r in by.items() if n != "shipped")
    # Two bits per k-quant-able weight cost more than four (the tiny model's FFN falls back either way).
    assert by["all-Q2_K"].mean_kl > by["all-Q4_K"].mean_kl
    assert by["all-Q2_K"].block_bits_per_weight < by["all-Q4_K"].block_bits_per_weight
    assert by["all-Q2_K"].fell_back == 6  # every ffn_down
    made = compare_policies.write(rows, tmp_path, tiny.name, tokens, 1)
    table = (tmp_path / "policies.md").read_text()
    assert all(f"| {name} |" in table for name in PRESETS) and "itself quantized" in table
    assert [r["policy"] for r in json.loads((tmp_path / "policies.json").read_text())["rows"]] == list(PRESETS)
    assert (tmp_path / "policies.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert sorted(p.name for p in made) == ["policies.json", "policies.md", "policies.png"]
    assert not list(tmp_path.glob(".*partial*"))


def test_the_compare_command_writes_its_files_and_exits_2_on_a_bad_file(tiny: Path, tmp_path: Path,
                                                                       capsys: pytest.CaptureFixture) -> None:
    assert main(["compare-policies", str(tiny), "--out", str(tmp_path), "--tokens", "8", "--no-progress"]) == 0
    assert "| attn-Q2_K-ffn-Q4_K |" in capsys.readouterr().out
    assert (tmp_path / "policies.png").exists()
    assert main(["compare-policies", str(tiny), "--out", str(tmp_path / "mine"), "--tokens", "8", "--no-progress",
                 "--policy", "mine:blk.*=Q8_0,*=keep", "--policy", "q6:blk.*=Q6_K,*=keep"]) == 0
    table = (tmp_path / "mine" / "policies.md").read_text()
    assert "| shipped |" in table and "| mine |" in table and "| q6 |" in table and "all-Q2_K" not in table
    for bad, message in (("no-colon", "expected NAME:RULES"), ("bad name:*=keep", "expected NAME:RULES"),
                         ("x:*=Q7", "'Q7' is not a type this package quantizes to"),
                         ("shipped:*=Q8_0", "'shipped' names the file as it is")):
        with pytest.raises(SystemExit):
            main(["compare-policies", str(tiny), "--policy", bad])
        assert message in capsys.readouterr().err
    assert main(["compare-policies", str(tiny), "--out", str(tmp_path / "one"), "--tokens", "1", "--no-progress"]) == 2
    assert "the text is 1 token(s): quality needs at least 2" in capsys.readouterr().err
    assert not (tmp_path / "one").exists()  # refused before requantizing
    # The whole study text is 2,637 tokens of the tiny vocabulary, past its context of 64.
    assert main(["compare-policies", str(tiny), "--out", str(tmp_path / "long"), "--no-progress"]) == 2
    assert "at most the model's context of 64" in capsys.readouterr().err
    (tmp_path / "a-file").write_text("")
    assert main(["compare-policies", str(tiny), "--out", str(tmp_path / "a-file"), "--tokens", "8",
                 "--no-progress"]) == 2
    assert "a-file" in capsys.readouterr().err
    junk = tmp_path / "junk.gguf"
    junk.write_bytes(b"GGUF" + bytes(3))
    assert main(["compare-policies", str(junk), "--out", str(tmp_path / "j"), "--no-progress"]) == 2
    assert "truncated or corrupt" in capsys.readouterr().err


def test_compare_policies_refuses_a_model_it_cannot_run_before_writing_anything(tiny: Path, tmp_path: Path) -> None:
    other = tiny_gemma3.with_architecture(tiny, tmp_path / "llama.gguf", "llama3")
    with pytest.raises(GGUFFileError, match="is a 'llama3' model"):
        compare_policies.compare_policies(other, tmp_path / "out", progress=False)
    assert not (tmp_path / "out").exists()


def test_compare_policies_needs_the_shipped_baseline(tiny: Path, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="must include 'shipped'"):
        compare_policies.compare_policies(tiny, tmp_path, policies={"q4": "*=Q4_K"}, progress=False)


def test_gemma_requantized_under_a_preset_holds_the_promised_types(gemma_path: str, tmp_path: Path) -> None:
    out = tmp_path / "gemma.attn-Q2_K.gguf"
    choices = rq.requantize(gemma_path, out, parse("blk.*.attn_output*=Q2_K,*=keep"), progress=False)
    changed = [c for c in choices if c.changed]
    assert len(changed) == 18 and {(c.source, c.target) for c in changed} == {("Q4_K", "Q2_K")}
    written = {t.name: t for t in read_tensors(out)}
    for c in changed[:3]:
        assert np.array_equal(np.asarray(written[c.tensor.name].raw), qk.quantize(c.tensor.to_float32(), "Q2_K"))
    assert sum(t.raw.nbytes for t in written.values()) < sum(c.tensor.raw.nbytes for c in choices)


def test_compare_policies_without_matplotlib_says_so_before_any_work(tiny: Path, tmp_path: Path, monkeypatch,
                                                                    capsys) -> None:
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib: ImportError
    assert main(["compare-policies", str(tiny), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err == ("quantbench compare-policies: it draws its plot with matplotlib, which is not installed "
                   "(pip install 'pytest-quantbench[models]')\n")
    assert not (tmp_path / "out").exists()  # nothing was requantized


@pytest.mark.parametrize("where", ["name too long", "no such folder", "a folder"])
def test_requantize_to_where_it_cannot_write_is_one_line_and_leaves_nothing(tiny: Path, tmp_path: Path, capsys,
                                                                           where: str) -> None:
    dst = {"name too long": tmp_path / ("x" * 250 + ".gguf"), "no such folder": tmp_path / "none" / "out.gguf",
           "a folder": tmp_path}[where]
    before = sorted(tmp_path.iterdir())
    assert main(["requantize", str(tiny), str(dst), "--policy", "all-Q4_K", "--no-progress"]) == 2
    out = capsys.readouterr()
    said = {"name too long": f"cannot write {str(dst)!r}: File name too long",
            "no such folder": f"output {str(dst)!r}: its directory {str(dst.parent)!r} does not exist",
            "a folder": f"output {str(dst)!r} is a directory: give a new file's path"}[where]
    assert out.out == "" and out.err == f"quantbench requantize: {said}\n", out.err
    assert sorted(tmp_path.iterdir()) == before  # no temporary file left


@pytest.mark.parametrize("kind", ["fifo", "link"])
def test_requantize_never_replaces_a_pipe_or_a_link_at_its_output(tiny: Path, tmp_path: Path, capsys,
                                                                 kind: str) -> None:
    dst, target = tmp_path / "out.gguf", tmp_path / "target"
    target.write_bytes(b"kept")
    os.mkfifo(dst) if kind == "fifo" else dst.symlink_to(target)
    assert main(["requantize", str(tiny), str(dst), "--policy", "all-Q4_K", "--no-progress"]) == 2
    assert capsys.readouterr().err == (f"quantbench requantize: output {str(dst)!r} is not a regular file (a link, "
                                       "directory, pipe or device): it is left as it is; give a new file's path\n")
    assert (stat.S_ISFIFO(dst.lstat().st_mode) if kind == "fifo" else dst.readlink() == target)
    assert target.read_bytes() == b"kept" and sorted(p.name for p in tmp_path.iterdir()) == ["out.gguf", "target"]


# A process that opens OUT's temporary file as a requantize run does, says so, and waits to be killed.
_KILLED_MIDWAY = """
import sys, time
from pathlib import Path
from quantbench.gguf_files import replacing
with replacing(Path(sys.argv[1])) as tmp:
    tmp.write_bytes(b"half a model" * 1000)
    print("writing", flush=True)
    time.sleep(60)
"""


def _killed_midway(out: Path) -> int:
    """Start a writer of ``out``, SIGKILL it while its temporary file exists; its process id."""
    import signal
    import subprocess

    child = subprocess.Popen([sys.executable, "-c", _KILLED_MIDWAY, str(out)], stdout=subprocess.PIPE, text=True)
    assert child.stdout.readline().strip() == "writing"
    child.send_signal(signal.SIGKILL)
    child.wait(timeout=30)
    return child.pid


def test_the_next_run_removes_a_killed_runs_temporary_file_and_says_so(tiny: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "out.gguf"
    dead = _killed_midway(out)
    stale = [p.name for p in tmp_path.iterdir()]
    assert len(stale) == 1 and stale[0].startswith(f".out.gguf.{dead}.") and stale[0].endswith(".partial")
    live = tmp_path / f".out.gguf.{os.getpid()}.abcdefgh.partial"  # a run still going: kept
    live.write_bytes(b"busy")
    planted = tmp_path / f".out.gguf.{dead}.zzzzzzzz.partial"  # a link at a stale name: never followed, kept
    target = tmp_path / "target.txt"
    target.write_text("keep me")
    planted.symlink_to(target)
    assert main(["requantize", str(tiny), str(out), "--policy", "all-Q4_K"]) == 0
    err = capsys.readouterr().err
    assert f"quantbench: removed {tmp_path / stale[0]} (12000 bytes), the temporary file of a run that was killed " \
           f"(process {dead} is gone)" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["out.gguf", live.name, planted.name, "target.txt"])
    assert target.read_text() == "keep me" and read_header(out).tensors
