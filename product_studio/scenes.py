"""Scene templates: the YAML library in ``templates/``, its schema, and safe prompt filling.

A template's prompts may use exactly one placeholder, ``{product}``, which becomes
"<identifier> <class noun>". Any other brace is an error when the library loads, not at render time.
"""

from __future__ import annotations

from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from product_studio.identifiers import ProductPrompts, check_product_template


class TemplateError(ValueError):
    """A scene template file or id is invalid; the message names the file, field or id."""


class SceneTemplate(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str = Field(pattern=r"^[a-z0-9][a-z0-9-]{0,62}$")
    title: str
    prompt: str
    negative_prompt: str = ""
    steps: int = Field(30, ge=1, le=200)
    guidance_scale: float = Field(7.5, ge=0, le=30)
    seed: int = Field(0, ge=0)

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


def load_library(folder: Path) -> dict[str, SceneTemplate]:
    """Every ``*.yaml`` template in ``folder``, by id."""
    if not folder.is_dir():
        raise TemplateError(f"scene template folder {folder} does not exist (setting templates_dir)")
    library = {t.id: t for t in map(load_template, sorted(folder.glob("*.yaml")))}
    if not library:
        raise TemplateError(f"no *.yaml scene templates in {folder}")
    return library


def select_templates(library: dict[str, SceneTemplate], ids: list[str]) -> list[SceneTemplate]:
    unknown = [i for i in ids if i not in library]
    if unknown:
        raise TemplateError(f"unknown scene template(s) {unknown}; available: {sorted(library)}")
    return [library[i] for i in ids]
