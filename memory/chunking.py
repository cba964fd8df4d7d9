"""Split markdown or plain text into chunks of at most N tokens that follow the document's own structure.

Retrieval works best when a chunk is one self-contained piece of a document, so the text is cut at headings and
blank lines first; only a paragraph too long for one chunk is cut further, at line ends, then sentence ends, then
words, and (for a single enormous "word" such as a URL or base64) at token boundaries. Consecutive small paragraphs
are packed together up to the limit. A new chunk repeats the previous chunk's trailing pieces that fit in
``overlap_tokens`` (whole pieces only, never half a sentence), except after a heading, where a new section starts
clean. Tokens are counted with the offline tiktoken encoding of `model`, the same count recall budgets use, and
every returned chunk is guaranteed to be within ``chunk_tokens``.
"""

from __future__ import annotations

import re
from collections.abc import Callable

from huddle.models.tokens import count_text, encoding_for

_HEADING = re.compile(r"^#{1,6}\s")
_BLANK = re.compile(r"^\s*$")
_BLOCK_END = "\n\n"
# Finer and finer places to cut an over-long paragraph; each keeps its separator attached to a piece.
_SPLITTERS: tuple[Callable[[str], list[str]], ...] = (
    lambda text: re.split(r"(?<=\n)", text),
    lambda text: re.split(r"(?<=[.!?])(?=\s)", text),
    lambda text: re.findall(r"\s*\S+", text),
)


def _blocks(text: str) -> list[tuple[str, bool]]:
    """Paragraphs and headings in order, each with whether it is a markdown heading line."""
    blocks: list[tuple[str, bool]] = []
    lines: list[str] = []

    def flush() -> None:
        if lines:
            blocks.append(("\n".join(lines).strip(), False))
            lines.clear()

    for line in text.splitlines():
        if _BLANK.match(line):
            flush()
        elif _HEADING.match(line):
            flush()
            blocks.append((line.strip(), True))
        else:
            lines.append(line)
    flush()
    return blocks


class _Chunker:
    """One chunking pass with fixed limits; `size` is the token count of a piece as it would appear in a chunk."""

    def __init__(self, chunk_tokens: int, overlap_tokens: int, model: str) -> None:
        self.limit = chunk_tokens
        self.overlap = overlap_tokens
        self.model = model

    def size(self, text: str) -> int:
        return count_text(text.strip(), self.model)

    def pieces(self, text: str, depth: int = 0) -> list[str]:
        """`text` cut into pieces of at most `limit` tokens whose concatenation is `text`."""
        if self.size(text) <= self.limit:
            return [text]
        for split in _SPLITTERS[depth:]:
            depth += 1
            parts = [part for part in split(text) if part]
            if len(parts) > 1:
                return [piece for part in parts for piece in self.pieces(part, depth)]
        return self.windows(text)

    def windows(self, text: str) -> list[str]:
        """Hard cuts at token boundaries, for text with no whitespace or punctuation to cut at."""
        encoding = encoding_for(self.model)
        tokens = encoding.encode(text.strip(), disallowed_special=())
        windows: list[str] = []
        start = 0
        while start < len(tokens):
            end = min(start + self.limit, len(tokens))
            # Decoding a slice can split a multi-byte character, which may re-encode to more tokens: shrink until
            # the window really fits.
            while end > start + 1 and self.size(encoding.decode(tokens[start:end])) > self.limit:
                end -= 1
            windows.append(encoding.decode(tokens[start:end]))
            start = end
        if windows:  # keep the whitespace that separated this text from the piece before it
            windows[0] = text[: len(text) - len(text.lstrip())] + windows[0]
        return windows

    def tail(self, pieces: list[str]) -> list[str]:
        """The longest run of trailing pieces (never all of them) that fits in the overlap."""
        for first in range(1, len(pieces)):
            if self.size("".join(pieces[first:])) <= self.overlap:
                return pieces[first:]
        return []

    def run(self, text: str) -> list[str]:
        chunks: list[str] = []
        current: list[str] = []
        has_body = False  # whether `current` holds more than headings

        def emit() -> None:
            chunk = "".join(current).strip()
            if chunk:
                chunks.append(chunk)

        for block, is_heading in _blocks(text):
            if is_heading and has_body:
                emit()
                current, has_body = [], False
            pieces = self.pieces(block)
            pieces[-1] += _BLOCK_END
            for piece in pieces:
                if current and self.size("".join([*current, piece])) > self.limit:
                    emit()
                    current = self.tail(current)
                    if current and self.size("".join([*current, piece])) > self.limit:
                        current = []
                current.append(piece)
            has_body = has_body or not is_heading
        emit()
        return chunks


def chunk_text(text: str, *, chunk_tokens: int = 200, overlap_tokens: int = 30, model: str = "gpt-4o") -> list[str]:
    """Chunks of `text`, each at most `chunk_tokens` tokens, cut at headings and paragraphs where possible."""
    if chunk_tokens < 1:
        raise ValueError(f"chunk_tokens must be at least 1, got {chunk_tokens}")
    if not 0 <= overlap_tokens < chunk_tokens:
        raise ValueError(f"overlap_tokens must be between 0 and chunk_tokens - 1, got {overlap_tokens}")
    return _Chunker(chunk_tokens, overlap_tokens, model).run(text)
