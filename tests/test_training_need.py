"""Whether an SKU trains (``PRODUCT_STUDIO_TRAIN__WHEN``), and the GPU seconds a catalogue saved."""

from __future__ import annotations

from pathlib import Path

from product_studio.cards import planning
from product_studio.cards.training_need import training_needed
from product_studio.publish import training_saved
from product_studio.records import CardRecord, Compliance, RenderInfo, SkuOutcome

TEMPLATES = Path(__file__).resolve().parents[1] / "templates"


def _plan(scenes: list[str]) -> planning.CardPlan:
    return planning.plan_cards(
        ["amazon-main", "ebay-square"], scenes, default_formats=[], default_scenes=[], templates_dir=TEMPLATES
    )


def _card(template: str, status: str) -> CardRecord:
    return CardRecord(
        file=f"cards/ebay-square--{template}--ref.jpg" if status == "published" else None,
        format="ebay-square",
        width=1600,
        height=1600,
        kind="scene",
        render=RenderInfo(mode="generate", conditioning=["reference"]),
        compliance=Compliance(format="ebay-square", passed=True, checks={}),
        scores={},
        template=template,
        status=status,
    )


def test_needed_trains_only_for_a_generate_scene_without_a_passing_zero_shot_card():
    both = _plan(["oak-table", "in-hand"])
    assert training_needed("always", both, [], True) == (
        True,
        "every SKU trains (PRODUCT_STUDIO_TRAIN__WHEN=always)",
    )
    need, why = training_needed("needed", both, [_card("in-hand", "rejected")], True)
    assert need and "['in-hand'] have no zero-shot card that passes the gate" in why
    need, why = training_needed("needed", both, [_card("in-hand", "published")], True)
    assert not need and "zero-shot card that passes the gate" in why
    assert training_needed("needed", _plan(["oak-table"]), [], True)[0] is False  # composites only
    need, why = training_needed("needed", _plan(["oak-table"]), [], False)  # SD, SDXL: always
    assert need and "takes no reference images" in why
    assert training_needed("needed", both, None, True)[0]  # no preview: nothing to decide by
    retried = both.model_copy(update={"seeds": {"in-hand@ebay-square": 7}})
    assert training_needed("needed", retried, [_card("in-hand", "published")], True) == (
        True,
        "the seller asked for scenes to be made again",
    )


def test_the_catalogue_report_counts_the_training_it_saved():
    def outcome(sku: str, training: str, seconds: float | None) -> SkuOutcome:
        return SkuOutcome.published("cat", sku, training=training, training_s=seconds)

    outcomes = [
        outcome("a", "trained", 100.0),
        outcome("b", "trained", 60.0),
        outcome("c", "not needed", None),
    ]
    assert training_saved(outcomes) == {"trainings_skipped": 1, "training_seconds_saved": 80.0}
    assert training_saved([outcome("c", "not needed", None)]) == {
        "trainings_skipped": 1,
        "training_seconds_saved": None,
    }
    assert training_saved([outcome("r", "reused", None)])["trainings_skipped"] == 0
