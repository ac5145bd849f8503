"""SteeringMethod on the tiny VLMs: hooks, positions, padding, modes, reload, config errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import torch
import yaml

from calib.cli.common import compose_config, config_dir
from calib.errors import ConfigError
from calib.io import read_jsonl
from calib.methods.steering import VECTORS_FILE, SteeringMethod
from calib.pipeline import run
from calib.types import Sample
from tests.conftest import TINY_RUN
from train.steering import SteeringVectors

LAYER = 1
DEFAULTS = {
    "mode": "add",
    "alpha": 4.0,
    "layer": LAYER,
    "positions": "all",
    "tau": None,
    "direction": "diff_of_means",
    "vectors": None,
    "holdout": 0.4,
    "skip_last": 0.25,
    "forward_batch_size": 4,
    "seed": 0,
}


def method(**overrides) -> SteeringMethod:
    return SteeringMethod(**{**DEFAULTS, **overrides})


def chats(images) -> list[list[dict]]:
    """Conversations of different lengths (so a batch is left-padded), with and without images."""

    def turn(text, image=None):
        parts = [{"type": "image", "image": str(image)}] if image is not None else []
        return [{"role": "user", "content": [*parts, {"type": "text", "text": text}]}]

    return [
        turn("Describe the picture.", images[0]),
        turn("Say hello to the garden and the bridge over the river, please."),
        turn("What is this?", images[2]),
    ]


def random_direction(vlm, seed: int = 0) -> torch.Tensor:
    direction = torch.randn(vlm.hidden_size, generator=torch.Generator().manual_seed(seed))
    return direction / direction.norm()


def crafted(vlm, direction: torch.Tensor, tau: float = 0.0) -> SteeringVectors:
    """The same unit direction at every layer (one position), as the raw mean difference
    too, unit mean norm (so the added vector is alpha x direction), given τ."""
    n = vlm.num_layers
    stacked = direction.expand(1, n, -1).clone()
    return SteeringVectors(
        directions=stacked,
        mean_norms=torch.ones(n),
        auroc=torch.full((n,), 0.5),
        thresholds=torch.full((n,), tau),
        threshold_accuracy=torch.full((n,), 0.5),
        mean_diff=stacked,
        condition=stacked[0],
        meta={"model_identity": vlm.identity},
    )


def ready(vlm, direction=None, tau: float = 0.0, **overrides) -> SteeringMethod:
    steering = method(**overrides)
    steering.use_vectors(
        crafted(vlm, random_direction(vlm) if direction is None else direction, tau), vlm.num_layers
    )
    return steering


@contextmanager
def record(layer_module) -> Iterator[list[list[torch.Tensor]]]:
    """Per forward call: [layer output before steering, after steering].

    Install inside ``active()``: the prepended hook then runs before the steering hook. The
    input of layer ``k`` is edited at the output of layer ``k - 1``: record that one.
    """
    calls: list[list[torch.Tensor]] = []

    def first(output):
        return (output[0] if isinstance(output, tuple) else output).detach().clone()

    handles = [
        layer_module.register_forward_hook(
            lambda _m, _a, out: calls.append([first(out)]), prepend=True
        ),
        layer_module.register_forward_hook(lambda _m, _a, out: calls[-1].append(first(out))),
    ]
    try:
        yield calls
    finally:
        for handle in handles:
            handle.remove()


def forward(vlm, conversations) -> torch.Tensor:
    """One prompt forward pass; returns the attention mask."""
    batch = vlm.encode(conversations)
    with torch.inference_mode():
        vlm.model(**batch, use_cache=False)
    return batch["attention_mask"].bool()


def hook_snapshot(model) -> dict[str, tuple]:
    return {
        name: (tuple(m._forward_hooks), tuple(m._forward_pre_hooks))
        for name, m in model.named_modules()
    }


# --- exactness and reversibility ----------------------------------------------------------


def test_alpha_zero_reproduces_the_baseline_exactly(tiny_vlm, tiny_images):
    conversations = chats(tiny_images)
    baseline = tiny_vlm.generate(conversations, max_new_tokens=8)
    states = tiny_vlm.hidden_states(conversations)
    steering = ready(tiny_vlm, alpha=0.0)
    with steering.active(tiny_vlm):
        assert tiny_vlm.generate(conversations, max_new_tokens=8) == baseline
        assert torch.equal(tiny_vlm.hidden_states(conversations), states)


def test_no_hook_is_left_after_generation(tiny_vlm, tiny_images):
    conversations = chats(tiny_images)
    baseline = tiny_vlm.generate(conversations, max_new_tokens=8)
    before = hook_snapshot(tiny_vlm.model)
    steering = ready(tiny_vlm, alpha=8.0)
    with steering.active(tiny_vlm):
        assert hook_snapshot(tiny_vlm.model) != before
        steered = tiny_vlm.generate(conversations, max_new_tokens=8)
    assert steered != baseline
    assert hook_snapshot(tiny_vlm.model) == before
    assert tiny_vlm.generate(conversations, max_new_tokens=8) == baseline
    with pytest.raises(KeyboardInterrupt), steering.active(tiny_vlm):
        raise KeyboardInterrupt  # an interrupted generation still removes the hooks
    assert hook_snapshot(tiny_vlm.model) == before


def test_transformers_output_capture_sees_the_steered_stream(tiny_llava, tiny_images):
    steering = ready(tiny_llava)
    batch = tiny_llava.encode(chats(tiny_images))
    with (
        steering.active(tiny_llava),
        record(tiny_llava.decoder_layers[LAYER - 1]) as calls,
        torch.inference_mode(),
    ):
        output = tiny_llava.model(**batch, output_hidden_states=True)
    assert torch.equal(output.hidden_states[LAYER], calls[0][1])  # = layer LAYER's input


# --- what each mode does to the residual stream --------------------------------------------


def test_add_shifts_every_real_position_and_never_padding(tiny_vlm, tiny_images):
    direction = random_direction(tiny_vlm)
    steering = ready(tiny_vlm, direction, alpha=3.0)
    with steering.active(tiny_vlm), record(tiny_vlm.decoder_layers[LAYER - 1]) as calls:
        real = forward(tiny_vlm, chats(tiny_images))
    before, after = calls[0]
    assert not real.all()  # the batch is padded
    shift = after - before
    assert torch.equal(shift[~real], torch.zeros_like(shift[~real]))
    expected = (3.0 * direction).expand(int(real.sum()), -1)
    torch.testing.assert_close(shift[real], expected, rtol=0, atol=1e-5)


def test_generated_positions_steer_the_last_prompt_token_and_new_tokens(tiny_vlm, tiny_images):
    direction = random_direction(tiny_vlm)
    steering = ready(tiny_vlm, direction, alpha=3.0, positions="generated")
    with steering.active(tiny_vlm), record(tiny_vlm.decoder_layers[LAYER - 1]) as calls:
        tiny_vlm.generate(chats(tiny_images), max_new_tokens=4)
    prompt_before, prompt_after = calls[0]
    shift = prompt_after - prompt_before
    assert torch.equal(shift[:, :-1], torch.zeros_like(shift[:, :-1]))
    torch.testing.assert_close(shift[:, -1], (3.0 * direction).expand(3, -1), rtol=0, atol=1e-5)
    assert len(calls) >= 2
    for before, after in calls[1:]:  # each generated token, one per step
        assert before.shape[1] == 1
        torch.testing.assert_close(
            after - before, (3.0 * direction).expand(3, 1, -1), rtol=0, atol=1e-5
        )


def test_ablate_leaves_no_component_along_the_direction(tiny_vlm, tiny_images):
    direction = random_direction(tiny_vlm, seed=1)
    steering = ready(tiny_vlm, direction, mode="ablate", ablate_layers="selected")
    with steering.active(tiny_vlm), record(tiny_vlm.decoder_layers[LAYER - 1]) as calls:
        real = forward(tiny_vlm, chats(tiny_images))
    before, after = calls[0]
    along = after @ direction
    torch.testing.assert_close(along, torch.zeros_like(along), rtol=0, atol=1e-6)  # padding too
    assert (before @ direction)[real].abs().max() > 1e-3  # there was something to remove
    kept = before - (before @ direction).unsqueeze(-1) * direction
    torch.testing.assert_close(after, kept, rtol=0, atol=1e-6)


def test_bidirectional_picks_the_sign_per_sample(tiny_vlm, tiny_images):
    """A direction crafted so that the first prompt projects above τ and the second below."""
    pair = chats(tiny_images)[:2]
    states = tiny_vlm.hidden_states(pair, layers=[LAYER - 1])[:, 0]  # = layer LAYER's input
    direction = (states[0] - states[1]) / (states[0] - states[1]).norm()
    tau = float((states @ direction).mean())
    steering = ready(tiny_vlm, direction, tau=tau, mode="bidirectional", alpha=3.0)
    assert steering.plan.tau == tau
    with steering.active(tiny_vlm), record(tiny_vlm.decoder_layers[LAYER - 1]) as calls:
        real = forward(tiny_vlm, pair)
    shift = calls[0][1] - calls[0][0]
    torch.testing.assert_close(
        shift[0][real[0]], (3.0 * direction).expand(int(real[0].sum()), -1), rtol=0, atol=1e-5
    )
    torch.testing.assert_close(
        shift[1][real[1]], (-3.0 * direction).expand(int(real[1].sum()), -1), rtol=0, atol=1e-5
    )
    # and generation: the same as adding +alpha to the first and -alpha to the second
    with steering.active(tiny_vlm):
        conditional = tiny_vlm.generate(pair, max_new_tokens=8)
    toward, away = ready(tiny_vlm, direction, alpha=3.0), ready(tiny_vlm, direction, alpha=-3.0)
    with toward.active(tiny_vlm):
        first = tiny_vlm.generate(pair[:1], max_new_tokens=8)
    with away.active(tiny_vlm):
        second = tiny_vlm.generate(pair[1:], max_new_tokens=8)
    assert conditional == first + second


@pytest.mark.parametrize(
    ("mode", "positions"),
    [
        ("add", "all"),
        ("add", "text_only"),
        ("add", "prompt"),
        ("bidirectional", "generated"),
        ("ablate", "all"),
        ("conditional", "all"),
    ],
)
def test_batched_equals_per_sample_with_steering_on(tiny_vlm, tiny_images, mode, positions):
    conversations = chats(tiny_images)
    states = tiny_vlm.hidden_states(conversations, layers=[LAYER - 1])[:, 0]
    direction = random_direction(tiny_vlm, seed=2)
    lowest = torch.sort(states @ direction).values
    tau = float(lowest[:2].mean())  # one prompt below, two above, none close to τ
    steering = ready(tiny_vlm, direction, tau=tau, mode=mode, positions=positions, alpha=2.0)
    with steering.active(tiny_vlm):
        batched = tiny_vlm.generate(conversations, max_new_tokens=8)
        alone = [tiny_vlm.generate([c], max_new_tokens=8)[0] for c in conversations]
    assert batched == alone


# --- fitting, saving, reloading ------------------------------------------------------------


def calibration_samples(images) -> list[Sample]:
    samples = []
    for index, topic in enumerate(["garden", "bridge", "kitchen", "harbour"]):
        image = str(images[index % len(images)]) if index % 2 == 0 else None
        for label, verb in (("safe", "visit"), ("unsafe", "wreck")):
            samples.append(
                Sample(
                    id=f"{topic}/{label}",
                    prompt=f"How do I {verb} the {topic}?",
                    image=image,
                    label=label,
                    category="test",
                    condition="image" if image else "txt",
                    group=topic,
                )
            )
    return samples


def test_fit_writes_vectors_scores_and_threshold(tiny_vlm, tiny_images, tmp_path):
    steering = method(mode="bidirectional", layer="auto", layer_select="auroc", alpha=1.0)
    steering.fit(tiny_vlm, calibration_samples(tiny_images), tmp_path)
    scores = json.loads((tmp_path / "layer_scores.json").read_text())
    threshold = json.loads((tmp_path / "threshold.json").read_text())
    assert (tmp_path / VECTORS_FILE).is_file()
    assert len(scores["layers"]) == tiny_vlm.num_layers
    assert scores["chosen_layer"] == steering.plan.layer == threshold["layer"]
    assert scores["layers"][steering.plan.layer]["candidate"]
    assert threshold["tau"] == steering.plan.tau and 0.5 <= threshold["balanced_accuracy"] <= 1.0
    assert steering.fingerprint().startswith("steering:")


def test_saved_vectors_reload_to_the_same_outputs(tiny_vlm, tiny_images, tmp_path):
    conversations = chats(tiny_images)
    fitted = method(mode="bidirectional", alpha=1.5)
    fitted.fit(tiny_vlm, calibration_samples(tiny_images), tmp_path / "first")
    with fitted.active(tiny_vlm):
        expected = tiny_vlm.generate(conversations, max_new_tokens=8)
    reloaded = method(
        mode="bidirectional", alpha=1.5, vectors=str(tmp_path / "first" / VECTORS_FILE)
    )
    reloaded.fit(tiny_vlm, [], tmp_path / "second")  # no calibration data needed
    with reloaded.active(tiny_vlm):
        assert tiny_vlm.generate(conversations, max_new_tokens=8) == expected
    assert reloaded.fingerprint() == fitted.fingerprint()
    assert reloaded.plan.tau == fitted.plan.tau


def test_vectors_of_another_shape_are_refused(tiny_llava, tmp_path):
    path = tmp_path / VECTORS_FILE
    other = torch.ones(tiny_llava.hidden_size + 1)
    crafted(tiny_llava, other / other.norm()).save(path)
    with pytest.raises(ConfigError, match=r"method.vectors=.* holds 4 layers x 65 dims"):
        method(vectors=str(path)).fit(tiny_llava, [], tmp_path / "run")


# --- configuration and fingerprint -------------------------------------------------------


def test_layer_out_of_range_names_the_key_and_the_valid_range(tiny_llava):
    for layer in (4, -1):
        steering = method(layer=layer)
        with pytest.raises(
            ConfigError,
            match=rf"method.layer={layer} is out of range: model has 4 decoder layers \(0..3\)",
        ):
            steering.use_vectors(
                crafted(tiny_llava, random_direction(tiny_llava)), tiny_llava.num_layers
            )


def test_config_problems_are_reported_together():
    with pytest.raises(ConfigError) as caught:
        method(mode="push", positions="some", layer="middle", holdout=1.5, direction="svd")
    keys = " ".join(caught.value.problems)
    for key in (
        "method.mode",
        "method.positions",
        "method.layer",
        "method.holdout",
        "method.direction",
    ):
        assert key in keys
    assert len(caught.value.problems) == 5


def test_fingerprint_follows_every_setting_that_shapes_the_output(tiny_llava):
    direction = random_direction(tiny_llava)

    def fingerprint(**overrides):
        return ready(
            tiny_llava, direction, tau=overrides.pop("tau_", 0.0), **overrides
        ).fingerprint()

    base = fingerprint(mode="bidirectional")
    variants = [
        fingerprint(mode="bidirectional", alpha=2.0),
        fingerprint(mode="bidirectional", layer=2),
        fingerprint(mode="bidirectional", tau_=0.5),
        fingerprint(mode="bidirectional", positions="generated"),
        fingerprint(mode="bidirectional", alpha_unit="norm"),
        fingerprint(mode="add"),
        fingerprint(mode="conditional"),
        fingerprint(mode="ablate"),
        fingerprint(mode="ablate", ablate_layers="selected"),
        ready(tiny_llava, random_direction(tiny_llava, seed=5), mode="bidirectional").fingerprint(),
    ]
    assert fingerprint(mode="bidirectional") == base
    assert len({base, *variants}) == len(variants) + 1
    with pytest.raises(RuntimeError, match="before fit"):
        method().fingerprint()


# --- end to end: calib-run -------------------------------------------------------------------

CONF = config_dir()
FAST = ["utility=none", "data.limit=16", "generation.max_new_tokens=4", "metrics.n_boot=0"]
# A validation part with both labels, for the selection of layer and condition.
SPLIT = ["data.calibration_fraction=0.5", "data.validation_fraction=0.5"]


def compose_cfg(*overrides: str, hydra_config: bool = False):
    return compose_config(
        overrides=[*TINY_RUN, *FAST, *overrides], return_hydra_config=hydra_config
    )


@pytest.mark.slow
@pytest.mark.parametrize("model", ["tiny", "tiny_idefics3", "tiny_gemma3"])
@pytest.mark.parametrize(
    "mode",
    ["add", "conditional", "bidirectional", "ablate", "ablate,method.orthogonalize=true"],
)
def test_calib_run_with_steering_end_to_end(model, mode, tiny_cache_dir, tmp_path):
    mode, *extra = mode.split(",")
    cfg = compose_cfg(
        "method=steering",
        f"model={model}",
        f"method.mode={mode}",
        *extra,
        *SPLIT,
        f"paths.cache_dir={tiny_cache_dir}",
    )
    metrics = run(cfg, tmp_path / "run")
    assert json.loads((tmp_path / "run" / "metrics.json").read_text())["run"] == json.loads(
        json.dumps(metrics["run"])
    )
    assert metrics["run"]["method_fingerprint"].startswith("steering:")
    method_dir = tmp_path / "run" / "method"
    for name in (VECTORS_FILE, "layer_scores.json", "selection.json"):
        assert (method_dir / name).is_file(), name
    for name in ("steering_layers.png", "steering_selection.png"):
        assert (tmp_path / "run" / "plots" / name).is_file(), name
    assert (method_dir / "threshold.json").is_file() == (mode == "bidirectional")
    selection = json.loads((method_dir / "selection.json").read_text())
    assert ("condition" in selection) == (mode == "conditional")
    assert len(read_jsonl(tmp_path / "run" / "responses.jsonl")) == metrics["run"]["n_evaluation"]


def test_optuna_experiment_searches_alpha_to_maximise_the_validation_mean():
    cfg = compose_cfg("experiment=steering_optuna", hydra_config=True)
    sweeper = cfg.hydra.sweeper
    assert sweeper._target_.endswith("OptunaSweeper") and sweeper.direction == "maximize"
    assert set(sweeper.params) == {"method.alpha"} and cfg.method._target_.endswith(
        "SteeringMethod"
    )


def _calib_run(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "WANDB_MODE": "offline"}
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "calib.cli.run",
            *args,
            *TINY_RUN,
            *FAST,
            f"paths.cache_dir={tmp_path / 'cache'}",
        ],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=900,
    )


@pytest.mark.slow
def test_a_sweep_over_alpha_runs_one_job_per_value(tmp_path):
    sweep = tmp_path / "sweep"
    result = _calib_run(
        tmp_path,
        "-m",
        "method=steering",
        "method.alpha=-0.5,0.5",
        *SPLIT,
        f"hydra.sweep.dir={sweep}",
    )
    assert result.returncode == 0, (result.stdout + result.stderr)[-4000:]
    runs = [json.loads(p.read_text())["run"] for p in sorted(sweep.glob("*/metrics.json"))]
    assert len(runs) == 2 and len({r["method_fingerprint"] for r in runs}) == 2


@pytest.mark.slow
def test_optuna_sweep_over_alpha_completes(tmp_path):
    pytest.importorskip(
        "hydra_plugins.hydra_optuna_sweeper", reason="the optuna extra is not installed"
    )
    sweep = tmp_path / "optuna"
    result = _calib_run(
        tmp_path,
        "experiment=steering_optuna",
        "hydra.sweeper.n_trials=2",
        "hydra.sweeper.sampler.n_startup_trials=2",
        f"hydra.sweep.dir={sweep}",
        "data.calibration_fraction=0.5",  # a validation part with both labels to select on
        "data.validation_fraction=0.5",
    )
    assert result.returncode == 0, (result.stdout + result.stderr)[-4000:]
    trials = [json.loads(p.read_text()) for p in sorted(sweep.glob("*/metrics.json"))]
    assert len(trials) == 2
    best = yaml.safe_load((sweep / "optimization_results.yaml").read_text())
    # what Optuna maximised is what calib-run returned: validation.mean, not the evaluation's
    assert best["best_value"] == max(t["validation"]["mean"] for t in trials)
    assert all(t["run"]["objective"] == "validation.mean" for t in trials)
    assert 0.0 <= best["best_params"]["method.alpha"] <= 1.0
