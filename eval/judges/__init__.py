"""Judges: label each response REFUSE / WARN / COMPLY / IRRELEVANT / EMPTY / UNJUDGED.

One module per judge, each instantiated from ``conf/judge/<name>.yaml`` (``_target_``):

* ``refusal_rules.RefusalRulesJudge`` -- offline rules by linguistic act, position and
  prompt form (patterns in ``rule_patterns``), the default (see README.md here);
* ``string_match.StringMatchJudge`` -- the VSCBench authors' keyword list, for reproduction;
* ``llm.LLMJudge`` -- the four-class prompt against an OpenAI-compatible endpoint;
* ``hf.HFJudge`` -- the same prompt through a local transformers causal LM;
* ``guard.LlamaGuardJudge`` / ``guard.WildGuardJudge`` -- open safety classifiers;
* ``cascade.CascadeJudge`` -- the rules first, a model judge where they are unsure.

All satisfy ``calib.types.Judge`` (``label``) and also offer ``judge_with_reasons``, which
returns ``base.Judgement(label, reason, confidence, rule)``. ``agreement`` scores a judge
against people (XSTest CSVs), ``challenge`` on the project's VLM-style challenge set;
``summary`` is what a run reports about its judging; ``cache`` holds model-judge replies.
"""

from eval.judges.base import Judgement

__all__ = ["Judgement"]
