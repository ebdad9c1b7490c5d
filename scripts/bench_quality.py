"""Answer quality of the LLM a server runs: the share of answers in the session's language and
the share of correct answers, on a fixed set of short factual questions.

The LLM is built from the server's own flags (``--server-flags``, as ``python -m realtime``
takes them; none: the embedded default), and each question goes through the path a spoken
turn takes: a session configured as the server configures it (with ``--language``, the
session's transcription language), the protocol's response plan for a user item holding the
question, and the LLM request the shell makes of that plan, with the server's sampling
settings. Sampled answers vary from run to run (by a few answers in 40 for the embedded LLM),
so the set is asked ``--runs`` times and the figures are over all of them.

- language: the answer's language as ``langid`` (a classifier that ships its model) tells it
  among English, French, German, Italian, Spanish, Portuguese and Dutch; an answer of fewer
  than four words is too short to tell and is counted apart (shown, not scored). The
  opening words (the first three, where a small model's drift into the language of the
  country asked about shows: "Der Königin der Deutschland ... Berlin") are classified too;
- correct: the answer contains one of the question's accepted keywords (case aside).

Usage: ``python scripts/bench_quality.py [--server-flags "--llm ..."] [--language en]
[--runs 3] [--show]``. Needs ``pip install langid``.
"""

from __future__ import annotations

import argparse
import shlex
import sys
import time
from pathlib import Path

import attrs

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from engines.base import CancelToken, TextDelta
from engines.choice import build_llm
from engines.embedded import default_threads
from protocol import RealtimeConnection
from protocol import events as ev
from protocol.items import Content, MessageItem
from protocol.response_plan import plan_response
from realtime.cli import parse_args, session_defaults
from realtime.context import llm_request

#: languages the classifier chooses among
LANGUAGES = ("en", "fr", "de", "it", "es", "pt", "nl")
#: fewer words than this: too short to tell the language of
MIN_WORDS = 4

#: short factual questions, each with the keywords a correct answer contains; many are about
#: places whose own language a small model drifts into
QUESTIONS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("What is the capital of France?", ("paris",)),
    ("What is the capital of Germany?", ("berlin",)),
    ("What is the capital of Italy?", ("rome", "roma")),
    ("What is the capital of Spain?", ("madrid",)),
    ("What is the capital of Portugal?", ("lisbon", "lisboa")),
    ("What is the capital of the Netherlands?", ("amsterdam",)),
    ("What is the capital of Austria?", ("vienna", "wien")),
    ("What is the capital of Japan?", ("tokyo",)),
    ("What is the capital of Canada?", ("ottawa",)),
    ("What is the capital of Australia?", ("canberra",)),
    ("Which river flows through Paris?", ("seine",)),
    ("Which river flows through Rome?", ("tiber", "tevere")),
    ("Which river flows through Vienna?", ("danube", "donau")),
    ("What is the tallest mountain in the world?", ("everest",)),
    ("What is the largest ocean on Earth?", ("pacific",)),
    ("What language is spoken in Brazil?", ("portuguese",)),
    ("What is the currency of Germany?", ("euro",)),
    ("What is the currency of Japan?", ("yen",)),
    ("Who painted the Mona Lisa?", ("leonardo", "vinci")),
    ("Who wrote Romeo and Juliet?", ("shakespeare",)),
    ("Who composed the Ninth Symphony with Ode to Joy?", ("beethoven",)),
    ("In which city is the Eiffel Tower?", ("paris",)),
    ("In which city is the Colosseum?", ("rome",)),
    ("In which country is Munich?", ("germany",)),
    ("In which country is Venice?", ("italy",)),
    ("In which country is Barcelona?", ("spain",)),
    ("What is the largest planet in our solar system?", ("jupiter",)),
    ("Which planet is closest to the Sun?", ("mercury",)),
    ("How many days are in a week?", ("seven", "7")),
    ("How many continents are there?", ("seven", "7")),
    ("What is the freezing point of water in Celsius?", ("zero", "0")),
    ("What gas do plants take in from the air?", ("carbon dioxide", "co2")),
    ("What is the chemical symbol for gold?", ("au",)),
    ("What is the boiling point of water in Celsius?", ("100", "hundred")),
    ("Which animal is known as the king of the jungle?", ("lion",)),
    ("What do bees make?", ("honey",)),
    ("What color is the sky on a clear day?", ("blue",)),
    ("How many legs does a spider have?", ("eight", "8")),
    ("What is the opposite of hot?", ("cold",)),
    ("Which famous French emperor was exiled to Elba?", ("napoleon",)),
)


def ask(llm: object, question: str, language: str | None, flags: argparse.Namespace) -> str:
    """The LLM's answer to ``question``, asked as a spoken turn of a fresh session is."""
    defaults = session_defaults(flags)
    if language:
        defaults.setdefault("audio", {}).setdefault("input", {})["transcription"] = {
            "model": "whisper-1",
            "language": language,
        }
    conn = RealtimeConnection(session_defaults=defaults)
    item = MessageItem(
        id="item_q", role="user", content=(Content("input_audio", transcript=question),)
    )
    plan = plan_response(conn.session, ev.ResponseParams())
    request = llm_request(attrs.evolve(plan, context=(item,)))
    text = "".join(
        event.text
        for event in llm.stream(request, CancelToken())  # type: ignore[attr-defined]
        if isinstance(event, TextDelta)
    )
    return text.strip()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--server-flags", default="", help="python -m realtime's flags, quoted")
    parser.add_argument("--language", default=None, help="the session's transcription language")
    parser.add_argument("--runs", type=int, default=3, help="times the set is asked")
    parser.add_argument("--show", action="store_true", help="print every answer")
    args = parser.parse_args()
    import langid  # type: ignore[import-untyped]

    identifier = langid.langid.LanguageIdentifier.from_modelstring(
        langid.langid.model, norm_probs=True
    )
    identifier.set_languages(list(LANGUAGES))
    flags = parse_args(shlex.split(args.server_flags))
    started = time.perf_counter()
    llm = build_llm(flags, int(flags.threads or default_threads()))
    print(f"bench_quality: llm={flags.llm} loaded in {time.perf_counter() - started:.1f} s")
    expected = args.language or "en"
    in_language = short = correct = opening = 0
    elapsed = 0.0
    for question, keywords in QUESTIONS * args.runs:
        began = time.perf_counter()
        answer = ask(llm, question, args.language, flags)
        elapsed += time.perf_counter() - began
        words = len(answer.split())
        detected, _ = identifier.classify(answer) if answer else ("", 0.0)
        if words < MIN_WORDS:
            short += 1
            verdict = "short"
        elif detected == expected:
            in_language += 1
            verdict = detected
        else:
            verdict = f"{detected}!"
        first_words = " ".join(answer.split()[:3])
        opens_right = bool(first_words) and identifier.classify(first_words)[0] == expected
        opening += opens_right
        if not opens_right and verdict == expected:
            verdict = f"{expected}?"
        right = any(k in answer.lower() for k in keywords)
        correct += right
        if args.show:
            print(f"  [{verdict:5}] [{'ok' if right else '--'}] {question} -> {answer!r}")
    n = len(QUESTIONS) * args.runs
    scored = n - short
    share = 100 * in_language / scored if scored else 0.0
    print(
        f"answers in the session's language ({expected}): {in_language}/{scored} = {share:.1f} %"
        f" ({short} of {n} too short to tell, under {MIN_WORDS} words)"
    )
    print(f"answers whose first three words are in it: {opening}/{n} = {100 * opening / n:.1f} %")
    print(f"correct answers: {correct}/{n} = {100 * correct / n:.1f} %")
    print(f"mean time per answer: {elapsed / n:.2f} s")


if __name__ == "__main__":
    main()
