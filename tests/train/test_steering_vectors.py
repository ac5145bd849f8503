"""Steering directions: fitting on tiny VLMs, scoring, thresholds, layer choice, save/load."""

from __future__ import annotations

import json
import math

import pytest
import torch

from calib.chat import default_conversation
from calib.types import Sample
from eval.plots import steering_layer_plot
from train.steering import (
    SteeringVectors,
    auroc,
    best_threshold,
    candidate_layers,
    choose_layer,
    diff_of_means,
    fit_vectors,
    holdout_split,
    labelled,
    paired_pca,
    post_instruction_length,
    read_prompt_states,
    vectors_from_states,
    write_layer_scores,
)

TOPICS = ["garden", "bridge", "kitchen", "harbour", "museum"]


def calibration_samples(images) -> list[Sample]:
    """Five query groups, each with a safe and an unsafe side (some with an image)."""
    samples = []
    for index, topic in enumerate(TOPICS):
        image = str(images[index % len(images)]) if index % 2 == 0 else None
        for label, text in (
            ("safe", f"How do I visit the {topic}?"),
            ("unsafe", f"How do I wreck the {topic}?"),
        ):
            samples.append(
                Sample(
                    id=f"{topic}/{label}",
                    prompt=text,
                    image=image,
                    label=label,
                    category="test",
                    condition="image" if image else "txt",
                    group=topic,
                )
            )
    return samples


def fit(vlm, samples, direction="diff_of_means"):
    return fit_vectors(vlm, samples, direction=direction, holdout=0.4, seed=0, batch_size=4)


def from_states(states, is_unsafe, groups, **options) -> SteeringVectors:
    """Vectors from ``[n, layers, hidden]`` states as one post-instruction position (and as
    the pooled prompt), the label deciding the sides."""
    everyone = torch.ones_like(is_unsafe)
    return vectors_from_states(
        states.unsqueeze(1), states, is_unsafe, everyone, is_unsafe, groups, **options
    )


def separable_states(n: int = 40, layers: int = 5, hidden: int = 8, good: int = 2) -> tuple:
    """Random states where only layer ``good`` separates unsafe from safe (along axis 0)."""
    generator = torch.Generator().manual_seed(0)
    states = torch.randn(n, layers, hidden, generator=generator)
    is_unsafe = torch.arange(n) % 2 == 1
    states[:, good, 0] = torch.where(is_unsafe, 5.0, -5.0) + 0.1 * torch.randn(
        n, generator=generator
    )
    groups = [f"g{i // 2}" for i in range(n)]  # pairs: one safe, one unsafe per group
    return states, is_unsafe, groups


# --- on the tiny models -------------------------------------------------------------------


@pytest.mark.parametrize("direction", ["diff_of_means", "pca"])
def test_directions_have_the_right_shape_and_are_deterministic(tiny_vlm, tiny_images, direction):
    samples = calibration_samples(tiny_images)
    first, second = fit(tiny_vlm, samples, direction), fit(tiny_vlm, samples, direction)
    n, h = tiny_vlm.num_layers, tiny_vlm.hidden_size
    p = post_instruction_length(tiny_vlm)
    assert p >= 2  # the template writes tokens after the user's text
    assert first.directions.shape == (p, n, h) and first.directions.dtype == torch.float32
    assert first.mean_diff.shape == (p, n, h) and first.condition.shape == (n, h)
    for name in ("mean_norms", "auroc", "thresholds", "threshold_accuracy"):
        assert getattr(first, name).shape == (n,)
    norms = first.directions.norm(dim=-1)
    # unit vectors, except where both sides agree (layer 0 reads the same template embeddings)
    assert torch.all(((norms - 1).abs() < 1e-5) | (norms == 0)) and (norms[:, 1:] > 0.99).all()
    assert json.loads(first.meta["fit_ids"]) == sorted(s.id for s in samples)
    assert first.content_hash() == second.content_hash()
    assert torch.equal(first.directions, second.directions)
    assert first.meta["model_identity"] == tiny_vlm.identity
    assert first.meta["direction"] == direction and first.meta["n_unsafe"] == "5"


def test_diff_of_means_direction_matches_the_class_means(tiny_llava, tiny_images):
    samples = calibration_samples(tiny_images)
    vectors = fit(tiny_llava, samples)
    conversations = [default_conversation(s) for s in samples]
    post, pooled = read_prompt_states(tiny_llava, conversations, 3, vectors.num_positions)
    post, pooled = post.double(), pooled.double()
    is_unsafe = torch.tensor([s.label == "unsafe" for s in samples])
    expected = post[is_unsafe].mean(0) - post[~is_unsafe].mean(0)
    torch.testing.assert_close(vectors.mean_diff, expected.float(), rtol=1e-5, atol=1e-6)
    unit = expected[:, 1:] / expected[:, 1:].norm(dim=-1, keepdim=True)
    torch.testing.assert_close(vectors.directions[:, 1:], unit.float(), rtol=1e-5, atol=1e-6)
    condition = pooled[is_unsafe].mean(0) - pooled[~is_unsafe].mean(0)
    torch.testing.assert_close(vectors.condition, condition.float(), rtol=1e-5, atol=1e-6)
    last = post[:, -1]  # the last post-instruction token = the last prompt token
    torch.testing.assert_close(vectors.mean_norms, last.norm(dim=-1).mean(0), rtol=1e-6, atol=1e-6)
    # the layer input of layer k + 1 is the output of layer k at the last token
    outputs = tiny_llava.hidden_states(conversations).double()
    torch.testing.assert_close(last[:, 1:], outputs[:, :-1], rtol=1e-5, atol=1e-5)


def test_fitting_without_both_labels_says_what_is_missing(tiny_llava, tiny_images):
    only_safe = [s for s in calibration_samples(tiny_images) if s.label == "safe"]
    with pytest.raises(ValueError, match="0 unsafe and 5 safe"):
        fit(tiny_llava, only_safe)


# --- directions, scores and thresholds on constructed states ------------------------------


def test_diff_of_means_is_accumulated_in_float64():
    generator = torch.Generator().manual_seed(0)
    offsets = torch.randint(0, 1000, (3001, 1, 1), generator=generator)
    states = (1e7 + offsets).to(torch.float32)  # every value exact in float32, sums are not
    is_unsafe = torch.arange(3001) % 3 == 0
    exact = offsets[is_unsafe].double().mean() - offsets[~is_unsafe].double().mean()
    assert abs(float(diff_of_means(states, is_unsafe)) - float(exact)) < 1e-6
    float32 = states[is_unsafe].mean() - states[~is_unsafe].mean()
    assert abs(float(float32) - float(exact)) > 1e-3  # what float32 accumulation would give


def test_pca_direction_is_the_shared_pair_difference_with_unsafe_higher():
    states, is_unsafe, groups = separable_states()
    component = paired_pca(states, is_unsafe, groups)[2]
    assert component[0] > 0.99  # axis 0, sign such that unsafe projects higher
    with pytest.raises(ValueError, match=r"method\.direction=pca needs pairs"):
        paired_pca(states, is_unsafe, [f"solo{i}" for i in range(len(groups))])


def test_auroc_counts_ties_as_half():
    is_unsafe = torch.tensor([True, True, False, False])
    assert auroc(torch.tensor([3.0, 2.0, 1.0, 0.0]), is_unsafe) == 1.0
    assert auroc(torch.tensor([0.0, 1.0, 2.0, 3.0]), is_unsafe) == 0.0
    assert auroc(torch.tensor([1.0, 1.0, 1.0, 1.0]), is_unsafe) == 0.5
    assert math.isnan(auroc(torch.tensor([1.0, 2.0]), torch.tensor([True, True])))


def test_threshold_maximises_balanced_accuracy():
    projections = torch.tensor([0.0, 1.0, 2.0, 10.0, 11.0])
    is_unsafe = torch.tensor([False, False, False, True, True])
    tau, accuracy = best_threshold(projections, is_unsafe)
    assert tau == 6.0 and accuracy == 1.0
    # imbalanced: one safe outlier above; balanced accuracy still prefers the gap
    projections = torch.tensor([0.0, 0.5, 1.0, 1.5, 20.0, 10.0])
    is_unsafe = torch.tensor([False, False, False, False, False, True])
    tau, accuracy = best_threshold(projections, is_unsafe)
    assert 1.5 < tau < 10.0 and accuracy == pytest.approx(0.9)
    tau, accuracy = best_threshold(torch.tensor([1.0, 1.0]), torch.tensor([True, False]))
    assert accuracy == 0.5  # equal values cannot be cut apart


def test_auto_picks_the_layer_that_separates_perfectly(tmp_path):
    states, is_unsafe, groups = separable_states(good=2)
    vectors = from_states(states, is_unsafe, groups, direction="diff_of_means", holdout=0.3, seed=0)
    assert vectors.auroc[2] == 1.0 and vectors.threshold_accuracy[2] == 1.0
    assert all(vectors.auroc[layer] < 1.0 for layer in (0, 1, 3, 4))
    assert choose_layer(vectors.auroc, skip_last=0.2) == 2
    assert "held_out" in vectors.meta["scored_on"]
    report = write_layer_scores(vectors, 2, candidate_layers(5, 0.2), tmp_path)
    saved = json.loads((tmp_path / "layer_scores.json").read_text())
    assert saved == json.loads(json.dumps(report))
    assert saved["chosen_layer"] == 2 and [row["candidate"] for row in saved["layers"]] == [
        True
    ] * 4 + [False]
    plot = steering_layer_plot(saved, tmp_path / "plots" / "steering_layers.png")
    assert plot.read_bytes()[:4] == b"\x89PNG"


def test_auto_never_picks_the_skipped_last_layers():
    assert candidate_layers(32, 0.25) == list(range(24))
    assert candidate_layers(2, 0.75) == [0]
    scores = torch.tensor([0.6, 0.7, float("nan"), 0.99])
    assert choose_layer(scores, skip_last=0.25) == 1


def test_holdout_keeps_groups_whole_and_falls_back_in_sample():
    _, is_unsafe, groups = separable_states()
    fit_rows, held_rows, note = holdout_split(groups, is_unsafe, 0.25, seed=3)
    assert {groups[i] for i in fit_rows.tolist()}.isdisjoint(
        {groups[i] for i in held_rows.tolist()}
    )
    assert len(fit_rows) + len(held_rows) == len(groups) and note.startswith("held_out")
    again = holdout_split(groups, is_unsafe, 0.25, seed=3)
    assert torch.equal(again[1], held_rows)
    lonely = ["a", "a", "b", "b"]  # each group holds one label: no split keeps both on each side
    _, _, note = holdout_split(lonely, torch.tensor([True, True, False, False]), 0.5, seed=0)
    assert note.startswith("in_sample")
    _, _, note = holdout_split(groups, is_unsafe, 0.0, seed=0)
    assert note == "in_sample (method.holdout=0)"


def test_labelled_drops_unlabelled_samples(tiny_images):
    samples = calibration_samples(tiny_images)
    extra = Sample(
        id="u", prompt="2+2?", image=None, label=None, category="u", condition="txt", group="u"
    )
    assert labelled([*samples, extra]) == samples


# --- save / load ----------------------------------------------------------------------------


def test_vectors_round_trip_through_safetensors(tmp_path):
    states, is_unsafe, groups = separable_states()
    vectors = from_states(
        states, is_unsafe, groups, direction="pca", holdout=0.3, seed=0, meta={"data_hash": "abc"}
    )
    path = tmp_path / "v.safetensors"
    vectors.save(path)
    loaded = SteeringVectors.load(path)
    names = ("directions", "mean_norms", "auroc", "thresholds", "threshold_accuracy")
    for name in (*names, "mean_diff", "condition"):
        assert torch.equal(getattr(loaded, name), getattr(vectors, name)), name
    assert loaded.meta == vectors.meta and loaded.meta["data_hash"] == "abc"
    assert loaded.content_hash() == vectors.content_hash()


def test_loading_a_wrong_file_names_the_key_and_the_fix(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"method.vectors=.*does not exist.*null to fit"):
        SteeringVectors.load(tmp_path / "missing.safetensors")
    from safetensors.torch import save_file

    other = tmp_path / "other.safetensors"
    save_file({"weight": torch.zeros(2)}, str(other))
    with pytest.raises(ValueError, match=r"method.vectors=.*not a steering-vector file"):
        SteeringVectors.load(other)
