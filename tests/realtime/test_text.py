"""The speakable pieces that streamed LLM text is cut into (realtime/text.py)."""

from __future__ import annotations

import pytest

from realtime.text import SpeechChunker


def pieces(tokens: list[str], chunker: SpeechChunker | None = None) -> list[str]:
    """The pieces ``tokens`` are cut into, streamed one at a time as an LLM sends them."""
    chunker = chunker or SpeechChunker()
    out: list[str] = []
    for token in tokens:
        out += chunker.push(token)
    return out + chunker.flush()


def tokens_of(text: str) -> list[str]:
    """``text`` as an LLM streams it: each word with its leading space."""
    words = text.split(" ")
    return [words[0]] + [" " + w for w in words[1:]]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        # cut once four words are complete, at the first word that doesn't lead on
        (
            "The capital of France is Paris. It is big.",
            ["The capital of France", " is Paris. ", "It is big."],
        ),
        (
            "The sky is blue because of Rayleigh scattering.",
            ["The sky is blue", " because of Rayleigh scattering."],
        ),
        # never after a function word: "the" leads into "capital"
        ("Paris is the capital and largest city.", ["Paris is the capital", " and largest city."]),
        # never after a number (its unit follows) or inside a name
        ("A spider has 8 legs.", ["A spider has 8 legs."]),
        (
            "Hamlet was written by William Shakespeare in London.",
            ["Hamlet was written by William Shakespeare", " in London."],
        ),
        # a clause or a sentence end that comes first wins
        ("Sure, here it is.", ["Sure, here it is."]),
        ("Yes. I can do that for you.", ["Yes. ", "I can do that for you."]),
    ],
)
def test_the_first_piece_is_cut_early(text: str, expected: list[str]) -> None:
    assert pieces(tokens_of(text)) == expected
    assert "".join(expected) == text  # nothing is lost or added


def test_only_the_first_piece_is_cut_at_a_word() -> None:
    text = "Yes. The train to the airport leaves every ten minutes from platform two today."
    got = pieces(tokens_of(text))
    assert got == [
        "Yes. ",
        "The train to the airport leaves every ten minutes from platform two today.",
    ]


def test_a_word_is_only_complete_once_the_next_one_has_begun() -> None:
    chunker = SpeechChunker()
    assert chunker.push("The sky is blue") == []  # "blue" may go on ("bluebell")
    assert chunker.push(" because") == ["The sky is blue"]


def test_first_words_zero_keeps_sentence_pieces() -> None:
    text = "The sky is blue because of Rayleigh scattering."
    assert pieces(tokens_of(text), SpeechChunker(first_words=0)) == [text]


def test_long_runs_are_cut_at_clauses_after_the_first_piece() -> None:
    text = (
        "First. This sentence runs on for quite a while without ending, and then it goes on "
        "further still, because it can"
    )
    got = pieces(tokens_of(text))
    assert got[0] == "First. "
    assert got[1] == "This sentence runs on for quite a while without ending, "
    assert "".join(got) == text


@pytest.mark.parametrize(
    ("text", "first"),
    [
        ("Well that is what I think about it. More.", "Well that is what I think"),
        ("I think that we\u2019re going there soon.", "I think that we\u2019re going"),
        ("It takes about ten minutes to get there.", "It takes about ten minutes"),
        ("Yes, of course I can help you with that.", "Yes, of course I can help"),
        (
            "You should visit [the Eiffel Tower](https://example.org/a) today. Fine.",
            "You should visit [the Eiffel Tower](https://example.org/a) today. ",
        ),
    ],
)
def test_the_first_piece_does_not_end_on_a_pronoun_contraction_number_word_or_in_a_link(
    text: str, first: str
) -> None:
    chunker = SpeechChunker()
    pieces = [p for word in text.split(" ") for p in chunker.push(word + " ")]
    pieces += chunker.flush()
    assert pieces[0] == first
    assert "".join(pieces) == text + " "
