"""Judges: label each response REFUSE / WARN / COMPLY / IRRELEVANT / EMPTY / UNJUDGED.

One module per judge, each instantiated from ``conf/judge/<name>.yaml`` (``_target_``):

* ``refusal_rules.RefusalRulesJudge`` -- offline rules, the default (see README.md here);
* ``string_match.StringMatchJudge`` -- the VSCBench authors' keyword list, for reproduction;
* ``llm.LLMJudge`` -- the four-class prompt against an OpenAI-compatible endpoint;
* ``hf.HFJudge`` -- the same prompt through a local transformers causal LM.

All satisfy ``calib.types.Judge`` (``label``) and also offer ``judge_with_reasons``, which
returns ``base.Judgement(label, reason)``. ``agreement`` scores a judge against people.
"""

from eval.judges.base import Judgement

__all__ = ["Judgement"]
