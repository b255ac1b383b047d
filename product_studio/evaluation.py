"""``product-studio eval``: the DreamBench protocol (DreamBooth paper, Table 1) on any set of subjects.

For each subject folder (3-6 photos; its class noun from ``subject.json`` or a DreamBench-style
``prompts_and_classes.txt``): train the product LoRA on the photos as given, render the object prompts
``images_per_prompt`` times each, and score every render against the subject's real photos -- DINO and
CLIP-I -- and against its prompt without the identifier -- CLIP-T. A subject's score is the mean over its
images; the report's mean is the mean of the subject means. Finished subjects are reused, so an interrupted
run resumes; ``real`` adds the upper bound: the real photos scored against each other.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from product_studio.cards.scoring import Scorer, cosine_matrix
from product_studio.identifiers import validate_class_noun
from product_studio.training.config import TrainConfig
from product_studio.training.data import PHOTO_SUFFIXES

# DreamBench's 25 object prompts; {product} is the identifier and class noun (ProductPrompts.fill).
OBJECT_PROMPTS = [
    "a {product} in the jungle",
    "a {product} in the snow",
    "a {product} on the beach",
    "a {product} on a cobblestone street",
    "a {product} on top of pink fabric",
    "a {product} on top of a wooden floor",
    "a {product} with a city in the background",
    "a {product} with a mountain in the background",
    "a {product} with a blue house in the background",
    "a {product} on top of a purple rug in a forest",
    "a {product} with a wheat field in the background",
    "a {product} with a tree and autumn leaves in the background",
    "a {product} with the Eiffel Tower in the background",
    "a {product} floating on top of water",
    "a {product} floating in an ocean of milk",
    "a {product} on top of green grass with sunflowers around it",
    "a {product} on top of a mirror",
    "a {product} on top of the sidewalk in a crowded street",
    "a {product} on top of a dirt road",
    "a {product} on top of a white rug",
    "a red {product}",
    "a purple {product}",
    "a shiny {product}",
    "a wet {product}",
    "a cube shaped {product}",
]
# The paper's rows (DreamBooth, Ruiz et al. 2023, Table 1), for the report.
PAPER_ROWS = {
    "DreamBooth (Stable Diffusion), paper": {"dino": 0.668, "clip_i": 0.803, "clip_t": 0.305},
    "Real images, paper": {"dino": 0.774, "clip_i": 0.885, "clip_t": None},
}
METRICS = ("dino", "clip_i", "clip_t")


class EvalError(ValueError):
    """A subject folder or prompts file cannot be used; the message names it."""


@dataclass
class Subject:
    name: str
    folder: Path
    class_noun: str
    photos: list[Path] = field(default_factory=list)


def read_classes(path: Path) -> dict[str, str]:
    """``subject -> class noun`` from a DreamBench ``prompts_and_classes.txt`` (its ``subject_name,class``
    section)."""
    classes: dict[str, str] = {}
    lines = path.read_text(encoding="utf-8").splitlines()
    try:
        start = lines.index("subject_name,class") + 1
    except ValueError as exc:
        raise EvalError(f"{path}: no 'subject_name,class' section") from exc
    for line in lines[start:]:
        if not line.strip():
            break
        subject, _, noun = line.partition(",")
        classes[subject.strip()] = noun.strip()
    return classes


def read_prompts(path: Path) -> list[str]:
    """The object prompts of a DreamBench ``prompts_and_classes.txt`` ('a {0} {1} ...' lines), written
    with ``{product}`` for the identifier and class noun (``ProductPrompts.fill``)."""
    prompts = re.findall(r"'([^']*\{0\} \{1\}[^']*)'", path.read_text(encoding="utf-8"))
    if not prompts:
        raise EvalError(f"{path}: no prompts with {{0}} {{1}} (identifier, class noun)")
    return [p.replace("{0} {1}", "{product}") for p in prompts]


def find_subjects(
    root: Path, classes_file: Path | None = None, only: list[str] | None = None
) -> list[Subject]:
    """The subject folders of ``root`` (those in ``only``, if given), each with its class noun and photos."""
    if not root.is_dir():
        raise EvalError(f"subjects folder {root} does not exist")
    classes_file = classes_file or (root / "prompts_and_classes.txt")
    classes = read_classes(classes_file) if classes_file.is_file() else {}
    folders = sorted(p for p in root.iterdir() if p.is_dir())
    if only:
        missing = sorted(set(only) - {p.name for p in folders})
        if missing:
            raise EvalError(f"subject(s) {missing} are not folders of {root}")
        folders = [p for p in folders if p.name in only]
    subjects = []
    for folder in folders:
        spec = folder / "subject.json"
        noun = classes.get(folder.name)
        if spec.is_file():
            try:
                noun = json.loads(spec.read_text())["class_noun"]
            except (ValueError, KeyError, TypeError) as exc:
                raise EvalError(f"{spec}: not a JSON object with a class_noun ({exc})") from exc
        if noun is None:
            raise EvalError(
                f"subject {folder.name!r}: no class noun (add {spec} or a prompts_and_classes.txt)"
            )
        try:
            noun = validate_class_noun(noun)
        except ValueError as exc:
            raise EvalError(f"subject {folder.name!r}: {exc}") from exc
        photos = sorted(p for p in folder.iterdir() if p.suffix.lower() in PHOTO_SUFFIXES)
        if not 3 <= len(photos) <= 6:
            raise EvalError(f"subject {folder.name!r}: {len(photos)} photos; the protocol uses 3-6")
        subjects.append(Subject(folder.name, folder, noun, photos))
    if not subjects:
        raise EvalError(f"no subject folders in {root}")
    return subjects


def subject_scores(
    scorer: Scorer, images: list[Image.Image], texts: list[str], photos: list[Image.Image]
) -> dict[str, float]:
    """DINO and CLIP-I of every image against every real photo, CLIP-T against its own text; means."""
    dino = cosine_matrix(scorer.dino_embeddings(images), scorer.dino_embeddings(photos))
    clip_i = cosine_matrix(scorer.clip_embeddings(images), scorer.clip_embeddings(photos))
    clip_t = np.diag(cosine_matrix(scorer.clip_embeddings(images), scorer.text_embeddings(texts)))
    return {"dino": float(dino.mean()), "clip_i": float(clip_i.mean()), "clip_t": float(clip_t.mean())}


def real_scores(scorer: Scorer, photos: list[Image.Image]) -> dict[str, float | None]:
    """The upper bound: every real photo against every other (the diagonal left out)."""
    off = ~np.eye(len(photos), dtype=bool)
    dino = cosine_matrix(scorer.dino_embeddings(photos), scorer.dino_embeddings(photos))[off]
    clip_i = cosine_matrix(scorer.clip_embeddings(photos), scorer.clip_embeddings(photos))[off]
    return {"dino": float(dino.mean()), "clip_i": float(clip_i.mean()), "clip_t": None}


def mean_of(rows: list[dict[str, Any]]) -> dict[str, float | None]:
    """The mean of each metric over rows (the subjects' own means), skipping missing values."""
    out: dict[str, float | None] = {}
    for metric in METRICS:
        values = [r[metric] for r in rows if r.get(metric) is not None]
        out[metric] = round(float(np.mean(values)), 4) if values else None
    return out


def evaluate(
    subjects: list[Subject],
    out: Path,
    *,
    base_model: str,
    config: TrainConfig,
    scorer: Scorer,
    prompts: list[str],
    images_per_prompt: int = 4,
    steps: int = 50,
    device: str = "cpu",
    dtype: str = "float32",
    real: bool = False,
    progress: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Run the protocol and write ``out/report.json`` and ``out/report.md``; returns the report. A subject
    finished under the same protocol before is read back, not made again."""
    protocol = {
        "base_model": base_model,
        "dino_model": scorer.dino_model,
        "clip_model": scorer.clip_model,
        "train": config.model_dump(mode="json"),
        "prompts": prompts,
        "images_per_prompt": images_per_prompt,
        "render_steps": steps,
    }
    run = _Run(out, base_model, config, scorer, prompts, images_per_prompt, steps, device, dtype, progress)
    results: dict[str, Any] = {}
    reals: dict[str, Any] = {}
    for subject in subjects:
        done = out / "subjects" / subject.name / "result.json"
        if real:
            photos = [Image.open(p).convert("RGB") for p in subject.photos]
            reals[subject.name] = {k: v and round(v, 4) for k, v in real_scores(scorer, photos).items()}
        if done.is_file() and json.loads(done.read_text()).get("protocol") == protocol:
            results[subject.name] = json.loads(done.read_text())["scores"]  # finished before: resumed
            continue
        results[subject.name] = run.subject(subject)
        done.write_text(json.dumps({"protocol": protocol, "scores": results[subject.name]}, indent=2))
    report: dict[str, Any] = {
        "subjects": results,
        "mean": mean_of(list(results.values())),
        "protocol": protocol,
    }
    if real:
        report["real"] = {"subjects": reals, "mean": mean_of(list(reals.values()))}
    out.mkdir(parents=True, exist_ok=True)
    (out / "report.json").write_text(json.dumps(report, indent=2))
    (out / "report.md").write_text(report_markdown(report))
    return report


@dataclass(frozen=True)
class _Run:
    """One evaluation's fixed parts: where it writes, the model, the trainer's config, the scorer, prompts."""

    out: Path
    base_model: str
    config: TrainConfig
    scorer: Scorer
    prompts: list[str]
    images_per_prompt: int
    steps: int
    device: str
    dtype: str
    progress: Callable[[str], None] | None

    def subject(self, subject: Subject) -> dict[str, Any]:
        """Train the subject's LoRA, render every prompt with it, score the renders."""
        from product_studio.models import load_pipeline
        from product_studio.rendering.renderer import product_lora
        from product_studio.training.folder_training import train_folder

        folder = self.out / "subjects" / subject.name
        trained, names = train_folder(
            subject.folder, subject.class_noun, folder / "lora", base_model=self.base_model,
            config=self.config, priors_dir=self.out / "priors", device=self.device, dtype=self.dtype,
            min_photos=3,
        )  # fmt: skip
        pipe = load_pipeline(self.base_model, self.device, self.dtype)
        images, texts = [], []
        with product_lora(pipe, trained.lora_file):
            for n, template in enumerate(self.prompts):
                prompt = names.fill(template)
                images += self._render(pipe, prompt, n, folder / "images")
                texts += [names.unnamed(prompt)] * self.images_per_prompt
                if self.progress is not None:
                    self.progress(f"{subject.name}: prompt {n + 1}/{len(self.prompts)}")
        photos = [Image.open(p).convert("RGB") for p in subject.photos]
        scores: dict[str, Any] = {
            k: round(v, 4) for k, v in subject_scores(self.scorer, images, texts, photos).items()
        }
        scores["images"] = len(images)
        return scores

    def _render(self, pipe: Any, prompt: str, n: int, folder: Path) -> list[Image.Image]:
        """Prompt ``n``'s images, each from its own seed, saved as ``NN-i.png``."""
        import torch

        count = self.images_per_prompt
        seeds = [torch.Generator("cpu").manual_seed(self.config.seed + 1000 * n + i) for i in range(count)]
        batch = pipe([prompt] * count, num_inference_steps=self.steps, generator=seeds).images
        folder.mkdir(parents=True, exist_ok=True)
        for i, image in enumerate(batch):
            image.save(folder / f"{n:02d}-{i}.png")
        return batch


def report_markdown(report: dict[str, Any]) -> str:
    """The report as a table beside the paper's rows."""

    def cell(v: float | None) -> str:
        return "—" if v is None else f"{v:.3f}"

    lines = ["| row | DINO | CLIP-I | CLIP-T | images |", "|---|---:|---:|---:|---:|"]
    for name, s in report["subjects"].items():
        lines.append(
            f"| {name} | {cell(s['dino'])} | {cell(s['clip_i'])} | {cell(s['clip_t'])} | {s['images']} |"
        )
    m = report["mean"]
    lines.append(
        f"| **mean of subjects** | {cell(m['dino'])} | {cell(m['clip_i'])} | {cell(m['clip_t'])} | |"
    )
    if "real" in report:
        r = report["real"]["mean"]
        lines.append(f"| real images (this set) | {cell(r['dino'])} | {cell(r['clip_i'])} | — | |")
    for name, row in PAPER_ROWS.items():
        lines.append(f"| {name} | {cell(row['dino'])} | {cell(row['clip_i'])} | {cell(row['clip_t'])} | |")
    p = report["protocol"]
    return (
        "# DreamBench evaluation\n\n"
        + "\n".join(lines)
        + f"\n\nBase model `{p['base_model']}`, DINO `{p['dino_model']}`, CLIP `{p['clip_model']}`, "
        f"{len(p['prompts'])} prompts x {p['images_per_prompt']} images, {p['render_steps']} steps.\n"
    )
