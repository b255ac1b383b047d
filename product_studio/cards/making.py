"""Making an SKU's cards: composing them, and rendering, scoring, labelling and gating the whole set
(``make_cards``).

A ``cutout`` format shows the *real* product only -- the cleaned seller photo on pure white, never a
generated image -- because a marketplace's main image must show exactly what the buyer receives. A ``scene``
format shows the product in a scene from a template, rendered at the format's own aspect in the template's
mode (``rendering``). Every card is checked against its format's rules (``formats.check_card``).

Cards show the first cutout fit for composites (``cutout_checks``; the first cutout when none is, and then
composite templates are generated: ``plan_for_cutouts``). Scene cards render at each format's aspect in each
template's mode, with the product LoRA at the template's scale -- or at scale 0 for templates that do not
use it (composites: so the SKU's preview, made before training with no LoRA at all, has the same pixels). A
dedicated inpainting checkpoint takes the LoRA too; an upscaler scales renders up before the last Lanczos
step. A template's candidates are rendered in one batch, scored and ranked: the best ``keep`` that pass the
gate are published, the others recorded as rejected with the reason (their files kept under ``candidates/``
with ``keep_rejected``). Composite cards are scored for object expansion by segmenting them again; generated
ones are cropped around the product the cleaner finds. Every card file carries its IPTC label and, with a
signer, a C2PA manifest.

On a base model whose pipeline takes reference images (FLUX.2 [klein]) generate templates render with up to
4 cutouts as references: with no LoRA (a preview) zero-shot, their cards named ``...--ref``; after training
those candidates compete with the LoRA's under one ranking and gate, and come back re-judged (an earlier card
that loses is rejected, its file no longer named).
"""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from PIL import Image

from product_studio import cleaning, cutout_checks
from product_studio.cards import quality, scoring
from product_studio.cards.formats import CardFormat, check_card
from product_studio.cards.planning import CardPlan, plan_for_cutouts
from product_studio.cards.scoring import Gate, Scorer
from product_studio.families import family_for
from product_studio.identifiers import ProductPrompts
from product_studio.layout import CANDIDATES, CARDS, CUTOUTS, MANIFEST, sku_key
from product_studio.models import model_identity, public_model_name, public_tool_name
from product_studio.provenance.labelling import Labelling
from product_studio.records import (
    CandidateInfo,
    CardOrigin,
    CardRecord,
    CleanedPhoto,
    InputRef,
    PhotoRecord,
    ProductPlacement,
    RenderInfo,
)
from product_studio.rendering import renderer
from product_studio.rendering.scenes import (
    Placement,
    SceneTemplate,
    check_prompt_lengths,
)

if TYPE_CHECKING:
    from diffusers import DiffusionPipeline


# Segments an image: the product's mask (L, 255 = product), as the cleaner makes it.
Segmenter = Callable[[Image.Image], Image.Image]


def card_origin(
    catalogue_id: str,
    sku: str,
    photos: list[PhotoRecord],
    lora_file: Path | None,
    *,
    base_model: str,
    cleaner: str,
) -> CardOrigin:
    """What an SKU's cards are made from, for their labels: its manifest key, models and photos by hash."""
    base = model_identity(base_model)
    return CardOrigin(
        manifest=sku_key(catalogue_id, sku, MANIFEST),
        base_model=public_model_name(base_model),  # the labels are public: never a server path
        base_model_revision=base["revision"],
        cleaner=public_tool_name(cleaner),
        photos=[InputRef(file=p.file, sha256=p.sha256) for p in photos],
        lora=(  # none in a preview: its cards were made before the LoRA was trained
            InputRef(file=lora_file.name, sha256=hashlib.sha256(lora_file.read_bytes()).hexdigest())
            if lora_file is not None
            else None
        ),
    )


def compose_cutout_card(
    card_format: CardFormat, cutout: Image.Image
) -> tuple[Image.Image, tuple[int, int, int, int]]:
    """The real product (an RGBA cutout, its soft edge cleaned of the old background's colour) centred on
    pure white at the format's exact size, and its box."""
    placement = Placement(scale=card_format.fill, anchor="center")
    placed = renderer.place_product(cutout, (card_format.width, card_format.height), placement)
    # Edge colours cleaned at the card's size: a full-resolution cutout costs no more than the card.
    layer = placed.layer
    layer.paste(cleaning.clean_edge_colours(layer.crop(placed.box)), placed.box[:2])
    canvas = Image.new("RGBA", layer.size, (255, 255, 255, 255))
    canvas.alpha_composite(layer)
    return canvas.convert("RGB"), placed.box


def _save_card(
    image: Image.Image,
    card_format: CardFormat,
    name: str,
    dest: Path,
    hero: Image.Image,
    labelling: Labelling,
    folder: str = CARDS,
    enlargement: float | None = None,
    **record: Any,
) -> CardRecord:
    """Write the card file with its labels, check it against its format's rules; its record."""
    (dest / folder).mkdir(parents=True, exist_ok=True)
    path = dest / folder / f"{name}.{card_format.extension}"
    mode = record["render"].mode
    provenance = labelling.save(image, path, card_format.file_type, mode)
    scores = {**quality.score_card(image, card_format.kind, hero), **record.pop("scores", {})}
    return CardRecord(
        file=f"{folder}/{path.name}",
        format=card_format.id,
        width=image.width,
        height=image.height,
        kind=card_format.kind,
        local_path=path,
        compliance=check_card(card_format, path, mode=mode, enlargement=enlargement),
        scores=scores,
        provenance=provenance,
        **record,
    )


def _enlargement(
    cutout: Image.Image, seller_side: int | None, box: tuple[int, int, int, int]
) -> float | None:
    """Card pixels per source pixel across the product: from the seller's photo or, where smaller, the
    cutout the card was made from (None when the photo's product was not measured)."""
    alpha_box = cutout.getchannel("A").point(lambda v: 255 if v >= 128 else 0).getbbox()
    if not seller_side or alpha_box is None:
        return None
    used = min(seller_side, max(alpha_box[2] - alpha_box[0], alpha_box[3] - alpha_box[1]))
    return round(max(box[2] - box[0], box[3] - box[1]) / used, 2)


@dataclass(frozen=True)
class Judging:
    """How scene candidates are scored, ranked and gated (``scoring``); without a scorer, the first wins."""

    scorer: Scorer | None = None
    gate: Gate | None = None
    keep: int = 1
    keep_rejected: bool = False

    def gate_for(self, template: SceneTemplate) -> Gate | None:
        """The gate with the template's own thresholds where it sets them."""
        if self.gate is None:
            return None
        return Gate(
            self.gate.min_identity if template.min_identity is None else template.min_identity,
            self.gate.min_prompt if template.min_prompt is None else template.min_prompt,
        )


def make_cards(
    plan: CardPlan,
    cutouts: list[CleanedPhoto],
    dest: Path,
    *,
    pipe: DiffusionPipeline | None = None,
    prompts: ProductPrompts | None = None,
    lora_file: Path | None = None,
    segment: Segmenter | None = None,
    inpainter: DiffusionPipeline | None = None,
    inpainter_name: str = "base",
    upscaler: renderer.Upscaler | None = None,
    judging: Judging | None = None,
    steps: int | None = None,
    guidance_scale: float | None = None,
    labelling: Labelling | None = None,
    earlier: list[CardRecord] | None = None,
) -> list[CardRecord]:
    """Every card of an SKU: each cutout format once; each scene format once per template and candidate
    (the module docstring says how). ``lora_file`` None: an SKU's preview, made before training;
    ``steps``/``guidance_scale`` override the templates' own; ``segment`` is the cleaner's mask;
    ``inpainter`` a dedicated inpainting checkpoint (named ``inpainter_name``); ``upscaler`` diffusers' SD x4
    or latent x2; ``judging`` how candidates are scored, ranked and gated; ``labelling`` the IPTC label and
    C2PA signer; ``earlier`` a preview's zero-shot candidates, competing again.
    """
    plan = plan_for_cutouts(plan, cutouts)
    sku = _SkuCards.of(cutouts, dest, judging or Judging(), labelling or Labelling(), prompts, segment)
    made = [_cutout_card(sku, f) for f in plan.formats if f.kind == "cutout"]
    scene_formats = [f for f in plan.formats if f.kind == "scene"]
    if not (scene_formats and plan.templates):
        return made
    if pipe is None or prompts is None:
        raise ValueError("scene cards need the pipeline and the product's prompts")
    zero_shot = family_for(pipe).takes_reference_images
    needing = [t.id for t in plan.templates if t.uses_lora and not (zero_shot and t.mode == "generate")]
    if needing and lora_file is None:
        raise ValueError(f"scene template(s) {needing} render with the product's LoRA: train it first")
    check_prompt_lengths(plan.templates, pipe.tokenizer, prompts)  # before any GPU time on rendering
    options = {
        "steps": steps,
        "guidance_scale": guidance_scale,
        "locate": _locator(segment),
        "inpainter": inpainter,
        "upscaler": upscaler,
        "lora_loaded": lora_file is not None,
        "references": reference_images(cutouts) if zero_shot else None,
    }
    with contextlib.ExitStack() as loras:
        if lora_file is not None:  # without one (a preview), the plain base model renders
            loras.enter_context(renderer.product_lora(pipe, lora_file))
            if inpainter is not None:
                loras.enter_context(renderer.product_lora(inpainter, lora_file))
        made += _scene_cards(sku, plan, scene_formats, pipe, prompts, options, earlier or [], inpainter_name)
    rendered = {(f.id, t.id) for t in plan.templates for f in scene_formats}
    return made + [c for c in earlier or [] if (c.format, c.template) not in rendered]


def _scene_cards(
    sku: _SkuCards,
    plan: CardPlan,
    scene_formats: list[CardFormat],
    pipe: DiffusionPipeline,
    prompts: ProductPrompts,
    options: dict[str, Any],
    earlier: list[CardRecord],
    inpainter_name: str,
) -> list[CardRecord]:
    """Every template's candidates in every scene format, judged (with the ``earlier`` ones of the same
    template and format) and saved."""
    made = []
    for own in plan.templates:
        for f in scene_formats:
            template = plan.seeded(own, f)
            renders = renderer.render_scene_cards(
                pipe, template, prompts, sku.hero, (f.width, f.height), **options
            )
            render = _render_info(template, renders[0], f, options["upscaler"], inpainter_name)
            rivals = [c for c in earlier if (c.format, c.template) == (f.id, template.id)]
            verdicts = _judge(sku, renders, template, rivals)
            made += [_save_candidate(sku, f, template, render, c) for c in verdicts if c.render is not None]
            made += [_rejudged(c) for c in verdicts if c.earlier is not None]
    return made


# klein's pipeline is shown at most this many of an SKU's cutouts (Black Forest Labs documents up to 4).
MAX_REFERENCES = 4


def reference_images(cutouts: list[CleanedPhoto]) -> list[Image.Image]:
    """Up to ``MAX_REFERENCES`` of the SKU's cutouts as reference images (``renderer.reference_image``): the
    ones fit for composites first, in the seller's order."""
    ordered = [c for c in cutouts if c.not_for_composites is None] + [
        c for c in cutouts if c.not_for_composites is not None
    ]
    return [renderer.reference_image(Image.open(c.cutout_path)) for c in ordered[:MAX_REFERENCES]]


@dataclass(frozen=True)
class _SkuCards:
    """What every card of one SKU is made from, judged by and written to."""

    hero_photo: CleanedPhoto  # the cutout the cards show (the cleanest)
    hero: Image.Image
    dest: Path
    judging: Judging
    labelling: Labelling
    references: Any  # the scorer's features of every cutout
    prompts: ProductPrompts | None
    segment: Segmenter | None

    @classmethod
    def of(
        cls,
        cutouts: list[CleanedPhoto],
        dest: Path,
        judging: Judging,
        labelling: Labelling,
        prompts: ProductPrompts | None,
        segment: Segmenter | None,
    ) -> _SkuCards:
        dest.mkdir(parents=True, exist_ok=True)
        hero_photo = cutout_checks.cleanest(cutouts) or cutouts[0]
        scorer = judging.scorer
        references = scorer.references([Image.open(c.cutout_path) for c in cutouts]) if scorer else None
        hero = Image.open(hero_photo.cutout_path)
        labelling = labelling.showing(hero_photo.source)
        return cls(hero_photo, hero, dest, judging, labelling, references, prompts, segment)

    @property
    def hero_key(self) -> str:
        return f"{CUTOUTS}/{self.hero_photo.cutout_path.name}"


def _cutout_card(sku: _SkuCards, card_format: CardFormat) -> CardRecord:
    """The real product on white, scored as a card (its prompt: the product without the identifier)."""
    image, box = compose_cutout_card(card_format, sku.hero)
    scores = {}
    if sku.judging.scorer is not None:
        prompt = sku.prompts.plain if sku.prompts else "a product photo"
        region = scoring.product_region(image, box)
        (scores,) = sku.judging.scorer.score([region], [image], [prompt], sku.references)
    record = {
        "render": RenderInfo(mode="cutout"),
        "product": ProductPlacement(cutout=sku.hero_key, box=box),
        "scores": scores,
    }
    enlarged = _enlargement(sku.hero, sku.hero_photo.product_side, box)
    return _save_card(
        image, card_format, card_format.id, sku.dest, sku.hero, sku.labelling, enlargement=enlarged, **record
    )


def _render_info(
    template: SceneTemplate,
    first: renderer.SceneRender,
    card_format: CardFormat,
    upscaler: renderer.Upscaler | None,
    inpainter_name: str,
) -> RenderInfo:
    """How a template's renders for one format were made: mode, model size, upscaler, inpainter."""
    size = (card_format.width, card_format.height)
    upscaled = upscaler is not None and renderer.upscaler_runs(first.render_size, size)
    return RenderInfo(
        mode=template.mode,
        size=first.render_size,
        upscaler=upscaler.name if upscaled else renderer.UPSCALER,
        inpainter=inpainter_name if template.mode == "composite" else None,
        reference=first.reference_size,
    )


@dataclass(frozen=True)
class _Verdict:
    """One candidate, judged: its render, scores, rank among the template's candidates and why it is not
    published (None: it is)."""

    render: renderer.SceneRender | None  # None: an earlier candidate (``earlier``)
    index: int
    of: int
    rank: int
    scores: dict[str, float]
    reason: str | None
    gate: Gate | None
    earlier: CardRecord | None = None


def _judge(
    sku: _SkuCards,
    renders: list[renderer.SceneRender],
    template: SceneTemplate,
    rivals: list[CardRecord] | None = None,
) -> list[_Verdict]:
    """Score a template's candidates for one format and rank them, with ``rivals`` (earlier candidates,
    already scored): the best ``keep`` that pass the gate are published, the others say why not."""
    judging = sku.judging
    identity: list[dict[str, float]] = [{} for _ in renders]
    if judging.scorer is not None and sku.prompts is not None:
        # The product's box: composite cards placed it; generated ones were searched when they were cropped.
        regions = [
            scoring.product_region(r.image, r.placed.box if r.placed else r.product_box) for r in renders
        ]
        texts = [sku.prompts.unnamed(r.made_with["prompt"]) for r in renders]
        identity = judging.scorer.score(regions, [r.image for r in renders], texts, sku.references)
    rivals = rivals or []
    entries = [(r, None, identity[i], i) for i, r in enumerate(renders)]
    entries += [(None, c, c.scores, c.candidate.index if c.candidate else 0) for c in rivals]
    # Stable: renders first, in order, so without scores the first render wins as before.
    order = sorted(range(len(entries)), key=lambda n: -scoring.combined(entries[n][2]))
    gate = judging.gate_for(template)
    verdicts = []
    for rank, n in enumerate(order, start=1):
        render, card, scores, index = entries[n]
        if rank > judging.keep:
            reason = f"ranked {rank} of {len(entries)}; the best {judging.keep} are published"
        else:
            reason = gate.reason(scores) if gate and judging.scorer else None
        verdicts.append(_Verdict(render, index, len(entries), rank, scores, reason, gate, card))
    return verdicts


def _rejudged(verdict: _Verdict) -> CardRecord:
    """An earlier candidate's record after it competed again: still published (the same file), or
    rejected with why (its file no longer named)."""
    card = verdict.earlier
    assert card is not None
    candidate = CandidateInfo(index=verdict.index, of=verdict.of, rank=verdict.rank)
    if verdict.reason is None:
        return card.model_copy(update={"candidate": candidate})
    update = {"status": "rejected", "reason": verdict.reason, "candidate": candidate}
    if card.status == "published":
        update |= {"file": None, "local_path": None}
    return card.model_copy(update=update)


def _save_candidate(
    sku: _SkuCards, card_format: CardFormat, template: SceneTemplate, render: RenderInfo, verdict: _Verdict
) -> CardRecord:
    """Write a judged candidate: a published card under ``cards/``, a rejected one under ``candidates/``
    (its file dropped from the record unless ``keep_rejected``)."""
    r, published, gate = verdict.render, verdict.reason is None, verdict.gate
    assert r is not None
    keep_one = published and sku.judging.keep == 1
    # Zero-shot candidates (no LoRA) never share a name with the LoRA's: a preview card keeps its name and
    # bytes, or stops being named.
    own = "--ref" if r.conditioning == ["reference"] else ""
    name = f"{card_format.id}--{template.id}{own}" + ("" if keep_one else f"--{verdict.index}")
    if r.light is not None:  # composite: how this candidate's product is lit and who drew its shadow
        render = render.model_copy(update={"light": r.light, "shadow": r.shadow})
    if r.conditioning is not None:
        render = render.model_copy(update={"conditioning": r.conditioning})
    record: dict[str, Any] = {
        "render": render,
        "scores": {**verdict.scores, **(r.scores or {})},
        "status": "published" if published else "rejected",
        "reason": verdict.reason,
        "candidate": CandidateInfo(index=verdict.index, of=verdict.of, rank=verdict.rank),
        "gate": {"min_identity": gate.min_identity, "min_prompt": gate.min_prompt} if gate else None,
        **r.made_with,
    }
    if r.placed is not None:
        record["product"] = ProductPlacement(cutout=sku.hero_key, box=r.placed.box)
    folder = CARDS if published else CANDIDATES
    card = _save_card(r.image, card_format, name, sku.dest, sku.hero, sku.labelling, folder=folder, **record)
    if r.placed is not None and sku.segment is not None:
        card = _with_expansion(card, r.image, r.placed.layer, sku.segment)
    if not published and not sku.judging.keep_rejected:
        card = card.model_copy(update={"file": None, "local_path": None})
    return card


def _locator(
    segment: Segmenter | None,
) -> Callable[[Image.Image], tuple[float, float, float, float] | None] | None:
    if segment is None:
        return None

    def locate(image: Image.Image) -> tuple[float, float, float, float] | None:
        try:
            return renderer.relative_box(segment(image))
        except ValueError:  # the cleaner found no product: crop about the middle, score the whole card
            return None

    return locate


def _with_expansion(
    card: CardRecord, image: Image.Image, layer: Image.Image, segment: Segmenter
) -> CardRecord:
    """The card with its object-expansion score (left out when the cleaner cannot segment the card)."""
    small = image.copy()
    small.thumbnail((256, 256), Image.Resampling.BILINEAR)  # the score compares at 256 px; GrabCut is slow
    try:
        found = segment(small)
    except ValueError:
        return card
    expansion = round(quality.object_expansion(found, layer.getchannel("A")), 4)
    return card.model_copy(update={"scores": {**card.scores, "object_expansion": expansion}})
