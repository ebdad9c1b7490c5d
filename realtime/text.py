"""Text helpers of the response and transcription paths: speakable chunks, stable prefixes."""

from __future__ import annotations

import re

_SENTENCE_END = re.compile(r"[.!?…]+[\"')\]]*\s+|\n+")
_CLAUSE_END = re.compile(r"[,;:—]\s+")


class SpeechChunker:
    """Cuts streamed LLM text into pieces worth sending to TTS as soon as they are complete.

    A piece ends at a sentence end; a long run without one is cut at a clause boundary. The
    first piece is cut early (at a clause, once ``first_min_chars`` are in), because the first
    audio is what the listener waits for.
    """

    def __init__(self, first_min_chars: int = 12, clause_min_chars: int = 60) -> None:
        self._buffer = ""
        self._first = True
        self._first_min = first_min_chars
        self._clause_min = clause_min_chars

    def push(self, text: str) -> list[str]:
        self._buffer += text
        pieces: list[str] = []
        while True:
            cut = self._find_cut()
            if cut is None:
                return pieces
            piece, self._buffer = self._buffer[:cut], self._buffer[cut:]
            if piece.strip():
                pieces.append(piece)
                self._first = False

    def _find_cut(self) -> int | None:
        match = _SENTENCE_END.search(self._buffer)
        if match:
            return match.end()
        min_chars = self._first_min if self._first else self._clause_min
        if len(self._buffer) >= min_chars:
            clauses = list(_CLAUSE_END.finditer(self._buffer))
            candidates = [m.end() for m in clauses if m.end() >= min(min_chars, 8)]
            if candidates:
                return candidates[-1] if not self._first else candidates[0]
        return None

    def flush(self) -> list[str]:
        piece, self._buffer = self._buffer, ""
        return [piece] if piece.strip() else []


_LINK = re.compile(r"\[([^\]]*)\]\([^)]*\)")
_LIST_MARKER = re.compile(r"(?m)^\s*(?:[-*+•]|\d+[.)])\s+")
_HEADING = re.compile(r"(?m)^\s*#{1,6}\s*")
_MARKUP = re.compile(r"[*_`~>|]+")
_SPACES = re.compile(r"[ \t]{2,}")


def clean_for_speech(text: str) -> str:
    """Text as it should be spoken: markdown links, emphasis, headings and list markers gone.

    Leading and trailing whitespace is kept so that transcript pieces still join up.
    """
    lead = text[: len(text) - len(text.lstrip())]
    trail = text[len(text.rstrip()) :]
    body = _LINK.sub(r"\1", text.strip())
    body = _HEADING.sub("", body)
    body = _LIST_MARKER.sub("", body)
    body = _MARKUP.sub("", body)
    body = _SPACES.sub(" ", body).strip()
    return f"{lead}{body}{trail}" if body else ""
