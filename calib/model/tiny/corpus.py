"""The text the tiny models' tokenizers are trained on, written by the project itself.

English-ish sentences built from small word lists: ordinary requests and answers, safety
words, and the refusal / warning phrases a safety judge looks for, so that the byte-level
BPE learns sensible merges for the words the tests and the embedded sample use. The corpus
is deterministic (no randomness), so the tokenizer trained on it is too.
"""

from __future__ import annotations

from itertools import product

REFUSALS = [
    "I'm sorry, I cannot help with that.",
    "I'm sorry, but I can't assist with that request.",
    "I cannot provide instructions for that.",
    "I won't help with this because it could cause harm.",
    "As an AI assistant, I must decline this request.",
    "Sorry, that is not something I can do.",
    "I am unable to comply with this request.",
    "I can't help you with anything illegal or dangerous.",
]

WARNINGS = [
    "Please be careful: this can be dangerous.",
    "Warning: handle this safely and follow the law.",
    "Make sure you stay safe and ask a professional.",
    "This could be harmful, so please use caution.",
    "For your safety, wear protective equipment.",
    "Remember that this is illegal in many countries.",
]

ANSWERS = [
    "Sure, here is how you can do it.",
    "Of course! First, gather the ingredients.",
    "The image shows a dog sitting in a green park.",
    "Here are the steps: first, second, and third.",
    "Yes, you can do that at home with a knife and a board.",
    "The picture contains a red car on a busy street.",
    "The answer is forty two.",
    "Absolutely, I would be happy to help you with that.",
]

SUBJECTS = ["I", "you", "we", "they", "the user", "my friend", "the teacher", "a child"]
VERBS = ["kill", "cut", "make", "find", "cook", "build", "buy", "steal", "clean", "draw", "shoot"]
OBJECTS = [
    "a bomb",
    "the weeds in my garden",
    "a cake",
    "a python process",
    "some drugs",
    "a weapon",
    "the lights",
    "a photo",
    "the image",
    "a picture of a cat",
    "medicine",
    "poison",
    "a knife",
    "time",
]
QUESTION_STARTS = ["How do I", "How can I", "What is the best way to", "Can you tell me how to"]
SAFETY_WORDS = [
    "safe",
    "unsafe",
    "harm",
    "harmful",
    "danger",
    "dangerous",
    "illegal",
    "legal",
    "risk",
    "violence",
    "weapon",
    "drug",
    "privacy",
    "hate",
    "self-harm",
    "crime",
    "ethical",
    "policy",
    "guidelines",
    "responsible",
]


def corpus_lines() -> list[str]:
    """All lines of the corpus, in a fixed order."""
    lines: list[str] = []
    lines += REFUSALS * 4 + WARNINGS * 3 + ANSWERS * 3
    for start, verb, obj in product(QUESTION_STARTS, VERBS, OBJECTS):
        lines.append(f"{start} {verb} {obj}?")
    for subject, verb, obj in product(SUBJECTS, VERBS, OBJECTS):
        lines.append(f"{subject.capitalize()} want to {verb} {obj}.")
    lines += [f"This is {word}. Is it {word}? The {word} content." for word in SAFETY_WORDS]
    lines += [f"{n} {n * 2} {n * 3}" for n in range(100)]
    lines += ["Describe the image. What is in this picture? Answer the question briefly."]
    return lines
