"""Scene templates: the YAML library in ``templates/``, its schema, suitability, and safe prompt filling.

A template's prompts may use exactly one placeholder, ``{product}``, which becomes
"<identifier> <class noun>". Any other brace is an error when the library loads, not at render time.
A template says how its scene is made (``mode``: *composite* keeps the seller's own pixels and generates
the surroundings; *generate* renders the whole image with the product LoRA), where the product stands
(``placement``), how many candidates to render, and which products it suits (class nouns or categories).

A composite template also says how its product is lit (``light``): ``keep`` shows the seller's pixels as
shot (studio backdrops and white sweeps, whose soft even light is the photo's own); ``match`` -- the default,
for the lifestyle scenes a template describes by its prompt alone -- relights them for the scene at
``light_strength`` (``rendering.relight``), keeping their hue unless ``light_colour: scene``.

A composite card needs no product LoRA: its product is the seller's pixels (and FLUX.2 [klein]'s inpainter is
shown the cutout). So composite templates are rendered in the SKU's *preview*, before training; ``generate``
templates, whose product only the LoRA knows, after it (``needs_lora`` says otherwise for one template).
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from product_studio.identifiers import ProductPrompts, check_product_template


class TemplateError(ValueError):
    """A scene template file or id is invalid; the message names the file, field or id."""


def _words(text: str) -> frozenset[str]:
    return frozenset(text.split())


# Categories a template may name in ``suits``; a product belongs to one when its class noun's last word is
# listed (a "tea pot" is kitchenware). ``any`` suits every product.
CATEGORIES: dict[str, frozenset[str]] = {
    "kitchenware": _words(
        "board bottle bowl carafe cup glass grinder jar jug kettle knife mug pan plate pot teapot thermos "
        "tray tumbler"
    ),
    "bags": _words("backpack bag handbag luggage purse satchel suitcase tote wallet"),
    "apparel": _words("cap coat dress hat hoodie jacket jeans scarf shirt skirt sweater"),
    "footwear": _words("boot boots sandal sandals shoe shoes slipper sneaker sneakers"),
    "electronics": _words("camera charger earbuds headphones keyboard mouse phone speaker watch"),
    "beauty": _words("candle cream lipstick lotion perfume serum shampoo soap"),
    "home-decor": _words("basket candle clock cushion frame lamp pillow plant planter rug vase"),
    "toys": _words("ball bear car doll puzzle robot teddy toy"),
    "outdoor": _words("backpack bicycle boots bottle flask helmet tent"),
    "jewellery": _words("bracelet brooch earrings necklace pendant ring"),
    "stationery": _words("book diary notebook pen pencil planner"),
}


class Placement(BaseModel):
    """Where the product stands in a composite card (fractions of the card).

    The product fits inside ``scale`` of the card's width and height; ``anchor: floor`` puts its bottom
    edge at ``floor`` (from the top), ``anchor: center`` centres it vertically; ``x`` is its centre.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    scale: float = Field(0.6, ge=0.1, le=0.95)
    anchor: Literal["floor", "center"] = "floor"
    floor: float = Field(0.86, ge=0.3, le=1.0)
    x: float = Field(0.5, ge=0.2, le=0.8)


class SceneTemplate(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str = Field(pattern=r"^[a-z0-9][a-z0-9-]{0,62}$")
    title: str
    prompt: str
    negative_prompt: str = ""
    mode: Literal["composite", "generate"] = "composite"
    placement: Placement = Field(default_factory=Placement)
    candidates: int = Field(1, ge=1, le=8, description="renders per card, in one batch")
    steps: int = Field(30, ge=1, le=200)
    guidance_scale: float = Field(7.5, ge=0, le=30)
    lora_scale: float = Field(1.0, ge=0, le=1.5, description="strength of the product LoRA")
    seed: int = Field(0, ge=0)
    min_identity: float | None = Field(None, ge=-1, le=1, description="this template's identity threshold")
    min_prompt: float | None = Field(None, ge=-1, le=1, description="this template's prompt threshold")
    suits: list[str] = Field(default_factory=lambda: ["any"], description="class nouns or categories")
    light: Literal["keep", "match"] = Field(
        "match", description="composite: keep the photo's light, or match the scene's (relight)"
    )
    light_strength: float = Field(
        0.35, ge=0.05, le=0.8, description="match: how much of the product the model redraws to light it"
    )
    light_colour: Literal["keep", "scene"] = Field(
        "keep", description="match: keep the product's hue and saturation, or let the scene's light tint it"
    )
    needs_lora: bool | None = Field(
        None,
        description="rendered with the product's LoRA, so only after training; default: generate templates "
        "do, composite ones (the seller's own pixels) do not and are in the preview",
    )

    @property
    def uses_lora(self) -> bool:
        """Whether its cards wait for the product's LoRA (``needs_lora``, else: generate templates do)."""
        return self.mode == "generate" if self.needs_lora is None else self.needs_lora

    @field_validator("suits")
    @classmethod
    def _suits(cls, v: list[str]) -> list[str]:
        bad = [s for s in v if not re.fullmatch(r"[a-z][a-z -]{0,38}[a-z]", s)]
        if bad or not v:
            raise ValueError(
                f"suits must list class nouns, categories {sorted(CATEGORIES)} or 'any'; got {v}"
            )
        return v

    def suitability(self, class_noun: str) -> int:
        """How well the template suits a product: 2 names its noun, 1 its category or any product, 0 not."""
        head = class_noun.split()[-1]
        if class_noun in self.suits or head in self.suits:
            return 2
        if "any" in self.suits or any(head in CATEGORIES.get(s, ()) for s in self.suits):
            return 1
        return 0

    @field_validator("prompt")
    @classmethod
    def _prompt(cls, v: str) -> str:
        return check_product_template(v, required=True)

    @field_validator("negative_prompt")
    @classmethod
    def _negative(cls, v: str) -> str:
        return check_product_template(v, required=False)

    def fill(self, prompts: ProductPrompts) -> tuple[str, str]:
        """The positive and negative prompts for a product."""
        return prompts.fill(self.prompt), prompts.fill(self.negative_prompt)


def load_template(path: Path) -> SceneTemplate:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise TemplateError(f"{path}: not valid YAML ({exc})") from exc
    if not isinstance(data, dict):
        raise TemplateError(f"{path}: expected a mapping of fields, got {type(data).__name__}")
    try:
        template = SceneTemplate.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(f"field {'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        raise TemplateError(f"{path}: {problems}") from exc
    if template.id != path.stem:
        raise TemplateError(f"{path}: id {template.id!r} must match the file name {path.stem!r}")
    return template


def load_library(folder: Path, extra: Path | None = None) -> dict[str, SceneTemplate]:
    """Every ``*.yaml`` template in ``folder``, by id; templates in ``extra`` (a user's own library) are
    added, and replace ours where they share an id."""
    library: dict[str, SceneTemplate] = {}
    for where in [folder] if extra is None else [folder, extra]:
        if not where.is_dir():
            raise TemplateError(f"scene template folder {where} does not exist (setting templates_dir)")
        library |= {t.id: t for t in map(load_template, sorted(where.glob("*.yaml")))}
    if not library:
        raise TemplateError(f"no *.yaml scene templates in {folder}")
    return library


def check_library(folder: Path) -> list[str]:
    """Every problem of every template file in ``folder`` (each message names the file and field)."""
    if not folder.is_dir():
        return [f"{folder}: not a folder"]
    files = sorted(folder.glob("*.yaml"))
    problems = [] if files else [f"{folder}: no *.yaml scene templates"]
    for path in files:
        try:
            load_template(path)
        except TemplateError as exc:
            problems.append(str(exc))
    return problems


# The longest product phrase a prompt must leave room for: a one-token identifier and a 40-letter noun.
_WORST_PHRASE = ProductPrompts("sks", "x" * 40)


def check_prompt_lengths(
    templates: list[SceneTemplate], tokenizer: Any, prompts: ProductPrompts = _WORST_PHRASE
) -> None:
    """Refuse templates whose prompts, filled, exceed the text encoder's tokens (77 for CLIP): the end of
    the prompt would be cut off silently."""
    problems = prompt_length_problems(templates, tokenizer, prompts)
    if problems:
        raise TemplateError("; ".join(problems))


def prompt_length_problems(
    templates: list[SceneTemplate], tokenizer: Any, prompts: ProductPrompts = _WORST_PHRASE
) -> list[str]:
    """Every template field whose filled prompt is longer than the text encoder reads."""
    limit = int(getattr(tokenizer, "model_max_length", 77))
    problems = []
    for template in templates:
        for name, text in zip(("prompt", "negative_prompt"), template.fill(prompts), strict=True):
            count = len(tokenizer(text).input_ids)
            if count > limit:
                problems.append(
                    f"template {template.id!r}: field {name} is {count} tokens once filled, over the text "
                    f"encoder's {limit}; shorten it"
                )
    return problems


def choose_templates(library: dict[str, SceneTemplate], class_noun: str, count: int) -> list[SceneTemplate]:
    """The ``count`` templates that suit a product best (its noun, then its category, then any product).

    Ties keep the library's order, so the choice is stable from run to run.
    """
    ranked = sorted(
        (t for t in library.values() if t.suitability(class_noun) > 0),
        key=lambda t: (-t.suitability(class_noun), "any" in t.suits, t.id),
    )
    return ranked[:count]


def select_templates(library: dict[str, SceneTemplate], ids: list[str]) -> list[SceneTemplate]:
    """The templates ``ids`` name, in order; an unknown id is a TemplateError with the closest known ids."""
    unknown = [i for i in ids if i not in library]
    if unknown:
        raise TemplateError(
            f"unknown scene template(s) {unknown}{did_you_mean(unknown, library)}; "
            f"`product-studio templates list` shows all {len(library)}"
        )
    return [library[i] for i in ids]


def did_you_mean(unknown: list[str], known: Iterable[str]) -> str:
    """`` (did you mean 'oak-table'?)`` for the known ids closest to the unknown ones, or ``""``."""
    known = list(known)
    close = [m for i in unknown for m in difflib.get_close_matches(i, known, n=2, cutoff=0.6)]
    return f" (did you mean {', '.join(repr(c) for c in dict.fromkeys(close))}?)" if close else ""
