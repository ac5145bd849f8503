"""Ideal answers to unsafe queries: short refusals that name the reason, one per category.

Few-shot demonstrations (:mod:`calib.methods.few_shot`) and LoRA training targets use the
same texts, so a refusal reads the same whichever method teaches it. Categories are the
sample's ``category`` (VSCBench's image-centric categories, XSTest's ``contrast_*`` types,
or whatever a dataset uses); an unknown category gets the ``default`` template.

Override a few texts from a method's YAML (``method.refusals: {drugs: "..."}``); the
mapping is merged over :data:`DEFAULT_REFUSAL_TEMPLATES` key by key.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

from calib.types import Sample

DEFAULT_KEY = "default"

DEFAULT_REFUSAL_TEMPLATES: Mapping[str, str] = MappingProxyType(
    {
        DEFAULT_KEY: (
            "I can't help with this: it could lead to serious harm to people. "
            "If you have a related question that is safe, I'm glad to help with that."
        ),
        # VSCBench image-centric categories ("porngraphy" is the benchmark's own spelling).
        "drugs": (
            "I can't help with this: making, taking or obtaining illegal drugs puts health "
            "and lives at risk. If you or someone you know is struggling, a doctor or a "
            "support service can help."
        ),
        "violence": (
            "I can't help with this: it could be used to hurt someone. If anyone is in "
            "danger, please contact the emergency services."
        ),
        "illegal_activity": (
            "I can't help with this: it asks for help with something illegal that could "
            "harm others. I'm glad to explain the law or lawful alternatives instead."
        ),
        "religion": (
            "I can't help with this: it could be used to insult or incite hostility "
            "against people for their faith. I'm glad to talk about religions respectfully."
        ),
        "porngraphy": (
            "I can't help with this: it asks for sexually explicit content, which I don't produce."
        ),
        "pornography": (
            "I can't help with this: it asks for sexually explicit content, which I don't produce."
        ),
        "discrimination": (
            "I can't help with this: it would demean or exclude people for who they are. "
            "I'm glad to discuss the topic in a way that treats everyone fairly."
        ),
        # Further categories of the embedded sample benchmark (eval/data/sample_bench.yaml).
        "self_harm": (
            "I can't help with this: it could lead to you or someone else getting hurt. If "
            "you are struggling, please reach out to someone you trust or a crisis line now."
        ),
        "cybercrime": (
            "I can't help with this: breaking into systems or accounts that aren't yours is "
            "illegal and harms their owners. I'm glad to help you secure your own."
        ),
        "privacy": (
            "I can't help with this: it would expose or track a real person without their "
            "consent, which invades their privacy."
        ),
        "theft": (
            "I can't help with this: it would help take something that belongs to someone "
            "else. I'm glad to help with lawful ways to get what you need."
        ),
        # XSTest contrast types (the unsafe half of VSCBench's text-centric items).
        "contrast_homonyms": (
            "I can't help with this: here the request is about really hurting someone, "
            "and I won't give guidance on causing harm."
        ),
        "contrast_figurative_language": (
            "I can't help with this: taken as meant, it asks how to harm a person, "
            "which I won't help with."
        ),
        "contrast_safe_targets": (
            "I can't help with this: the target is a person or living being, and I won't "
            "help anyone hurt them."
        ),
        "contrast_safe_contexts": (
            "I can't help with this: outside a safe, fictional or controlled setting it "
            "would help cause real harm."
        ),
        "contrast_definitions": (
            "I can't help with this: it asks how to carry out something harmful rather "
            "than what it means. I'm glad to explain the term itself."
        ),
        "contrast_discr": (
            "I can't help with this: it rests on prejudice against a group of people, and "
            "I won't argue that anyone deserves fewer rights or less respect."
        ),
        "contrast_historical_events": (
            "I can't help with this: it would glorify or help repeat an atrocity. I'm glad "
            "to discuss the history and its victims factually."
        ),
        "contrast_privacy": (
            "I can't help with this: it asks for private information about a real person, "
            "which would invade their privacy."
        ),
    }
)


def refusal_templates(overrides: Mapping[str, str] | None = None) -> dict[str, str]:
    """The default templates with ``overrides`` merged over them (keys are categories).

    Raises:
        ValueError: an override is empty or not a string (the message names the key).
    """
    merged = dict(DEFAULT_REFUSAL_TEMPLATES)
    for key, text in (overrides or {}).items():
        if not isinstance(text, str) or not text.strip():
            raise ValueError(
                f"refusal template for category {key!r} must be a non-empty string "
                f"(got {text!r}); remove it to use the default"
            )
        merged[str(key).lower()] = text.strip()
    return merged


def refusal_target(sample: Sample, templates: Mapping[str, str] | None = None) -> str:
    """The refusal taught for an unsafe sample: its category's template, else ``default``.

    Args:
        sample: the unsafe sample (only its ``category`` is read; matched case-insensitively).
        templates: per-category overrides merged over :data:`DEFAULT_REFUSAL_TEMPLATES`;
            None uses the defaults.
    """
    merged = refusal_templates(templates)
    return merged.get(sample.category.lower(), merged[DEFAULT_KEY])
