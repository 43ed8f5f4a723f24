"""The SentencePiece tokenizer (quantbench.tokenizer), on a vocabulary small enough to
reason about; tests/test_gemma3.py checks it against llama.cpp's ids on Gemma's."""

from __future__ import annotations

from pathlib import Path

import pytest
import tiny_gemma3

from quantbench.tokenizer import SPACE, Tokenizer, TokenizerError


@pytest.fixture(scope="module")
def tok() -> Tokenizer:
    tokens, scores, types = tiny_gemma3.vocabulary()
    return Tokenizer(tokens, scores, types, bos=2, add_bos=False, add_space_prefix=False)


def texts(tok: Tokenizer, ids: list[int]) -> list[str]:
    return [tok.tokens[i] for i in ids]


def test_pairs_merge_by_score_highest_first(tok: Tokenizer) -> None:
    # "bc" outscores "ab": a + bc, not ab + c.
    assert texts(tok, tok.encode("abc")) == ["a", "bc"]


def test_a_tie_in_score_merges_the_leftmost_pair(tok: Tokenizer) -> None:
    assert texts(tok, tok.encode("aaa")) == ["aa", "a"]


def test_spaces_become_the_word_marker_and_merge_into_words(tok: Tokenizer) -> None:
    assert texts(tok, tok.encode("the cat")) == ["t", "he", f"{SPACE}cat"]
    assert texts(tok, tok.encode(" the")) == [f"{SPACE}the"]


def test_characters_outside_the_vocabulary_become_their_utf8_bytes(tok: Tokenizer) -> None:
    assert texts(tok, tok.encode("é")) == ["<0xC3>", "<0xA9>"]
    assert tok.decode(tok.encode("naïve é 東")) == "naïve é 東"


def test_user_defined_tokens_are_cut_out_first_and_control_tokens_are_plain_text(tok: Tokenizer) -> None:
    ids = tok.encode("a<b>b\nc")
    assert texts(tok, ids) == ["a", "<b>", "b", "\n", "c"]
    # <start_of_turn> is a control token: not looked for in the text, so it is spelled out.
    assert tok.tokens.index("<start_of_turn>") not in tok.encode("<start_of_turn>")


def test_bos_comes_first_when_asked_and_the_space_prefix_when_the_vocabulary_says(tok: Tokenizer) -> None:
    assert tok.encode("a", add_bos=True)[0] == 2
    prefixed = Tokenizer(tok.tokens, tok.scores, tok.types, bos=2, add_bos=True, add_space_prefix=True)
    assert texts(prefixed, prefixed.encode("the")) == ["<bos>", f"{SPACE}the"]
    assert prefixed.encode("") == [2]


def test_decoding_leaves_control_tokens_out(tok: Tokenizer) -> None:
    assert tok.decode([2] + tok.encode("the cat\n")) == "the cat\n"


def test_a_file_without_a_sentencepiece_vocabulary_is_refused(tmp_path: Path) -> None:
    import gguf

    path = tmp_path / "bpe.gguf"
    w = gguf.GGUFWriter(str(path), "gemma3")
    w.add_tokenizer_model("gpt2")
    tiny_gemma3.finish(w, path)
    with pytest.raises(TokenizerError, match="tokenizer.ggml.model is 'gpt2'"):
        Tokenizer.from_gguf(path)
    path2 = tmp_path / "broken.gguf"
    w = gguf.GGUFWriter(str(path2), "gemma3")
    w.add_tokenizer_model("llama")
    w.add_token_list(["a", "b"])
    w.add_token_scores([0.0])
    w.add_token_types([1, 1])
    tiny_gemma3.finish(w, path2)
    with pytest.raises(TokenizerError, match="differ in length"):
        Tokenizer.from_gguf(path2)


def test_a_byte_with_no_byte_token_is_named(tok: Tokenizer) -> None:
    no_bytes = Tokenizer(["a"], [0.0], [1], bos=None, add_bos=False, add_space_prefix=False)
    with pytest.raises(TokenizerError, match="no byte token <0x62>"):
        no_bytes.encode("ab")
