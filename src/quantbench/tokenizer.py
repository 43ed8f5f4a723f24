"""The SentencePiece tokenizer of a GGUF file (``tokenizer.ggml.model = "llama"``), as llama.cpp
runs it (``llm_tokenizer_spm`` in ``llama-vocab.cpp``), so that the same text gives the same ids.

1. The text is cut at user-defined tokens (in Gemma's vocabulary: runs of newlines and of spaces,
   HTML tags), longest token first, leftmost occurrence first; each is its own id. Control tokens
   (``<bos>``, ``<start_of_turn>``...) are not looked for in the text.
2. In each remaining piece, spaces become U+2581 (with one prepended where the vocabulary says
   ``add_space_prefix``), the piece is split into characters, and adjacent symbols are merged
   while their concatenation is a token: always the pair whose token has the highest score, the
   leftmost on a tie.
3. A symbol that is not a token is written as the ``<0xXX>`` tokens of its UTF-8 bytes.
``<bos>`` comes first when the vocabulary asks for it.
"""

from __future__ import annotations

import heapq
import os
from dataclasses import dataclass

from .gguf_files import read_file_header

SPACE = "\u2581"
# tokenizer.ggml.token_type values (llama.cpp's llama_token_type).
NORMAL, UNKNOWN, CONTROL, USER_DEFINED, UNUSED, BYTE = 1, 2, 3, 4, 5, 6
VOCAB_KEYS = frozenset({"tokenizer.ggml.tokens", "tokenizer.ggml.scores", "tokenizer.ggml.token_type"})


class TokenizerError(ValueError):
    """A GGUF file whose vocabulary this tokenizer cannot use (names the key and the problem)."""


@dataclass
class Tokenizer:
    """A SentencePiece vocabulary: token texts, their scores and types (ids are list indices)."""

    tokens: list[str]
    scores: list[float]
    types: list[int]
    bos: int | None
    add_bos: bool
    add_space_prefix: bool

    def __post_init__(self) -> None:
        self.ids: dict[str, int] = {}
        for i, text in enumerate(self.tokens):
            self.ids.setdefault(text, i)
        # Longest first, as llama.cpp sorts them (ties by id, which its sort leaves unspecified).
        self.user_defined = sorted((i for i, t in enumerate(self.types) if t == USER_DEFINED and self.tokens[i]),
                                   key=lambda i: (-len(self.tokens[i].encode()), i))

    @classmethod
    def from_gguf(cls, path: str | os.PathLike[str]) -> Tokenizer:
        """The vocabulary of the GGUF file at ``path``. Raises GGUFFileError for a file that cannot
        be read, TokenizerError for one without a SentencePiece vocabulary, or with one whose
        arrays disagree in length or whose ``<bos>`` id is not one of its tokens."""
        m = read_file_header(path, VOCAB_KEYS).metadata
        model = m.get("tokenizer.ggml.model")
        if model != "llama":
            raise TokenizerError(f"GGUF file {str(path)!r}: tokenizer.ggml.model is {model!r}; only SentencePiece "
                                 "('llama') vocabularies are tokenized here")
        tokens, scores, types = (m.get(k) for k in
                                 ("tokenizer.ggml.tokens", "tokenizer.ggml.scores", "tokenizer.ggml.token_type"))
        if not tokens or scores is None or types is None or not len(tokens) == len(scores) == len(types):
            sizes = {k: None if m.get(k) is None else len(m[k]) for k in sorted(VOCAB_KEYS)}
            raise TokenizerError(f"GGUF file {str(path)!r}: the vocabulary arrays are missing or differ in length "
                                 f"({sizes})")
        bos = m.get("tokenizer.ggml.bos_token_id")
        if bos is not None and not (isinstance(bos, int) and 0 <= bos < len(tokens)):
            raise TokenizerError(f"GGUF file {str(path)!r}: tokenizer.ggml.bos_token_id is {bos!r}, not an id of its "
                                 f"{len(tokens)}-token vocabulary")
        return cls(list(tokens), list(scores), list(types), bos,
                   bool(m.get("tokenizer.ggml.add_bos_token", True)),
                   bool(m.get("tokenizer.ggml.add_space_prefix", True)))

    def encode(self, text: str, add_bos: bool | None = None) -> list[int]:
        """The ids of ``text`` (with ``<bos>`` first when the vocabulary, or ``add_bos``, asks)."""
        out = [self.bos] if (self.add_bos if add_bos is None else add_bos) and self.bos is not None else []
        prev_special = True
        for piece in self._partition(text):
            if isinstance(piece, int):
                out.append(piece)
                prev_special = True
                continue
            if self.add_space_prefix and prev_special:
                piece = " " + piece
            out.extend(self._merge(piece.replace(" ", SPACE)))
            prev_special = False
        return out

    def decode(self, ids: list[int]) -> str:
        """The text of ``ids``: U+2581 as a space, byte tokens as their bytes, control tokens
        left out."""
        data = bytearray()
        for i in ids:
            kind, text = self.types[i], self.tokens[i]
            if kind == BYTE:
                data.append(int(text[3:5], 16))
            elif kind != CONTROL:
                data += text.replace(SPACE, " ").encode()
        return data.decode("utf-8", errors="replace")

    def _partition(self, text: str) -> list[str | int]:
        """``text`` cut at user-defined tokens: raw pieces (str) and token ids (int)."""
        pieces: list[str | int] = [text] if text else []
        for tid in self.user_defined:
            needle = self.tokens[tid]
            cut: list[str | int] = []
            for p in pieces:
                if isinstance(p, int) or needle not in p:
                    cut.append(p)
                    continue
                parts = p.split(needle)
                for n, part in enumerate(parts):
                    if n:
                        cut.append(tid)
                    if part:
                        cut.append(part)
            pieces = cut
        return pieces

    def _merge(self, text: str) -> list[int]:
        """SentencePiece's merges over the characters of ``text`` (already space-escaped)."""
        starts = list(range(len(text)))
        sizes = [1] * len(text)
        prev = [i - 1 for i in range(len(text))]
        nxt = [i + 1 if i + 1 < len(text) else -1 for i in range(len(text))]
        queue: list[tuple[float, int, int, int]] = []  # (-score, left, right, length)

        def push(left: int, right: int) -> None:
            if left < 0 or right < 0:
                return
            tid = self.ids.get(text[starts[left]:starts[left] + sizes[left] + sizes[right]])
            if tid is not None:
                heapq.heappush(queue, (-self.scores[tid], left, right, sizes[left] + sizes[right]))

        for i in range(1, len(text)):
            push(i - 1, i)
        while queue:
            _, left, right, size = heapq.heappop(queue)
            if sizes[left] == 0 or sizes[right] == 0 or sizes[left] + sizes[right] != size:
                continue  # one side was merged since this pair was queued
            sizes[left] += sizes[right]
            sizes[right] = 0
            nxt[left] = nxt[right]
            if nxt[right] >= 0:
                prev[nxt[right]] = left
            push(prev[left], left)
            push(left, nxt[left])
        out = []
        i = 0 if text else -1
        while i >= 0:
            symbol = text[starts[i]:starts[i] + sizes[i]]
            tid = self.ids.get(symbol)
            if tid is not None:
                out.append(tid)
            else:
                out.extend(self._byte(b) for b in symbol.encode())
            i = nxt[i]
        return out

    def _byte(self, b: int) -> int:
        tid = self.ids.get(f"<0x{b:02X}>")
        if tid is None:
            raise TokenizerError(f"the vocabulary has no byte token <0x{b:02X}> for a byte of the text")
        return tid
