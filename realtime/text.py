"""Text helpers of the response and transcription paths: speakable chunks, stable prefixes."""

from __future__ import annotations

import re

_SENTENCE_END = re.compile(r"[.!?…]+[\"')\]]*\s+|\n+")
_CLAUSE_END = re.compile(r"[,;:—]\s+")
_WORD = re.compile(r"\S+(?=\s)")


#: words after which the first piece is not cut: it would end on a word that leads into the
#: next (an article, a preposition, a conjunction, an auxiliary), which sounds broken off
_LEADING_WORDS = frozenset(
    "a an the this that these those my your his her its our their some any no every each "
    "of to in on at by for from with about into over under after before between through as "
    "and or but nor so if than then when while because although though whether where which who "
    "whom whose what is are was were be been being am do does did have has had will would can "
    "could shall should may might must not very more most also just there "
    "i you we they he she it's i'm i'll i'd i've you're you'll you've we're we'll we've "
    "they're they'll he's she's that's there's what's don't doesn't didn't can't won't isn't "
    "aren't wasn't weren't "
    "one two three four five six seven eight nine ten eleven twelve twenty thirty forty fifty "
    "hundred thousand million billion".split()
)
#: markup whose halves must not be split between two pieces (a link's text and its address)
_PAIRS = (("[", "]"), ("(", ")"), ("`", "`"), ("**", "**"))


class SpeechChunker:
    """Cuts streamed LLM text into pieces worth sending to TTS as soon as they are complete.

    A piece ends at a sentence end; a long run without one is cut at a clause boundary. The
    first piece is cut early, because the first audio is what the listener waits for: at a
    clause once ``first_min_chars`` are in, or else once ``first_words`` words are complete,
    at the first word that does not lead into the next (not after "the", "of", "is"...). The
    rest keeps sentence-long pieces, which TTS speaks with the sentence's own intonation.
    """

    def __init__(
        self, first_min_chars: int = 12, clause_min_chars: int = 60, first_words: int = 4
    ) -> None:
        self._buffer = ""
        self._first = True
        self._first_min = first_min_chars
        self._clause_min = clause_min_chars
        self._first_words = first_words

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
        if self._first and self._first_words:
            return self._word_cut()
        return None

    def _word_cut(self) -> int | None:
        """The end of the first piece after ``first_words`` complete words (each followed by
        a space), at a word that does not lead into the next: not a function word ("the",
        "of", "is"...), not a number (its unit follows), and not a capitalised word followed
        by another (a name: "William | Shakespeare")."""
        words = list(_WORD.finditer(self._buffer))
        for number, word in enumerate(words, start=1):
            text = word.group().strip("\"'()").replace("\u2019", "'")
            if (
                number < self._first_words
                or text.lower() in _LEADING_WORDS
                or any(c.isdigit() for c in text)
                or _open_markup(self._buffer[: word.end()])
            ):
                continue
            if text[:1].isupper():
                following = self._buffer[word.end() :].lstrip()
                if not following or following[0].isupper():
                    continue  # the next word may be the rest of a name
            return word.end()
        return None

    def flush(self) -> list[str]:
        piece, self._buffer = self._buffer, ""
        return [piece] if piece.strip() else []


def _open_markup(text: str) -> bool:
    """Whether ``text`` ends inside a pair of markup: a cut there would split a link."""
    for opening, closing in _PAIRS:
        if opening == closing:
            if text.count(opening) % 2:
                return True
        elif text.count(opening) > text.count(closing):
            return True
    return False


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
