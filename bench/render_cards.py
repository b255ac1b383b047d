"""Benchmark: seconds per scene card on this machine -- composite and generate modes, each card format.

Runs ``making.make_cards`` exactly as the SKU flow does (product LoRA loaded, cards at each format's aspect,
compliance checked, object expansion scored with GrabCut) on the tiny seeded SD, and reports seconds per card
by mode and format, and the share of a card's time spent rendering.

    python bench/render_cards.py [--steps 10] [--repeat 2]
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
from pathlib import Path
from typing import Any

from PIL import Image, ImageDraw

ROOT = Path(__file__).resolve().parents[1]
FORMATS = ["ebay-square", "wildberries-vertical", "banner-16x9", "shopify-square"]
TEMPLATES = ("oak-table", "in-hand")  # composite, generate (2 candidates in one batch)


def parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=10, help="denoising steps per render")
    ap.add_argument("--repeat", type=int, default=2, help="runs of the whole set; the faster counts")
    return ap.parse_args()


class CardBench:
    """The tiny seeded SD with a product LoRA and one cleaned photo: what ``making.make_cards`` is given."""

    def __init__(self, work: Path, steps: int) -> None:
        from product_studio import cleaning
        from product_studio.devkit.tiny_models import build_tiny_model
        from product_studio.identifiers import ProductPrompts
        from product_studio.models import load_pipeline
        from product_studio.records import CleanedPhoto
        from product_studio.training import TrainConfig, from_cutout, train_lora

        self.work, self.steps = work, steps
        self.pipe = load_pipeline(str(build_tiny_model(work / "tiny-sd")))
        cutout = Image.new("RGBA", (600, 600), (0, 0, 0, 0))
        ImageDraw.Draw(cutout).ellipse((120, 100, 480, 540), fill=(22, 128, 122, 255))
        cutout.save(work / "cutout.png")
        self.photo = CleanedPhoto(source="a.jpg", cutout_path=work / "cutout.png", coverage=0.3)
        self.prompts = ProductPrompts("olis", "teapot")
        config = TrainConfig(steps=1, rank=4, prior_images=0, validation_prompts=[], checkpoint_every=0)
        self.lora = train_lora(
            self.pipe,
            [from_cutout(cutout)] * 3,
            [],
            prompts=self.prompts,
            config=config,
            out_dir=work / "lora",
        )
        self.segment = cleaning.make_cleaner("grabcut").mask

    def options(self) -> dict[str, Any]:
        return {
            "pipe": self.pipe,
            "prompts": self.prompts,
            "lora_file": self.lora.lora_file,
            "segment": self.segment,
        }

    def per_card(self, repeat: int) -> tuple[dict[tuple[str, str], float], dict[str, float]]:
        """Best seconds of one published card, by (mode, format), and of its render alone (keyed by
        ``str((mode, format))``)."""
        rows: dict[tuple[str, str], float] = {}
        render_only: dict[str, float] = {}
        for attempt in range(repeat):
            for template_id in TEMPLATES:
                for format_id in FORMATS:
                    key, seconds, render_s = self.time_card(template_id, format_id, attempt)
                    rows[key] = min(rows.get(key, seconds), seconds)
                    render_only[f"{key}"] = min(render_only.get(f"{key}", render_s), render_s)
        return rows, render_only

    def time_card(
        self, template_id: str, format_id: str, attempt: int
    ) -> tuple[tuple[str, str], float, float]:
        """(mode, format), the seconds of making the card and the seconds of its render alone."""
        from product_studio.cards import making, planning
        from product_studio.rendering import renderer

        plan = planning.plan_cards([format_id], [template_id], default_formats=[], default_scenes=[],
                                   templates_dir=ROOT / "templates")  # fmt: skip
        t0 = time.perf_counter()
        options = self.options()
        made = making.make_cards(plan, [self.photo], self.work / f"c{attempt}", steps=self.steps, **options)
        card = next(c for c in made if c.status == "published")
        seconds = time.perf_counter() - t0
        # The render alone (LoRA loaded, no card writing or scoring), for the share it takes.
        template = plan.templates[0]
        with renderer.product_lora(self.pipe, self.lora.lora_file):
            t0 = time.perf_counter()
            renderer.render_scene_cards(self.pipe, template, self.prompts, Image.open(self.photo.cutout_path),
                                        (card.width, card.height), steps=self.steps)  # fmt: skip
            render_s = time.perf_counter() - t0
        return (card.render.mode, format_id), seconds, render_s

    def with_scores(self, repeat: int) -> dict[str, float]:
        """What scoring adds (issue 9): best seconds of all the cards, without scores and with the tiny
        encoders judging every candidate."""
        from product_studio.cards import making, planning, scoring
        from product_studio.devkit.tiny_models import build_tiny_encoders

        dino, clip = build_tiny_encoders(self.work / "encoders")
        judging = making.Judging(scorer=scoring.Scorer(str(dino), str(clip)), gate=scoring.Gate(-1, -1))
        plan = planning.plan_cards(FORMATS, list(TEMPLATES), default_formats=[], default_scenes=[],
                                   templates_dir=ROOT / "templates")  # fmt: skip
        timing: dict[str, float] = {}
        for attempt in range(repeat):
            for label, extra in (("without scores", {}), ("with scores", {"judging": judging})):
                options = self.options()
                t0 = time.perf_counter()
                making.make_cards(
                    plan, [self.photo], self.work / f"s{attempt}", steps=self.steps, **options, **extra
                )
                seconds = time.perf_counter() - t0
                timing[label] = min(timing.get(label, seconds), seconds)
        return timing


def main() -> None:
    args = parse_args()
    import torch

    bench = CardBench(Path(tempfile.mkdtemp(prefix="ps-render-")), args.steps)
    rows, render_only = bench.per_card(args.repeat)
    timing = bench.with_scores(args.repeat)
    plain, scored = timing["without scores"], timing["with scores"]
    print(f"all scene cards of {len(FORMATS)} formats x 2 templates: without scores {plain:.2f} s, "
          f"with scores {scored:.2f} s ({scored / plain - 1:+.1%})")  # fmt: skip
    print(f"machine: {platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__}; tiny SD, "
          f"{args.steps} steps, best of {args.repeat}")  # fmt: skip
    print(f"{'mode':10s} {'format':22s} {'s/card':>7s} {'render s':>9s}")
    for (mode, format_id), seconds in rows.items():
        print(f"{mode:10s} {format_id:22s} {seconds:7.2f} {render_only[str((mode, format_id))]:9.2f}")


if __name__ == "__main__":
    main()
