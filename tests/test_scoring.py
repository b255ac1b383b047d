"""Identity and prompt scores (DreamBench's DINO, CLIP-I, CLIP-T), ranking and the gate, on tiny encoders."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw

from product_studio.cards import making, planning, scoring
from product_studio.identifiers import ProductPrompts
from product_studio.records import CleanedPhoto
from product_studio.rendering.scenes import load_library
from product_studio.training import TrainConfig, from_cutout, train_lora

REPO_TEMPLATES = Path(__file__).resolve().parents[1] / "templates"


def _product(colour=(22, 128, 122), size=96) -> Image.Image:
    im = Image.new("RGBA", (size, size), (0, 0, 0, 0))
    ImageDraw.Draw(im).ellipse((20, 12, 76, 86), fill=(*colour, 255))
    return im


# --- the metric math, on inputs whose answer is known ------------------------------------------------------


def test_cosine_of_identical_embeddings_is_one_and_of_orthogonal_ones_zero():
    a = np.array([[1.0, 2.0, 3.0], [0.0, 1.0, 0.0]])
    sims = scoring.cosine_matrix(a, np.array([[2.0, 4.0, 6.0], [1.0, 0.0, 0.0]]))
    np.testing.assert_allclose(sims, [[1.0, 1 / np.sqrt(14)], [2 / np.sqrt(14), 0.0]], atol=1e-9)


def test_an_image_scored_against_itself_scores_one(tiny_encoders):
    scorer = scoring.Scorer(str(tiny_encoders[0]), str(tiny_encoders[1]))
    product = _product()
    refs = scorer.references([product])
    on_white = scoring._on_white(product)
    (scores,) = scorer.score([on_white], [on_white], ["a photo of a teapot"], refs)
    assert scores["identity_dino"] == pytest.approx(1.0, abs=1e-4)
    assert scores["identity_clip"] == pytest.approx(1.0, abs=1e-4)
    assert scores["identity_dino_max"] >= scores["identity_dino"]
    # Mean and max over several references: the max is this image's own, the mean lower.
    refs = scorer.references([product, _product((200, 30, 30)), _product((240, 200, 60))])
    (scores,) = scorer.score([on_white], [on_white], ["a photo"], refs)
    assert scores["identity_dino_max"] == pytest.approx(1.0, abs=1e-4) and scores["identity_dino"] < 1.0


def test_the_identifier_is_stripped_from_the_prompt_clip_scores():
    prompts = ProductPrompts("olis", "teapot")
    assert prompts.unnamed("a photo of olis teapot in the snow") == "a photo of teapot in the snow"
    assert prompts.unnamed("olis teapot, on marble") == "teapot, on marble"
    assert prompts.unnamed("a photo of a teapot") == "a photo of a teapot"


def test_product_region_is_the_box_or_what_the_cleaner_finds():
    card = Image.new("RGB", (200, 100), "white")
    assert scoring.product_region(card, (50, 20, 150, 80), margin=0).size == (100, 60)
    assert scoring.product_region(card, (0, 0, 200, 100)).size == (200, 100)  # the margin stays inside
    mask = Image.new("L", (200, 100), 0)
    ImageDraw.Draw(mask).rectangle((10, 10, 49, 49), fill=255)
    # The cleaner sees a small copy (it is slow on megapixels); the box is scaled back to the card.
    assert scoring.product_region(card, segment=lambda im: mask.resize(im.size), margin=0).size == (40, 40)
    assert scoring.product_region(card, segment=lambda im: Image.new("L", (200, 100), 0)).size == (200, 100)


def test_the_gate_names_each_threshold_a_card_misses():
    gate = scoring.Gate(min_identity=0.6, min_prompt=0.25)
    assert gate.reason({"identity_dino": 0.7, "prompt_clip": 0.3}) is None
    assert gate.reason({"identity_dino": 0.5, "prompt_clip": 0.3}) == "identity_dino 0.500 < min_identity 0.6"
    both = gate.reason({"identity_dino": 0.5, "prompt_clip": 0.1})
    assert "min_identity" in both and "prompt_clip 0.100 < min_prompt 0.25" in both
    assert scoring.combined({"identity_dino": 1, "identity_clip": 1, "prompt_clip": 1}) == pytest.approx(1.0)


# --- ranking, the gate and the rejected-card record, through make_cards -----------------------------


@pytest.fixture
def product(tmp_path):
    _product(size=400).save(tmp_path / "cutout.png")
    return CleanedPhoto(source="front.jpg", cutout_path=tmp_path / "cutout.png", coverage=0.3)


def _make(
    tiny_pipe, tiny_encoders, tmp_path, product, gate, keep=1, keep_rejected=False, scenes=("in-hand",)
):
    prompts = ProductPrompts("olis", "teapot")
    config = TrainConfig(steps=1, rank=2, prior_images=0, validation_prompts=[], checkpoint_every=0)
    lora = train_lora(tiny_pipe, [from_cutout(_product())] * 3, [], prompts=prompts, config=config,
                      out_dir=tmp_path / "lora").lora_file  # fmt: skip
    none = {"default_formats": [], "default_scenes": [], "templates_dir": REPO_TEMPLATES}
    plan = planning.plan_cards(["amazon-main", "ebay-square"], list(scenes), **none)
    judging = making.Judging(
        scorer=scoring.Scorer(str(tiny_encoders[0]), str(tiny_encoders[1])),
        gate=gate,
        keep=keep,
        keep_rejected=keep_rejected,
    )
    return making.make_cards(plan, [product], tmp_path / "cards", pipe=tiny_pipe, prompts=prompts,
                            lora_file=lora, judging=judging, steps=2)  # fmt: skip


def test_candidates_are_ranked_and_the_best_published(tiny_pipe, tiny_encoders, tmp_path, product):
    made = _make(tiny_pipe, tiny_encoders, tmp_path, product, scoring.Gate(-1, -1))  # in-hand: 2 candidates
    main, *scenes = made
    assert main.render.mode == "cutout" and main.status == "published" and "identity_dino" in main.scores
    assert sorted(c.candidate.rank for c in scenes) == [1, 2] and {c.candidate.of for c in scenes} == {2}
    best, other = sorted(scenes, key=lambda c: c.candidate.rank)
    assert scoring.combined(best.scores) >= scoring.combined(other.scores)
    assert best.status == "published" and best.file == "cards/ebay-square--in-hand.jpg"
    assert other.status == "rejected" and other.reason == "ranked 2 of 2; the best 1 are published"
    assert other.file is None and other.local_path is None  # not kept: keep_rejected is off
    for card in scenes:
        assert {"identity_dino", "identity_dino_max", "identity_clip", "prompt_clip"} <= set(card.scores)


def test_cards_below_the_thresholds_are_never_published(tiny_pipe, tiny_encoders, tmp_path, product):
    made = _make(tiny_pipe, tiny_encoders, tmp_path, product, scoring.Gate(1.01, -1), keep_rejected=True)
    main, *scenes = made
    assert main.status == "published"  # the real product is never gated
    assert all(c.status == "rejected" for c in scenes)
    best = next(c for c in scenes if c.candidate.rank == 1)
    assert best.reason.startswith("identity_dino") and "< min_identity 1.01" in best.reason
    assert best.gate == {"min_identity": 1.01, "min_prompt": -1}  # the thresholds it was judged by
    assert best.file.startswith("candidates/") and best.local_path.is_file()  # kept for the seller to pick


def test_a_template_may_set_its_own_thresholds():
    template = load_library(REPO_TEMPLATES)["oak-table"]
    judging = making.Judging(gate=scoring.Gate(0.5, 0.2))
    assert judging.gate_for(template) == scoring.Gate(0.5, 0.2)
    strict = template.model_copy(update={"min_identity": 0.8})
    assert judging.gate_for(strict) == scoring.Gate(0.8, 0.2)
