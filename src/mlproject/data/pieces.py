"""Documents cut into pieces of bounded length before tokenizing, where the BPE cuts anyway.

Why: the tokenizers hold about 100 bytes per token of what they are given at once
(`tokenizers`' Encoding; its BPE trainer's pre-tokenized words), so one 21 MB JSONL line took
4 GB while the data stage promised 252 MB. Pieces of at most PIECE_CHARS characters keep every
tokenizer call, and so the memory bound, independent of the documents' lengths.

Where: a byte-level BPE (GPT-2's scheme, ours) splits text with its pre-tokenizer regex and
merges only inside those pre-tokens. In that regex a space may only lead a word, and runs of
whitespace are tokens of their own, so a whitespace character right after a non-whitespace one
always starts a pre-token: text cut there encodes, piece by piece, to exactly the ids of the
whole, and trains the same word counts. A run of PIECE_CHARS characters with no such place is
cut at its end (its ids may differ there, once in a quarter-million characters). Python
strings are code points, so no cut ever falls inside a UTF-8 character. Tokenizers of other
kinds (a `tokenizer_path` with a Metaspace pre-tokenizer) may encode a cut differently.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator

PIECE_CHARS = 1 << 18  # 256 Ki characters: at most 1 MB of UTF-8 (4 bytes a character at most)
# The last whitespace character that follows a non-whitespace one (greedy .* backtracks from the end).
_LAST_SAFE_CUT = re.compile(r".*\S([ \t\n\r])", re.DOTALL)

Piece = tuple[str, str, bool]  # (split, text, whether it ends its document)


def pieces(text: str, max_chars: int | None = None) -> Iterator[str]:
    """`text` in consecutive pieces of at most `max_chars` (default PIECE_CHARS) characters, cut
    at safe places where there are any (see the module docstring): "".join(pieces(text)) == text."""
    max_chars = max_chars or PIECE_CHARS
    start = 0
    while len(text) - start > max_chars:
        end = start + max_chars
        found = _LAST_SAFE_CUT.match(text, start, end + 1)  # a cut at `end` leaves max_chars before it
        cut = found.start(1) if found else end
        yield text[start:cut]
        start = cut
    yield text[start:] if start else text


def document_pieces(docs: Iterable[tuple[str, str]], max_chars: int | None = None) -> Iterator[Piece]:
    """(split, piece, ends_document) for each piece of each (split, text) document, in order."""
    for split, text in docs:
        parts = pieces(text, max_chars)
        piece = next(parts)
        for following in parts:
            yield split, piece, False
            piece = following
        yield split, piece, True
