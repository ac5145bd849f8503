"""The four-class judge prompt through a local transformers causal LM, batched.

Greedy decoding, left padding, strict parsing (no class -> UNJUDGED). The model loads on
first use from a hub id or a local folder (offline machines: pass a path).
"""

from __future__ import annotations

from collections.abc import Sequence

from calib.errors import ConfigError
from calib.model.load import DTYPES, resolve_device
from calib.types import Sample
from eval.judges.base import (
    Judgement,
    ReasonedJudge,
    check_lengths,
    check_max_unjudged,
    empty_judgement,
    is_empty,
)
from eval.judges.prompt import judge_prompt, judge_query, reply_judgement


class HFJudge(ReasonedJudge):
    """Judge with a local causal LM.

    Args:
        model: hub id or local folder of a causal LM with its tokenizer.
        batch_size: prompts per generate call.
        max_new_tokens: reply length cap.
        device: "auto" (cuda if available), "cpu", "cuda", "cuda:1", ...
        dtype: "auto", "float32", "float16" or "bfloat16".
        use_chat_template: wrap the prompt in the tokenizer's chat template.
        query_meta_key: show ``sample.meta[key]`` as the query (default ``query``: the
            original text-only query the loaders keep); ``sample.prompt`` when absent.
        prompt: ``project`` (this project's wording, strict parser) or ``vscbench`` (the
            authors' prompt verbatim, first-match parser); see ``eval.judges.prompt``.
        trust_remote_code: passed to ``from_pretrained``.
        max_unjudged: share of UNJUDGED labels above which a run fails (see ``summary``).

    Subclasses (the guard models in ``guard.py``) change ``render`` (their own prompt
    format) and ``judge_reply`` (their own output format); loading and batched greedy
    generation are shared.
    """

    add_special_tokens: bool | None = None  # None: only when there is no chat template

    def __init__(
        self,
        model: str,
        batch_size: int = 8,
        max_new_tokens: int = 16,
        device: str = "auto",
        dtype: str = "auto",
        use_chat_template: bool = True,
        query_meta_key: str | None = "query",
        trust_remote_code: bool = False,
        max_unjudged: float = 0.05,
        prompt: str = "project",
    ) -> None:
        problems = []
        try:
            self.prompt = judge_prompt(prompt)
        except ConfigError as exc:
            problems += exc.problems
        if not model:
            problems.append("judge.model is empty: give a hub id or a local folder")
        if batch_size < 1:
            problems.append(f"judge.batch_size={batch_size} must be >= 1")
        if max_new_tokens < 1:
            problems.append(f"judge.max_new_tokens={max_new_tokens} must be >= 1")
        if dtype not in DTYPES:
            problems.append(f"judge.dtype={dtype!r} must be one of {', '.join(DTYPES)}")
        try:
            self.max_unjudged = check_max_unjudged(max_unjudged)
        except ConfigError as exc:
            problems += exc.problems
        if problems:
            raise ConfigError(problems)
        self.model_name = model
        self.batch_size = batch_size
        self.max_new_tokens = max_new_tokens
        self.device = device
        self.dtype = dtype
        self.use_chat_template = use_chat_template
        self.query_meta_key = query_meta_key
        self.trust_remote_code = trust_remote_code
        self._model = None
        self._tokenizer = None

    def _load(self) -> None:
        from transformers import AutoModelForCausalLM, AutoTokenizer

        device = resolve_device(self.device)
        tokenizer = AutoTokenizer.from_pretrained(
            self.model_name, trust_remote_code=self.trust_remote_code
        )
        tokenizer.padding_side = "left"
        if tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.eos_token
        if self.use_chat_template and not tokenizer.chat_template:
            raise ValueError(
                f"judge.model={self.model_name!r} has no chat template: "
                "set judge.use_chat_template=false to send the plain prompt"
            )
        model = AutoModelForCausalLM.from_pretrained(
            self.model_name, dtype=DTYPES[self.dtype], trust_remote_code=self.trust_remote_code
        )
        self._model = model.to(device).eval()
        self._tokenizer = tokenizer

    def render(self, sample: Sample, response: str) -> str:
        """The full text fed to the model for one response."""
        text = self.prompt.render(judge_query(sample, self.query_meta_key), response, False)
        if not self.use_chat_template:
            system = f"{self.prompt.system}\n\n" if self.prompt.system else ""
            return f"{system}{text}\n"
        messages = self.prompt.messages(text)
        return self._tokenizer.apply_chat_template(
            messages, tokenize=False, add_generation_prompt=True
        )

    def _generate(self, prompts: list[str]) -> list[str]:
        import torch

        tok = self._tokenizer
        special = self.add_special_tokens
        batch = tok(
            prompts,
            return_tensors="pt",
            padding=True,
            add_special_tokens=(not self.use_chat_template) if special is None else special,
        )
        batch = batch.to(self._model.device)
        with torch.inference_mode():
            out = self._model.generate(
                **batch,
                max_new_tokens=self.max_new_tokens,
                do_sample=False,
                pad_token_id=tok.pad_token_id,
            )
        new_tokens = out[:, batch["input_ids"].shape[1] :]
        return tok.batch_decode(new_tokens, skip_special_tokens=True)

    def judge_with_reasons(
        self, samples: Sequence[Sample], responses: Sequence[str]
    ) -> list[Judgement]:
        check_lengths(samples, responses)
        results: list[Judgement | None] = [
            empty_judgement() if is_empty(r) else None for r in responses
        ]
        todo = [i for i, r in enumerate(results) if r is None]
        if todo and self._model is None:
            self._load()
        for start in range(0, len(todo), self.batch_size):
            idx = todo[start : start + self.batch_size]
            replies = self._generate([self.render(samples[i], responses[i]) for i in idx])
            for i, reply in zip(idx, replies, strict=True):
                results[i] = self.judge_reply(samples[i], responses[i], reply)
        return [r for r in results if r is not None]

    def judge_reply(self, sample: Sample, response: str, reply: str) -> Judgement:
        """The label a generated reply names (the four-class format); UNJUDGED if none."""
        return reply_judgement(reply, "hf", self.prompt.parse)
