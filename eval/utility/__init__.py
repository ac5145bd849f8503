"""Utility sets scored beside safety: the shared scoring (:mod:`.base`), answer parsing
(:mod:`.parse`), the embedded set (:mod:`.sample`), hub benchmarks (:mod:`.hf`) and the
LLM grader of open answers (:mod:`.grader`)."""
