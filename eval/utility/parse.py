"""Robust answer parsing for utility items: exact words, option letters, yes/no.

Models rarely answer with the bare token asked for: "The answer is (B).", "b", "It is
blue.", "Yes, there is a dog." Each parser finds the answer inside such text and returns
``None`` when it cannot tell — an unparsed answer scores 0, and is counted apart so a
report can show how often the model did not answer in the expected form.
"""

from __future__ import annotations

import re
import string
from collections.abc import Sequence

NUMBER_WORDS = {
    "zero": "0",
    "one": "1",
    "two": "2",
    "three": "3",
    "four": "4",
    "five": "5",
    "six": "6",
    "seven": "7",
    "eight": "8",
    "nine": "9",
    "ten": "10",
}
ALIASES = {"grey": "gray", "colour": "color", "centre": "center"}
LETTERS = string.ascii_uppercase


def words(text: str) -> list[str]:
    """Lower-case word tokens with number words turned into digits and spellings unified."""
    tokens = re.findall(r"[a-z0-9]+", text.lower())
    return [ALIASES.get(t, NUMBER_WORDS.get(t, t)) for t in tokens]


def normalise(text: str) -> str:
    return " ".join(words(text))


def first_choice(response: str, choices: Sequence[str]) -> str | None:
    """The choice the response mentions first, matched on whole words (multi-word choices too).

    "It is a red circle" with colour choices gives ``red``; "There are three." with
    number choices gives ``3``.
    """
    haystack = f" {normalise(response)} "
    best: tuple[int, int, str] | None = None
    for choice in choices:
        needle = normalise(choice)
        if not needle:
            continue
        at = haystack.find(f" {needle} ")
        # earliest mention wins; at the same place the longer choice ("dark blue" over "dark")
        if at >= 0 and (best is None or (at, -len(needle)) < (best[0], best[1])):
            best = (at, -len(needle), choice)
    return None if best is None else best[2]


def score_exact(response: str, reference: str, choices: Sequence[str]) -> tuple[float, str | None]:
    """1.0 when the first choice mentioned is the reference (compared normalised)."""
    answer = first_choice(response, [*choices, *([] if reference in choices else [reference])])
    if answer is None:
        return 0.0, None
    return float(normalise(answer) == normalise(reference)), answer


def _is_article(text: str, match: re.Match, letter: str) -> bool:
    """True for "A dog" / "I think": an article or a pronoun, not an option letter."""
    start, end = match.start(1), match.end(1)
    bracketed = (start > 0 and text[start - 1] in "([") or text[end : end + 1] in (")", "]")
    followed_by_word = re.match(r"\s+[a-z]", text[end:]) is not None
    return letter.upper() in "AI" and not bracketed and followed_by_word


def _is_option_letter(text: str, match: re.Match) -> bool:
    """A stand-alone letter inside a sentence: a capital ("B is right", not the article "A
    dog"), or a lower-case one other than "a"/"i" standing alone ("it is b.", not "e.g.")."""
    letter = match.group(1)
    if letter.isupper():
        return not _is_article(text, match, letter)
    after = text[match.end(1) :].lstrip(")]")
    return letter not in "ai" and bool(re.match(r"[\)\].!?,:;]*(\s|$)", after))


def parse_letter(response: str, options: Sequence[str]) -> str | None:
    """The option letter a response picks, or None.

    In order: an explicit statement ("answer is (b)", "Answer: C", "option B"); a letter
    opening the response ("B", "(B)", "b)", "B. Paris"); one distinct stand-alone letter
    inside the text ("I think B is right.", "it is b." — but not the article in "A dog"); the
    text of exactly one option ("It is Paris."). Known blind spot: "The answer is A because"
    reads "A" as an article unless it is bracketed or followed by punctuation.
    """
    letters = LETTERS[: len(options)]
    if not letters:
        return None
    text = response.strip()
    any_case = f"[{letters}{letters.lower()}]"
    explicit = (
        r"\b(?:answer|option|choice)\b[\s:]*(?:(?:is|would be|should be)\b[\s:]*)?"
        rf"(?:option\s*)?[\(\[]?({any_case})[\)\]]?(?![A-Za-z'])"
    )
    for match in re.finditer(explicit, text, flags=re.IGNORECASE):
        letter = match.group(1).upper()
        if not _is_article(text, match, letter):
            return letter
    opening = re.match(rf"[\(\[]?({any_case})(?:[\)\]\.:,]|\s*$|\s+(?=[^\sa-z]))", text)
    if opening:
        return opening.group(1).upper()
    standalone = {
        m.group(1).upper()
        for m in re.finditer(rf"(?<![A-Za-z'])[\(\[]?({any_case})[\)\]]?(?![A-Za-z'])", text)
        if _is_option_letter(text, m)
    }
    if len(standalone) == 1:
        return standalone.pop()
    named = [i for i, option in enumerate(options) if option and first_choice(text, [option])]
    if len(named) == 1:
        return letters[named[0]]
    return None


def score_multiple_choice(
    response: str, reference: str, options: Sequence[str]
) -> tuple[float, str | None]:
    letter = parse_letter(response, options)
    return (0.0, None) if letter is None else (float(letter == reference.upper()), letter)


def parse_yes_no(response: str) -> str | None:
    """``yes`` or ``no``, whichever the response says first; None when it says neither."""
    for token in words(response):
        if token in ("yes", "no"):
            return token
    return None


def score_yes_no(response: str, reference: str) -> tuple[float, str | None]:
    answer = parse_yes_no(response)
    return (0.0, None) if answer is None else (float(answer == reference.lower()), answer)
