"""``quantbench imatrix`` and ``quantbench requantize --imatrix``: the importance of each matrix's
input columns collected through the reference forward pass, written as llama.cpp's imatrix file
(read back by libgguf as llama-quantize reads it), and used by requantize; hostile files refused
naming what is wrong. On the tiny Gemma 3 file made here (tests/tiny_gemma3.py)."""

from __future__ import annotations

import math
import struct
from pathlib import Path

import numpy as np
import pytest
import tiny_gemma3

import quantbench_kernels as qk
from quantbench import imatrix
from quantbench.cli import EXIT_BAD_FILE, main
from quantbench.gemma3 import Gemma3, rms_norm
from quantbench.gguf_files import read_tensors
from quantbench.policy import PolicyError, parse
from quantbench.requantize import requantize

IDS = [2, 5, 9, 5, 14, 3, 7]  # a token twice: its square counts twice


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_gemma3.write(tmp_path_factory.mktemp("gemma3") / "tiny.gguf")


@pytest.fixture(scope="module")
def collected(tiny: Path) -> imatrix.Importance:
    return imatrix.collect(Gemma3(tiny, context=4), IDS, dataset="ids", progress=False)


def test_each_matrix_gets_the_sum_of_its_inputs_squared_and_the_token_count(tiny: Path, collected):
    model = Gemma3(tiny, context=4)
    c, ly = model.config, model.layers[0]
    expected = np.zeros(c.n_embd, dtype=np.float32)
    for t in IDS:  # layer 0's attention input depends on the token alone, not on its position
        h = rms_norm(model.embed(t) * np.float32(math.sqrt(c.n_embd)), ly.attn_norm, c.eps)
        expected = expected + h * h
    assert np.array_equal(collected.sums["blk.0.attn_q.weight"], expected)
    assert set(collected.counts.values()) == {len(IDS)}
    for i in range(c.n_layer):  # matrices that read the same input get the same sums
        q, k, v = (collected.sums[f"blk.{i}.attn_{m}.weight"] for m in "qkv")
        assert np.array_equal(q, k) and np.array_equal(q, v)
        assert np.array_equal(collected.sums[f"blk.{i}.ffn_gate.weight"], collected.sums[f"blk.{i}.ffn_up.weight"])
    assert "token_embd.weight" in collected.sums  # the tied output matrix
    assert (collected.chunks, collected.chunk_size) == (2, 4)  # 7 tokens in chunks of the context


def test_collecting_leaves_the_model_as_it_was(tiny: Path):
    model = Gemma3(tiny, context=4)
    before = [ly.wq for ly in model.layers]
    imatrix.collect(model, IDS[:2], progress=False)
    assert [ly.wq for ly in model.layers] == before


def test_the_file_reads_back_as_llama_cpp_reads_it(tmp_path: Path, collected, libgguf):
    path = imatrix.save(collected, tmp_path / "out.imatrix")
    means = collected.means()
    for loaded in (libgguf.load_imatrix(path), imatrix.load(path)):
        assert set(loaded) == set(means)
        for name, m in means.items():
            assert np.array_equal(loaded[name], m), name


def test_llama_cpp_s_older_binary_format_is_read(tmp_path: Path, libgguf):
    values = np.array([3.0, 6.0, 0.0], dtype=np.float32)
    name = b"blk.0.attn_q.weight"
    data = struct.pack("<ii", 1, len(name)) + name + struct.pack("<ii", 3, 3) + values.tobytes()
    data += struct.pack("<i", 7) + struct.pack("<i", 4) + b"text"  # last call, dataset
    path = tmp_path / "old.dat"
    path.write_bytes(data)
    assert np.array_equal(imatrix.load(path)["blk.0.attn_q.weight"], values / 3)
    assert np.array_equal(libgguf.load_imatrix(path)["blk.0.attn_q.weight"], values / 3)


@pytest.mark.parametrize("content, message", [
    (b"", "ends at byte 0"),
    (struct.pack("<i", 0), "0 entries: not llama.cpp's binary imatrix format"),
    (struct.pack("<ii", 1, 5) + b"blk.0", "ends at byte 13, inside an entry"),
    (struct.pack("<ii", 1, -3), "entry 0's name is -3 bytes long"),
    (struct.pack("<ii", 1, 1) + b"w" + struct.pack("<ii", 1, 0), "entry 'w' has 0 values"),
    (b"GGUF" + b"\x03\x00\x00\x00" + b"\x00" * 3, "is not an importance matrix llama.cpp writes"),
])
def test_a_file_that_is_not_an_imatrix_is_refused_naming_what_is_wrong(tmp_path: Path, content: bytes, message):
    path = tmp_path / "bad.imatrix"
    path.write_bytes(content)
    with pytest.raises(imatrix.ImatrixError, match=message):
        imatrix.load(path)


def test_a_missing_or_special_file_is_refused(tmp_path: Path):
    import os

    with pytest.raises(imatrix.ImatrixError, match="No such file"):
        imatrix.load(tmp_path / "none.imatrix")
    with pytest.raises(imatrix.ImatrixError, match="is a directory, not a file"):
        imatrix.load(tmp_path)
    fifo = tmp_path / "pipe.imatrix"
    os.mkfifo(fifo)  # opening it would block until a writer came
    with pytest.raises(imatrix.ImatrixError, match="is not a regular file \\(a pipe, socket or device\\)"):
        imatrix.load(fifo)


def test_a_write_that_fails_leaves_no_file_and_the_old_one_as_it_was(tmp_path: Path, collected, monkeypatch):
    path = imatrix.save(collected, tmp_path / "out.imatrix")
    before = path.read_bytes()

    def broken(self, *args, **kwargs):  # a full disk, or Ctrl-C, in the middle of the tensors
        raise KeyboardInterrupt

    monkeypatch.setattr(imatrix.gguf.GGUFWriter, "write_tensors_to_file", broken)
    with pytest.raises(KeyboardInterrupt):
        imatrix.save(collected, path)
    with pytest.raises(KeyboardInterrupt):
        imatrix.save(collected, tmp_path / "new.imatrix")
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.imatrix"]


def test_nothing_collected_or_no_place_to_write_is_refused(tmp_path: Path, collected):
    with pytest.raises(imatrix.ImatrixError, match="nothing to write"):
        imatrix.save(imatrix.Importance(), tmp_path / "x.imatrix")
    with pytest.raises(imatrix.ImatrixError, match="give a file's path in an existing directory"):
        imatrix.save(collected, tmp_path / "no" / "x.imatrix")


def test_requantize_weights_each_matrix_by_its_entry(tiny: Path, tmp_path: Path, collected):
    file = imatrix.save(collected, tmp_path / "out.imatrix")
    policy = parse("blk.0.attn_q.weight=Q4_0,*=keep")
    requantize(tiny, tmp_path / "plain.gguf", policy, progress=False)
    requantize(tiny, tmp_path / "weighted.gguf", policy, progress=False, imatrix=file)
    weights = {t.name: t for t in read_tensors(tiny)}["blk.0.attn_q.weight"].to_float32()
    expected = qk.quantize(weights, "Q4_0", imatrix=imatrix.load(file)["blk.0.attn_q.weight"], backend="reference")
    plain = {t.name: t for t in read_tensors(tmp_path / "plain.gguf")}["blk.0.attn_q.weight"]
    weighted = {t.name: t for t in read_tensors(tmp_path / "weighted.gguf")}["blk.0.attn_q.weight"]
    assert np.array_equal(np.asarray(weighted.raw), expected)
    assert not np.array_equal(np.asarray(weighted.raw), np.asarray(plain.raw))


def test_requantize_names_a_matrix_the_imatrix_lacks(tiny: Path, tmp_path: Path, collected):
    partial = imatrix.Importance({"blk.0.attn_q.weight": collected.sums["blk.0.attn_q.weight"]},
                                 {"blk.0.attn_q.weight": len(IDS)}, "ids", 1, 8)
    file = imatrix.save(partial, tmp_path / "partial.imatrix")
    with pytest.raises(PolicyError, match="has no entry for 'blk.0.attn_k.weight' \\(1 entries\\), which the policy "
                                          "requantizes to Q4_0"):
        requantize(tiny, tmp_path / "out.gguf", parse("blk.0.attn_*=Q4_0,*=keep"), progress=False, imatrix=file)
    assert not (tmp_path / "out.gguf").exists()


def test_the_commands_end_to_end(tiny: Path, tmp_path: Path, capsys, libgguf):
    text = tmp_path / "text.txt"
    text.write_text("the quick brown fox jumps over the lazy dog")
    out = tmp_path / "tiny.imatrix"
    assert main(["imatrix", str(tiny), "--text", str(text), "-o", str(out), "--tokens", "6", "--no-progress"]) == 0
    assert "the importance of 43 matrices over 6 tokens of text.txt" in capsys.readouterr().out
    assert set(libgguf.load_imatrix(out)) == set(imatrix.load(out))
    assert main(["requantize", str(tiny), str(tmp_path / "q.gguf"), "--policy", "blk.*=Q4_K,*=keep",
                 "--imatrix", str(out), "--no-progress"]) == 0
    assert main(["requantize", str(tiny), str(tmp_path / "r.gguf"), "--policy", "blk.*=Q4_K,*=keep",
                 "--imatrix", str(text), "--no-progress"]) == EXIT_BAD_FILE
    assert "entries: not llama.cpp's binary imatrix format" in capsys.readouterr().err  # a text file
    assert main(["imatrix", str(tiny), "--text", str(tmp_path / "none.txt"), "-o", str(out)]) == EXIT_BAD_FILE
    assert "the text" in capsys.readouterr().err


def test_compare_policies_puts_each_policy_with_and_without_the_imatrix_side_by_side(tiny: Path, tmp_path: Path,
                                                                                      collected):
    from quantbench import compare_policies

    file = imatrix.save(collected, tmp_path / "out.imatrix")
    rows, tokens = compare_policies.compare_policies(tiny, tmp_path, policies={"shipped": "*=keep", "q4": "blk.*=Q4_0"},
                                                     max_tokens=8, repeats=1, progress=False, imatrix=file)
    by = {r.policy: r for r in rows}
    assert list(by) == ["shipped", "q4", "q4+imatrix"]
    assert by["q4"].file_bytes == by["q4+imatrix"].file_bytes and by["q4"].types == by["q4+imatrix"].types
    assert by["q4"].mean_kl != by["q4+imatrix"].mean_kl  # other bytes, other logits
    table = compare_policies.markdown(rows, tiny.name, tokens, 1, file.name)
    assert "Policies marked +imatrix were requantized with the importance matrix `out.imatrix`" in table
    made = compare_policies.write(rows, tmp_path, tiny.name, tokens, 1, file.name)
    assert [p.name for p in made] == ["policies.md", "policies.json", "policies.png"]
    assert made[2].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_written_files_get_the_mode_a_new_file_gets(tmp_path: Path, collected):
    import os

    mask = os.umask(0o022)
    try:
        path = imatrix.save(collected, tmp_path / "out.imatrix")
    finally:
        os.umask(mask)
    assert path.stat().st_mode & 0o777 == 0o644
