"""What the seller's pages say about a card, in the seller's words.

A seller sees one state per card, a line on whether it looks like their product and matches its scene, and
what a marketplace's rule asks of them -- never an identifier, a prompt, a model, a path or a metric's name.
The numbers stay in the manifest and behind the card's "details" for operators.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from product_studio.cards.formats import FORMATS
from product_studio.records import CardRecord

# A composite card whose fresh segmentation finds more than this share of the product's area outside the
# placed product: the scene may have added to the product's outline (``quality.object_expansion``).
EXPANSION_CHECK = 0.05

MADE = {
    "cutout": "Your photo, on pure white",
    "composite": "Your photo, in a new scene",
    "generate": "Made from your photos by the product model",
}

# What a broken marketplace rule means to the seller (``formats.check_card``'s rule names).
_RULES = {
    "size": "the image is not the size {market} asks for",
    "min_size": "the image is smaller than {market} accepts",
    "file_type": "the file type is not one {market} accepts",
    "colour": "the colours are not saved the way {market} asks (sRGB)",
    "file_size": "the file is larger than {market} accepts",
    "white_background": "{market} asks for a pure white background here",
    "fill": "the product looks too small in the frame for {market}",
    "no_borders": "{market} does not allow a border around the image",
    "label": "the image lacks its label saying how it was made",
}


# Every card of a run made by a model licensed for non-commercial use only (``Manifest.noncommercial``).
NONCOMMERCIAL = "Made with an AI model licensed for non-commercial use only: this card cannot go on {market}"


def noncommercial(card: CardRecord) -> str:
    """What the page says on a card made by a model licensed for non-commercial use only."""
    return NONCOMMERCIAL.format(market=marketplace_of(card))


@dataclass(frozen=True)
class Check:
    """One line of a card's quality: ``ok`` (a good mark) or a thing to check, in words."""

    ok: bool
    words: str


def when(iso: str) -> str:
    """``2026-12-06T21:40:00+00:00`` as ``6 Dec 2026, 21:40 UTC`` (the text itself when it is no time)."""
    try:
        at = datetime.fromisoformat(iso)
    except (TypeError, ValueError):
        return iso
    return f"{at.day} {at:%b %Y, %H:%M} UTC"


def heading(card: CardRecord) -> str:
    """The card's marketplace format, as the seller knows it."""
    known = FORMATS.get(card.format)
    return known.title if known else card.format


def made(card: CardRecord) -> str:
    """How the card was made, with its scene: ``Your photo, in a new scene: Oak table``."""
    words = MADE.get(card.render.mode, card.render.mode)
    if card.template:
        words += ": " + card.template.replace("-", " ").replace("_", " ").capitalize()
    return words


def light(card: CardRecord) -> str | None:
    """What the page says of a composite card's light: relit for the scene, or shown as photographed."""
    lit = card.render.light
    if lit is None:
        return None
    if lit.mode == "match":
        return (
            "Relit for the scene: the light on your product matches its surroundings; its colours and "
            "details are your photo's"
        )
    if lit.requested == "match":
        return "Shown in your photo's own light: relighting it for the scene would have changed its look"
    return "Shown exactly as you photographed it"


def coming(count: int, failed: str | None) -> str:
    """What a preview page says of the cards still to come, or of the rest of the run that failed."""
    cards = "card" if count == 1 else "cards"
    if failed:
        return (
            f"{count} more {cards} could not be made this time; we will try again. The cards here are ready "
            "for your decision."
        )
    return (
        f"{count} more {cards} {'is' if count == 1 else 'are'} on the way: scenes drawn by a model that is "
        "learning your product. This page shows them when they are ready; you can decide on the cards here "
        "now."
    )


def photo_set(usable: int, needed: int, retake: list[str]) -> str:
    """The set-level advice: too few different, usable views, and which photos to retake."""
    views = "view" if usable == 1 else "views"
    return (
        f"Your photos give {usable} clear, different {views} of the product; {needed} or more make better "
        f"cards. We made your cards anyway. Next time, retake {', '.join(retake)} as the notes below say."
    )


def quality(card: CardRecord) -> list[Check]:
    """Whether the card looks like the seller's product and matches its scene, by the thresholds the card
    was judged by (its ``gate``); and, for composites, whether the scene kept the product's outline."""
    gate = card.gate or {}
    scores = card.scores
    checks = []
    if "identity_dino" in scores and "min_identity" in gate:
        ok = scores["identity_dino"] >= gate["min_identity"]
        checks.append(Check(ok, "Looks like your product" if ok else "Check that it looks like your product"))
    if "prompt_clip" in scores and "min_prompt" in gate:
        ok = scores["prompt_clip"] >= gate["min_prompt"]
        checks.append(Check(ok, "Matches the scene" if ok else "Check that it matches the scene"))
    if "object_expansion" in scores:
        ok = scores["object_expansion"] <= EXPANSION_CHECK
        checks.append(
            Check(ok, "Your product's outline is unchanged" if ok else "Check your product's outline: the "
                  "scene may have added to it")
        )  # fmt: skip
    return checks


def rule_problems(card: CardRecord) -> list[str]:
    """The marketplace rules the card breaks, each saying what would fix it where the seller can."""
    known = FORMATS.get(card.format)
    market = known.marketplace if known else card.compliance.format
    problems = []
    for name, ok in card.compliance.checks.items():
        if ok:
            continue
        if name == "source_pixels" and known is not None:
            across = round(min(known.min_width, known.min_height) * known.fill)
            problems.append(
                f"your photo is too small for a sharp image here: send a photo in which the product is at "
                f"least {across} px across with your next upload"
            )
        else:
            problems.append(_RULES.get(name, "it breaks a rule of {market}").format(market=market))
    return problems


def numbers(card: CardRecord) -> list[tuple[str, str]]:
    """The scores behind the quality line, named for operators (``details``)."""
    names = {
        "identity_dino": "identity (DINO, mean over the photos)",
        "identity_dino_max": "identity (DINO, best photo)",
        "identity_clip": "identity (CLIP image, mean)",
        "identity_clip_max": "identity (CLIP image, best photo)",
        "prompt_clip": "scene match (CLIP text)",
        "object_expansion": "outline grown (share of the product's area)",
        "detail_kept": "relight: detail kept (high-pass correlation; 0.90 needed)",
        "hue_shift_deg": "relight: hue moved (degrees; 6 at most)",
    }
    rows = [(names.get(k, k.replace("_", " ")), f"{v:.3f}") for k, v in sorted(card.scores.items())]
    for name, value in sorted((card.gate or {}).items()):
        rows.append((f"threshold: {name.removeprefix('min_')}", f"{value:.3f}"))
    return rows


def marketplace_of(card: CardRecord) -> str:
    known = FORMATS.get(card.format)
    return known.marketplace if known else card.compliance.format


def possessive(name: str) -> str:
    """``Amazon's``, ``Wildberries'``."""
    return name + ("'" if name.endswith("s") else "'s")


def photo_problem(file: str, reason: str) -> str:
    """A photo's problem without the file name it starts with (the page shows the name beside it)."""
    return reason.removeprefix(f"{file}: ")


def label_words(card: CardRecord) -> str:
    """What the file itself says about how it was made (its IPTC label, its C2PA Content Credentials)."""
    p = card.provenance
    if p is None:
        return "no label in the file (made before cards were labelled)"
    what = "your photo, background removed" if card.render.mode == "cutout" else "made with AI"
    signed = "; signed Content Credentials (C2PA)" if p.c2pa else ""
    return f"labelled in the file as {what}{signed}"


def rejected(card: CardRecord) -> str:
    """Why a try was not proposed, in words: what it fell short on, else that another try was better."""
    gate, scores = card.gate or {}, card.scores
    short = []
    if scores.get("identity_dino", 1.0) < gate.get("min_identity", -1.0):
        short.append("look enough like your product")
    if scores.get("prompt_clip", 1.0) < gate.get("min_prompt", -1.0):
        short.append("match its scene")
    if short:
        return "Not proposed: it did not " + " or ".join(short)
    return "Not proposed: another try of this card looked better"
