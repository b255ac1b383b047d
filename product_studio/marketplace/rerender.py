"""Another try at a scene card a seller sent back (``"decision": "retry"``), without training again.

The SKU's published run is carried into a new run: every file is kept as it was (same bytes, so the
seller's other decisions still hold), except the retried cards, which are rendered again with the
published LoRA and new seeds. The new card has the same name and new pixels, so the seller's ``retry``
decision no longer matches it: it comes back for review. A main image (the seller's own photo) cannot be
retried; a retry of it is ignored and said so. A full run of the SKU later (forced, or for new scenes) keeps
the tries (:func:`keep_tries`): it never brings a card the seller sent back to life.
"""

from __future__ import annotations

import json
from pathlib import Path

from product_studio.cards.formats import FORMATS
from product_studio.cards.planning import CardPlan, seed_key
from product_studio.layout import CONTACT_SHEET, REVIEW_PAGE, run_prefix, sku_key
from product_studio.manifest import Manifest, in_run, labels_entry, now
from product_studio.records import CardRecord
from product_studio.rendering.scenes import SceneTemplate
from product_studio.review.decisions import Decisions, card_name, current_decisions
from product_studio.storage import Store

SEED_STEP = 1000  # a retry's seeds start this far past the card's own: never a candidate seen before


def retry_targets(manifest: Manifest, decisions: Decisions | None) -> tuple[list[CardRecord], list[str]]:
    """The proposed scene cards whose current decision is ``retry``, and notes on retries that cannot be."""
    holding = current_decisions(decisions, manifest) if decisions else {}
    targets, notes = [], []
    for card in manifest.cards:
        if card.status != "published" or not card.file:
            continue
        decision = holding.get(card_name(card.file))
        if decision is None or decision.decision != "retry":
            continue
        if card.kind != "scene" or card.template is None:
            notes.append(f"{card_name(card.file)} is your own photo: it cannot be made again, only rejected")
            continue
        targets.append(card)
    return targets, notes


def retry_plans(targets: list[CardRecord], library: dict[str, SceneTemplate]) -> list[CardPlan]:
    """One plan per retried card: its template with new seeds, in its own format (nothing else rendered)."""
    plans: dict[tuple[str, str], CardPlan] = {}
    for card in targets:
        if card.template not in library:
            raise ValueError(f"scene template {card.template!r} of {card.file} is no longer in the library")
        seed = (card.seed if card.seed is not None else library[card.template].seed) + SEED_STEP
        template = library[card.template].model_copy(update={"seed": seed})
        plans[(card.template, card.format)] = CardPlan(formats=[FORMATS[card.format]], templates=[template])
    return list(plans.values())


def keep_tries(plan: CardPlan, published: Manifest | None, decisions: Decisions | None) -> CardPlan:
    """``plan`` for a new run of an SKU (forced, or with new scenes): a scene the seller sent back is
    rendered with new seeds (as :func:`retry_plans` would), and one made again before keeps the seeds of its
    last try, so a new run never brings back pixels the seller asked to be made again."""
    if published is None:
        return plan
    holding = current_decisions(decisions, published) if decisions else {}
    own = {t.id: t.seed for t in plan.templates}
    kept: dict[str, int] = {}
    again: dict[str, int] = {}
    for card in published.cards:
        if card.template not in own or card.seed is None:
            continue
        key = seed_key(card.template, card.format)
        decision = holding.get(card_name(card.file)) if card.file else None
        if decision is not None and decision.decision == "retry":
            again[key] = max(again.get(key, 0), card.seed + SEED_STEP)
        base = card.seed - (card.candidate.index if card.candidate else 0)
        if base != own[card.template]:
            kept.setdefault(key, base)
    seeds = {**kept, **again}
    return plan.model_copy(update={"seeds": seeds}) if seeds else plan


def carried_run(manifest: Manifest, run: str) -> Manifest:
    """The manifest with every key moved from its run's prefix to ``runs/<run>/`` (files carried over)."""
    old, new = run_prefix(manifest.run) + "/", run_prefix(run) + "/"
    data = json.loads(manifest.to_json().decode().replace(f'"{old}', f'"{new}'))
    data["files"] = {k.replace(old, new, 1): v for k, v in manifest.files.items()}
    return Manifest.model_validate({**data, "run": run, "created": now(), "published": None})


def merge_retried(
    manifest: Manifest, made: list[CardRecord], targets: list[CardRecord], run: str
) -> list[CardRecord]:
    """The carried manifest's cards with each retried (template, format) replaced by its new cards."""
    wanted = {(t.template, t.format) for t in targets}
    fresh = [in_run(c, run_prefix(run)) for c in made if (c.template, c.format) in wanted]
    cards: list[CardRecord] = []
    for card in manifest.cards:
        if (card.template, card.format) in wanted:
            if fresh:
                cards.extend(fresh)  # where the first of the replaced cards was
                fresh = []
            continue
        cards.append(card)
    return cards


def retried_run(
    published: Manifest, made: list[CardRecord], targets: list[CardRecord], run: str
) -> tuple[Manifest, set[str]]:
    """The new run's manifest -- ``published`` carried into ``run`` with the retried cards replaced by
    ``made`` and a note for the seller -- and the keys of ``published``'s files it no longer names."""
    carried = carried_run(published, run)
    wanted = {(t.template, t.format) for t in targets}
    dropped = {c.file for c in published.cards if (c.template, c.format) in wanted and c.file}
    retried = ", ".join(card_name(t.file or "") for t in targets)
    cards = merge_retried(carried, made, targets, run)
    manifest = carried.model_copy(
        update={
            "cards": cards,
            "labels": labels_entry(cards),
            "notes": [*carried.notes, f"made again at your request: {retried}"],
        }
    )
    return manifest, dropped


def new_card_files(manifest: Manifest) -> dict[str, Path]:
    """The manifest's cards rendered by this run (they have a local file), by key."""
    return {c.file: c.local_path for c in manifest.cards if c.local_path is not None and c.file}


def carried_files(
    output: Store, before: Manifest, after: Manifest, dropped: set[str], dest: Path
) -> dict[str, Path]:
    """Download the files ``after`` keeps from ``before``'s run: all but ``dropped`` and the review pages."""
    old, new = run_prefix(before.run) + "/", run_prefix(after.run) + "/"
    files: dict[str, Path] = {}
    for key in before.files:
        if key in dropped or key.endswith((REVIEW_PAGE, CONTACT_SHEET)):
            continue
        path = dest / key.removeprefix(old)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(output.read(sku_key(before.catalogue_id, before.sku, key)))
        files[new + key.removeprefix(old)] = path
    return files
