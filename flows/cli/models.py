"""``product-studio`` commands that work on models and local folders, without Prefect or storage runs:
``train``, ``eval``, and the dev kit's ``tiny-model``, ``tiny-encoders`` and ``sample-catalogue``."""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from pathlib import Path

from flows.cli.flags import add_model_flags, given_values


def add_commands(sub) -> None:
    p = sub.add_parser("tiny-model", help="write a tiny seeded diffusers model folder (for tests and demos)")
    p.add_argument("path", type=Path)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--family",
        choices=["sd", "sdxl", "sd-inpaint", "sd-x4-upscaler", "flux2-klein"],
        default="sd",
        help="SD 1.x, SDXL, SD inpainting, the SD x4 upscaler or FLUX.2 [klein]",
    )
    p.set_defaults(func=cmd_tiny_model)
    p = sub.add_parser("tiny-encoders", help="write tiny seeded DINO and CLIP folders (PATH/dino, PATH/clip)")
    p.add_argument("path", type=Path)
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=cmd_tiny_encoders)
    p = sub.add_parser(
        "sample-catalogue", help="upload the built-in sample catalogue to the incoming location"
    )
    p.add_argument("catalogue_id")
    p.add_argument("--create-bucket", action="store_true", help="create the incoming bucket if missing")
    p.set_defaults(func=cmd_sample_catalogue)
    _add_train_parser(sub)
    _add_eval_parser(sub)


def _add_train_parser(sub) -> None:
    from product_studio.training import TrainConfig

    p = sub.add_parser(
        "train",
        help="train a DreamBooth LoRA on a folder of photos (no Prefect, no S3)",
        description="Train a product LoRA on the photos in PHOTOS_DIR, used as given. Unset options come "
        "from --preset, then PRODUCT_STUDIO_TRAIN__* variables, then the defaults (docs/training.md).",
    )
    p.add_argument("photos_dir", type=Path, help="folder of 3+ photos (.jpg/.png/.webp; alpha = loss mask)")
    p.add_argument("--class-noun", required=True, help="what the product is, e.g. 'teapot'")
    p.add_argument("--out", required=True, type=Path, help="output folder (the LoRA, loss curve, renders)")
    p.add_argument(
        "--base-model", help="Hugging Face id or local diffusers folder (SD 1.x/2.x, SDXL, FLUX.2 [klein])"
    )
    p.add_argument("--identifier", help="rare token to bind (default: chosen from the tokenizer)")
    p.add_argument("--class-dir", type=Path, help="use these class images instead of generating them")
    p.add_argument("--priors-dir", type=Path, help="class-image cache (default: WORK_DIR/priors)")
    p.add_argument("--device", help="cpu, cuda, cuda:1, mps (default: the device setting)")
    p.add_argument("--dtype", choices=["float32", "float16", "bfloat16"], help="weights dtype")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--no-validation", action="store_true", help="no validation renders")
    group = p.add_argument_group("training settings (TrainConfig; --snr-gamma 0 turns min-SNR off)")
    fields = add_model_flags(group, TrainConfig)
    p.set_defaults(func=cmd_train, config_fields=fields)


def _add_eval_parser(sub) -> None:
    p = sub.add_parser("eval", help="the DreamBench protocol: train, render, score DINO / CLIP-I / CLIP-T")
    p.add_argument("subjects_dir", type=Path, help="one folder of 3-6 photos per subject")
    p.add_argument("--out", type=Path, required=True, help="report.json, report.md, renders (resumable)")
    p.add_argument("--base-model")
    p.add_argument(
        "--prompts", type=Path, help="a prompts_and_classes.txt (default: DreamBench's object prompts)"
    )
    p.add_argument("--images-per-prompt", type=int, default=4)
    p.add_argument("--prompts-per-subject", type=int, default=25)
    p.add_argument("--dino-model", help="default: the scores.dino_model setting")
    p.add_argument("--clip-model", help="default: the scores.clip_model setting")
    p.add_argument("--steps", type=int, help="training steps (default: the training settings)")
    p.add_argument("--render-steps", type=int, default=50, help="denoising steps per image")
    p.add_argument("--preset", help="training preset")
    p.add_argument("--subjects", help="a subset: comma-separated folder names")
    p.add_argument("--real", action="store_true", help="also score the real photos against each other")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_eval)


def _progress_bar(quiet: bool, total: int, desc: str, unit: str):
    """A tqdm bar (None when ``quiet``)."""
    if quiet:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit=unit, dynamic_ncols=True)


def cmd_tiny_model(args: argparse.Namespace) -> int:
    from product_studio.devkit.tiny_models import build_tiny_model, build_tiny_upscaler

    if args.family == "sd-x4-upscaler":
        print(build_tiny_upscaler(args.path, seed=args.seed))
    elif args.family == "flux2-klein":
        from product_studio.devkit.tiny_flux2 import build_tiny_flux2_klein

        print(build_tiny_flux2_klein(args.path, seed=args.seed))
    else:
        print(build_tiny_model(args.path, seed=args.seed, family=args.family))
    return 0


def cmd_tiny_encoders(args: argparse.Namespace) -> int:
    from product_studio.devkit.tiny_models import build_tiny_encoders

    for folder in build_tiny_encoders(args.path, seed=args.seed):
        print(folder)
    return 0


def cmd_sample_catalogue(args: argparse.Namespace) -> int:
    from product_studio.devkit.samples import upload_sample_catalogue
    from product_studio.settings import Settings

    incoming = Settings().store("incoming")
    if args.create_bucket:
        incoming.ensure_bucket()
    for sku in upload_sample_catalogue(incoming, args.catalogue_id):
        print(incoming.url(f"{args.catalogue_id}/{sku}/"))
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    started = time.perf_counter()
    from product_studio.models import family_of
    from product_studio.settings import Settings
    from product_studio.training.config import resolve_config
    from product_studio.training.folder_training import train_folder

    settings = Settings()
    given = given_values(args, args.config_fields)
    if args.no_validation:
        given["validation_prompts"] = []
    config = resolve_config(
        settings.train.with_options(**given), preset=None, family=family_of(_base_model(args, settings))
    )
    device = args.device or settings.resolved_device()
    dtype = args.dtype or ("float32" if device == "cpu" else settings.resolved_dtype())
    bar = None

    def progress(step: int, loss: float) -> None:
        nonlocal bar
        if bar is None:  # created at the first step, so loading and errors print no empty bar
            bar = _progress_bar(args.quiet, config.steps, "training", "step")
        if bar is not None:
            bar.n = step
            bar.set_postfix(loss=f"{loss:.4f}", refresh=False)
            bar.refresh()

    try:
        result, prompts = train_folder(
            args.photos_dir,
            args.class_noun,
            args.out,
            base_model=_base_model(args, settings),
            config=config,
            identifier=args.identifier,
            class_dir=args.class_dir,
            priors_dir=args.priors_dir or settings.work_dir / "priors",
            device=device,
            dtype=dtype,
            prior_steps=settings.render.prior_steps,
            min_photos=settings.min_photos,
            progress=progress,
        )
    finally:
        if bar is not None:
            bar.close()
    summary = {
        "lora": str(result.lora_file),
        "identifier": prompts.identifier,
        "prompt": prompts.instance,
        "steps": result.steps,
        "resumed_from": result.resumed_from,
        "final_loss": round(result.final_loss, 5),
        "wall_s": round(time.perf_counter() - started, 2),
        "timings_s": result.timings,
    }
    print(json.dumps(summary, indent=2))
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    from product_studio import evaluation
    from product_studio.cards.scoring import Scorer
    from product_studio.models import family_of
    from product_studio.settings import Settings
    from product_studio.training.config import resolve_config

    settings = Settings()
    only = [s.strip() for s in args.subjects.split(",") if s.strip()] if args.subjects else None
    subjects = evaluation.find_subjects(args.subjects_dir, args.prompts, only)
    prompts = evaluation.read_prompts(args.prompts) if args.prompts else evaluation.OBJECT_PROMPTS
    prompts = prompts[: args.prompts_per_subject]
    given = {"steps": args.steps, "preset": args.preset}
    config = settings.train.with_options(**{k: v for k, v in given.items() if v is not None})
    config = resolve_config(config, preset=None, family=family_of(_base_model(args, settings)))
    device = settings.resolved_device()
    scorer = Scorer(
        args.dino_model or settings.scores.dino_model, args.clip_model or settings.scores.clip_model, device
    )
    bar = _progress_bar(args.quiet, len(subjects) * len(prompts), "eval", "prompt")
    tick: Callable[[str], None] | None = (lambda what: bar.update(1)) if bar is not None else None
    try:
        report = evaluation.evaluate(
            subjects,
            args.out,
            base_model=_base_model(args, settings),
            config=config,
            scorer=scorer,
            prompts=prompts,
            images_per_prompt=args.images_per_prompt,
            steps=args.render_steps,
            device=device,
            dtype="float32" if device == "cpu" else settings.resolved_dtype(),
            real=args.real,
            progress=tick,
        )
    finally:
        if bar is not None:
            bar.close()
    print(json.dumps(report["mean"]))
    print(args.out / "report.json")
    return 0


def _base_model(args: argparse.Namespace, settings) -> str:
    """``--base-model`` (held to the same licence rule as PRODUCT_STUDIO_BASE_MODEL), else the setting."""
    from product_studio.models import check_commercial_use

    if not args.base_model:
        return settings.base_model
    return check_commercial_use(
        args.base_model, allow=settings.allow_noncommercial_models, setting="--base-model"
    )
