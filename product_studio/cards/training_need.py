"""Whether an SKU must train its LoRA (``PRODUCT_STUDIO_TRAIN__WHEN``), and why, in words the manifest keeps.

``always`` (the default) trains every SKU: binding the exact product to its identifier is the mission. With
``needed`` an SKU on a base model that renders a product from reference images (FLUX.2 [klein]) trains only
when its preview left a generate scene without a zero-shot card that passed the gate in some format, or the
seller sent a scene back to be made again; SD and SDXL, whose pipelines take no reference image, always
train.
"""

from __future__ import annotations

from product_studio.cards.planning import CardPlan
from product_studio.records import CardRecord


def training_needed(
    when: str, plan: CardPlan, preview: list[CardRecord] | None, zero_shot: bool
) -> tuple[bool, str]:
    """Whether to train, and why. ``preview``: the cards the preview made (None: no preview was made)."""
    if when == "always":
        return True, "every SKU trains (PRODUCT_STUDIO_TRAIN__WHEN=always)"
    if not zero_shot:
        return True, "this base model takes no reference images: its generate scenes need the product's LoRA"
    if preview is None:
        return True, "no zero-shot candidates were made to decide by (PRODUCT_STUDIO_PREVIEW=false)"
    if plan.seeds:
        return True, "the seller asked for scenes to be made again"
    published = {(c.format, c.template) for c in preview if c.status == "published"}
    later = plan.after_training()
    scenes = [f.id for f in later.formats if f.kind == "scene"]
    lacking = sorted({t.id for t in later.templates for f in scenes if (f, t.id) not in published})
    if lacking:
        return True, f"scene(s) {lacking} have no zero-shot card that passes the gate"
    if later.templates:
        return False, "every generate scene has a zero-shot card that passes the gate (TRAIN__WHEN=needed)"
    return False, "no scene needs the product's LoRA (TRAIN__WHEN=needed)"
