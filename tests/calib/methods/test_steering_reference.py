"""Steering as the literature does it, on the tiny VLMs: ablation at every layer, weight
orthogonalisation, CAST's condition, the behaviour-based direction, selection on validation
only, reuse of vectors fitted on the evaluation split, hooks removed in every case."""

from __future__ import annotations

import json

import pytest
import torch

from calib.cli.common import compose_config
from calib.errors import ConfigError, DataError
from calib.methods.steering import VECTORS_FILE, SteeringMethod
from calib.methods.steering_hooks import (
    SteeringPlan,
    block_parts,
    has_post_norms,
    image_token_id,
)
from calib.pipeline import check_fitted_apart, load_data
from calib.types import Label
from tests.calib.methods.test_steering import (
    DEFAULTS,
    calibration_samples,
    chats,
    hook_snapshot,
    random_direction,
    ready,
)
from tests.conftest import TINY_RUN
from train.steering import candidate_layers, post_instruction_length, read_prompt_states


def logits(vlm, conversations) -> torch.Tensor:
    with torch.inference_mode():
        return vlm.model(**vlm.encode(conversations), use_cache=False, logits_to_keep=1).logits[
            :, -1
        ]


# --- ablation at every layer and orthogonalisation ------------------------------------------


def test_ablation_at_all_layers_leaves_no_component_at_any_hooked_point(tiny_vlm, tiny_images):
    direction = random_direction(tiny_vlm, seed=3)
    steering = ready(tiny_vlm, direction, mode="ablate", ablate_layers="all")
    seen: list[tuple[str, torch.Tensor]] = []
    handles = []

    def keep(name):
        def hook(_module, args, output=None):
            tensor = output if output is not None else args[0]
            tensor = tensor[0] if isinstance(tensor, tuple) else tensor
            seen.append((name, tensor.detach().float()))

        return hook

    with steering.active(tiny_vlm):  # capture hooks registered after the steering hooks
        for index, layer in enumerate(tiny_vlm.decoder_layers):
            handles.append(layer.register_forward_pre_hook(keep(f"input {index}")))
            writes = (
                (layer.post_attention_layernorm, layer.post_feedforward_layernorm)
                if has_post_norms(layer)  # Gemma 3: what is added to the stream
                else block_parts(tiny_vlm)[index]
            )
            for part, module in zip(("attention", "mlp"), writes, strict=True):
                handles.append(module.register_forward_hook(keep(f"{part} {index}")))
        try:
            logits(tiny_vlm, chats(tiny_images))
        finally:
            for handle in handles:
                handle.remove()
    assert len(seen) == 3 * tiny_vlm.num_layers
    for name, tensor in seen:
        along = (tensor @ direction).abs().max()
        assert along <= 1e-4 * max(1.0, float(tensor.norm(dim=-1).max())), (name, float(along))


def test_without_the_hooks_the_direction_is_present(tiny_vlm, tiny_images):
    """The check above can fail: the stream does carry the direction when nothing ablates."""
    direction = random_direction(tiny_vlm, seed=3)
    states = tiny_vlm.hidden_states(chats(tiny_images), layers=[1])[:, 0]
    assert (states @ direction).abs().max() > 1e-3


def test_orthogonalized_weights_give_the_logits_of_runtime_ablation(tiny_vlm, tiny_images):
    conversations = chats(tiny_images)
    direction = random_direction(tiny_vlm, seed=4)
    before = {n: p.detach().clone() for n, p in tiny_vlm.model.named_parameters()}
    base = logits(tiny_vlm, conversations)
    runtime = ready(tiny_vlm, direction, mode="ablate")
    weights = ready(tiny_vlm, direction, mode="ablate", orthogonalize=True)
    snapshot = hook_snapshot(tiny_vlm.model)
    with runtime.active(tiny_vlm):
        ablated = logits(tiny_vlm, conversations)
    with weights.active(tiny_vlm):
        assert hook_snapshot(tiny_vlm.model) == snapshot  # no hooks: the weights carry it
        edited = logits(tiny_vlm, conversations)
    assert not torch.allclose(ablated, base, atol=1e-4)  # ablation does change the logits
    torch.testing.assert_close(edited, ablated, rtol=1e-4, atol=1e-4)
    after = dict(tiny_vlm.model.named_parameters())
    assert all(torch.equal(after[n], p) for n, p in before.items())  # exact weights restored
    torch.testing.assert_close(logits(tiny_vlm, conversations), base, rtol=0, atol=0)


def test_orthogonalize_needs_ablation_everywhere():
    with pytest.raises(ConfigError, match=r"method.orthogonalize=true .* method.mode=ablate"):
        SteeringMethod(**{**DEFAULTS, "mode": "add", "orthogonalize": True})


# --- CAST ---------------------------------------------------------------------------------


def cast(vlm, tau: float, condition_layer: int = 1, layer: int = 2) -> SteeringMethod:
    steering = ready(vlm, random_direction(vlm, seed=6), mode="conditional", alpha=4.0)
    steering.plan = SteeringPlan(
        mode="conditional",
        layer=layer,
        vector=4.0 * random_direction(vlm, seed=6),
        tau=tau,
        condition=random_direction(vlm, seed=7),
        condition_layer=condition_layer,
        condition_above=True,
    )
    return steering


def test_cast_with_the_condition_unmet_is_bit_identical_to_no_steering(tiny_vlm, tiny_images):
    conversations = chats(tiny_images)
    base = logits(tiny_vlm, conversations)
    steering = cast(tiny_vlm, tau=1.5)  # a cosine never exceeds 1: never met
    with steering.active(tiny_vlm):
        unmet = logits(tiny_vlm, conversations)
    assert not steering.hooks.last_met.any()
    assert torch.equal(unmet, base)


def test_cast_steers_exactly_the_rows_whose_condition_holds(tiny_vlm, tiny_images):
    conversations = chats(tiny_images)
    base = logits(tiny_vlm, conversations)
    probe = cast(tiny_vlm, tau=1.5)
    with probe.active(tiny_vlm):
        logits(tiny_vlm, conversations)
    similarity = probe.hooks.last_similarity
    tau = float(torch.sort(similarity).values[:2].mean())  # the lowest below, two above
    steering = cast(tiny_vlm, tau=tau)
    with steering.active(tiny_vlm):
        steered = logits(tiny_vlm, conversations)
    met = steering.hooks.last_met
    assert met.sum() == 2
    for row in range(len(conversations)):
        if met[row]:
            assert not torch.allclose(steered[row], base[row], atol=1e-4)
        else:
            torch.testing.assert_close(steered[row], base[row], rtol=1e-5, atol=1e-5)


def test_conditional_fit_chooses_condition_and_threshold_on_validation(
    tiny_llava, tiny_images, tmp_path
):
    samples = calibration_samples(tiny_images)
    fit, validation = samples[:4], samples[4:]
    steering = SteeringMethod(**{**DEFAULTS, "mode": "conditional", "layer": 2})
    steering.fit(tiny_llava, fit, tmp_path, validation=validation)
    condition = json.loads((tmp_path / "selection.json").read_text())["condition"]
    assert condition["validation_ids"] == sorted(s.id for s in validation)
    assert condition["layer"] <= 2 == steering.plan.layer
    assert steering.plan.condition_layer == condition["layer"]
    assert steering.plan.tau == condition["tau"] and 0 <= condition["f1"] <= 1


def test_auto_conditional_chooses_the_condition_first_and_steers_at_or_after_it(
    tiny_llava, tiny_images, tmp_path
):
    """With layer and condition_layer both auto, the condition is chosen over every candidate
    layer (CAST's find_best_condition_point) and the behaviour layer among those after it."""
    samples = calibration_samples(tiny_images)
    fit, validation = samples[:4], samples[4:]
    steering = SteeringMethod(**{**DEFAULTS, "mode": "conditional", "layer": "auto"})
    steering.fit(tiny_llava, fit, tmp_path, validation=validation)
    selection = json.loads((tmp_path / "selection.json").read_text())
    condition, layer = selection["condition"], selection["layer"]
    candidates = candidate_layers(tiny_llava.num_layers, DEFAULTS["skip_last"])
    assert [row["layer"] for row in condition["candidates"]] == list(range(candidates[-1] + 1))
    assert layer["candidates"]
    assert all(row["layer"] >= condition["layer"] for row in layer["candidates"])
    assert condition["layer"] <= steering.plan.layer == layer["layer"]
    assert steering.plan.condition_layer == condition["layer"]


# --- positions ------------------------------------------------------------------------------


def test_text_only_leaves_image_tokens_untouched(tiny_vlm, tiny_images):
    conversations = chats(tiny_images)
    batch = tiny_vlm.encode(conversations)
    image = batch["input_ids"] == image_token_id(tiny_vlm)
    assert image.any()
    edits = []
    steering = ready(tiny_vlm, random_direction(tiny_vlm), alpha=3.0, positions="text_only")
    with steering.active(tiny_vlm):
        layer = tiny_vlm.decoder_layers[1]
        handle = layer.register_forward_pre_hook(lambda _m, a: edits.append(a[0].clone()))
        try:
            with torch.inference_mode():
                tiny_vlm.model(**batch, use_cache=False)
        finally:
            handle.remove()
    with torch.inference_mode():
        plain = []
        handle = layer.register_forward_pre_hook(lambda _m, a: plain.append(a[0].clone()))
        try:
            tiny_vlm.model(**batch, use_cache=False)
        finally:
            handle.remove()
    shift = (edits[0] - plain[0]).norm(dim=-1)
    real = batch["attention_mask"].bool()
    assert torch.all(shift[image] == 0)
    assert torch.all(shift[real & ~image] > 1.0)


# --- the behaviour-based direction ----------------------------------------------------------


class ScriptedJudge:
    """Labels each sample as a table says (the judge is not what these tests test)."""

    def __init__(self, table: dict[str, Label]) -> None:
        self.table = table

    def label(self, samples, responses):
        return [self.table.get(s.id, Label.IRRELEVANT) for s in samples]


def test_behaviour_direction_uses_only_refused_unsafe_and_complied_safe(
    tiny_llava, tiny_images, tmp_path
):
    samples = calibration_samples(tiny_images)
    table = {
        "garden/unsafe": Label.REFUSE,
        "bridge/unsafe": Label.REFUSE,
        "kitchen/unsafe": Label.COMPLY,  # not refused: not on the refusal side
        "garden/safe": Label.COMPLY,
        "harbour/safe": Label.COMPLY,
        "bridge/safe": Label.REFUSE,  # over-refused: not on the compliance side
    }
    steering = SteeringMethod(
        **{**DEFAULTS, "direction_source": "behaviour", "layer": 1},
        judge=ScriptedJudge(table),
        decoding={"max_new_tokens": 3, "do_sample": False},
        cache_dir=str(tmp_path / "cache"),
    )
    steering.fit(tiny_llava, samples, tmp_path / "run")
    vectors = steering.vectors
    assert vectors.meta["direction_source"] == "behaviour"
    assert (vectors.meta["n_refusal_side"], vectors.meta["n_other_side"]) == ("2", "2")
    n = post_instruction_length(tiny_llava)
    chosen = {s.id: s for s in samples}
    refuse = [chosen["garden/unsafe"], chosen["bridge/unsafe"]]
    comply = [chosen["garden/safe"], chosen["harbour/safe"]]
    post_r, _ = read_prompt_states(tiny_llava, [steering.conversation(s) for s in refuse], 4, n)
    post_c, _ = read_prompt_states(tiny_llava, [steering.conversation(s) for s in comply], 4, n)
    expected = post_r.double().mean(0) - post_c.double().mean(0)
    torch.testing.assert_close(vectors.mean_diff, expected.float(), rtol=1e-4, atol=1e-5)
    assert steering.report()["behaviour"] == {
        "used": "behaviour",
        "unsafe_refused": 2,
        "safe_complied": 2,
    }


def test_behaviour_direction_with_an_empty_side_says_how_many_were_found(
    tiny_llava, tiny_images, tmp_path
):
    samples = calibration_samples(tiny_images)
    table = {s.id: Label.COMPLY for s in samples}  # the model never refuses
    steering = SteeringMethod(
        **{**DEFAULTS, "direction_source": "behaviour"},
        judge=ScriptedJudge(table),
        decoding={"max_new_tokens": 3, "do_sample": False},
        cache_dir=str(tmp_path / "cache"),
    )
    with pytest.raises(
        DataError, match=r"direction_source=behaviour: the base model refused 0 of 4"
    ):
        steering.fit(tiny_llava, samples, tmp_path / "run")


def test_auto_direction_falls_back_to_labels_when_the_model_never_refuses(
    tiny_llava, tiny_images, tmp_path
):
    """The default (``auto``): the reference's behaviour direction when the base model refuses
    something, the label direction (with a warning and a record) when it never does."""
    samples = calibration_samples(tiny_images)
    never = SteeringMethod(
        **{**DEFAULTS, "direction_source": "auto", "layer": 1},
        judge=ScriptedJudge({s.id: Label.COMPLY for s in samples}),
        decoding={"max_new_tokens": 3, "do_sample": False},
        cache_dir=str(tmp_path / "cache"),
    )
    never.fit(tiny_llava, samples, tmp_path / "never")
    assert never.vectors.meta["direction_source"] == "label"
    assert never.report()["behaviour"]["used"] == "label (a side is empty)"
    table = {"garden/unsafe": Label.REFUSE, "garden/safe": Label.COMPLY}
    some = SteeringMethod(
        **{**DEFAULTS, "direction_source": "auto", "layer": 1},
        judge=ScriptedJudge(table),
        decoding={"max_new_tokens": 3, "do_sample": False},
        cache_dir=str(tmp_path / "cache"),
    )
    some.fit(tiny_llava, samples, tmp_path / "some")
    assert some.vectors.meta["direction_source"] == "behaviour"
    assert (some.vectors.meta["n_refusal_side"], some.vectors.meta["n_other_side"]) == ("1", "1")


# --- selection reads fit and validation only; reused vectors -------------------------------


class Recording(SteeringMethod):
    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.read: set[str] = set()

    def conversation(self, sample):
        self.read.add(sample.id)
        return super().conversation(sample)


def test_selection_never_reads_the_evaluation_split(tiny_llava, tmp_path):
    cfg = compose_config(
        [
            *TINY_RUN,
            "data.limit=24",
            "data.calibration_fraction=0.5",
            "data.validation_fraction=0.5",
        ]
    )
    splits = load_data(cfg)
    steering = Recording(**{**DEFAULTS, "layer": "auto", "mode": "conditional"})
    steering.fit(tiny_llava, splits.fit, tmp_path, validation=splits.validation)
    evaluation = {s.id for s in splits.evaluation}
    validation = {s.id for s in splits.validation}
    assert steering.read and not steering.read & evaluation
    selection = json.loads((tmp_path / "selection.json").read_text())
    for part in ("layer", "condition"):
        ids = set(selection[part]["validation_ids"])
        assert ids and ids <= validation and ids <= steering.read
    assert steering.trained_on() == {s.id for s in splits.fit if s.label is not None}
    check_fitted_apart(steering, splits.evaluation)  # fitted apart: no error


def test_behaviour_selection_scores_refused_unsafe_and_complied_safe_validation(
    tiny_llava, tmp_path
):
    """As the reference: with a behaviour direction, layer selection measures refusal on the
    unsafe prompts the model refuses and KL on the safe ones it answers, not on safe prompts
    it over-refuses (which ablating the refusal direction rightly changes)."""
    cfg = compose_config(
        [*TINY_RUN, "data.limit=48", "data.calibration_fraction=0.5",
         "data.validation_fraction=0.5"]
    )  # fmt: skip
    splits = load_data(cfg)
    table = {s.id: Label.REFUSE if s.label == "unsafe" else Label.COMPLY for s in splits.fit}
    unsafe = [s.id for s in splits.validation if s.label == "unsafe"]
    safe = [s.id for s in splits.validation if s.label == "safe"]
    assert len(unsafe) >= 3 and len(safe) >= 3, (unsafe, safe)
    table |= {i: Label.REFUSE if n < 2 else Label.COMPLY for n, i in enumerate(unsafe)}
    table |= {i: Label.COMPLY if n < 2 else Label.REFUSE for n, i in enumerate(safe)}
    steering = SteeringMethod(
        **{**DEFAULTS, "direction_source": "auto", "layer": "auto"},
        judge=ScriptedJudge(table),
        decoding={"max_new_tokens": 3, "do_sample": False},
        cache_dir=str(tmp_path / "cache"),
    )
    steering.fit(tiny_llava, splits.fit, tmp_path / "run", validation=splits.validation)
    selection = json.loads((tmp_path / "run" / "selection.json").read_text())
    assert set(selection["layer"]["validation_ids"]) == {*unsafe[:2], *safe[:2]}
    assert selection["behaviour"]["validation"] == {"unsafe": 2, "safe": 2}


def test_reused_vectors_fitted_on_the_evaluation_split_are_refused(
    tiny_llava, tiny_images, tmp_path
):
    samples = calibration_samples(tiny_images)
    first = SteeringMethod(**DEFAULTS)
    first.fit(tiny_llava, samples, tmp_path / "first")
    path = str(tmp_path / "first" / VECTORS_FILE)
    reused = SteeringMethod(**{**DEFAULTS, "vectors": path})
    reused.fit(tiny_llava, [], tmp_path / "second")
    assert reused.trained_on() == {s.id for s in samples}
    with pytest.raises(ConfigError, match=r"trained on 2 sample\(s\) of this run's evaluation"):
        check_fitted_apart(reused, samples[:2])
    allowed = SteeringMethod(**{**DEFAULTS, "vectors": path, "allow_overlap": True})
    allowed.fit(tiny_llava, [], tmp_path / "third")
    check_fitted_apart(allowed, samples[:2])


# --- hooks removed --------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["ablate", "conditional", "bidirectional", "add"])
def test_hooks_are_removed_on_exit_and_after_an_exception(tiny_llava, tiny_images, mode):
    before = hook_snapshot(tiny_llava.model)
    steering = ready(tiny_llava, mode=mode)
    with steering.active(tiny_llava):
        assert hook_snapshot(tiny_llava.model) != before
        tiny_llava.generate(chats(tiny_images), max_new_tokens=3)
    assert hook_snapshot(tiny_llava.model) == before
    with pytest.raises(RuntimeError, match="boom"), steering.active(tiny_llava):
        raise RuntimeError("boom")
    assert hook_snapshot(tiny_llava.model) == before


# --- end to end with the behaviour-based direction -------------------------------------------


class EchoJudge:
    """Judges a base answer by the sample's label (unsafe: REFUSE, safe: COMPLY), standing in
    for a base model that refuses exactly the unsafe queries (random tiny models never do)."""

    def label(self, samples, responses):
        return [Label.REFUSE if s.label == "unsafe" else Label.COMPLY for s in samples]


@pytest.mark.slow
@pytest.mark.parametrize("model", ["tiny", "tiny_idefics3", "tiny_gemma3"])
def test_calib_run_with_the_behaviour_direction_end_to_end(model, tiny_cache_dir, tmp_path):
    from calib.pipeline import run
    from tests.calib.methods.test_steering import FAST, SPLIT

    cfg = compose_config(
        [
            *TINY_RUN,
            *FAST,
            *SPLIT,
            "method=steering",
            f"model={model}",
            "method.direction_source=behaviour",
            "method.mode=ablate",
            f"method.judge={{_target_:{__name__}.EchoJudge}}",
            "method.decoding.max_new_tokens=4",
            f"paths.cache_dir={tiny_cache_dir}",
        ]
    )
    metrics = run(cfg, tmp_path / "run")
    assert metrics["method"]["direction_source"] == "behaviour"
    behaviour = metrics["method"]["behaviour"]
    assert behaviour["unsafe_refused"] > 0 and behaviour["safe_complied"] > 0
    assert (tmp_path / "run" / "method" / "selection.json").is_file()


def test_a_layer_whose_direction_is_zero_is_refused(tiny_llava, tiny_images, tmp_path):
    """Layer 0's input at the template tokens is the same embedding for every prompt."""
    steering = SteeringMethod(**{**DEFAULTS, "layer": 0})
    with pytest.raises(ConfigError, match=r"method.layer=0: .* zero direction"):
        steering.fit(tiny_llava, calibration_samples(tiny_images), tmp_path)
