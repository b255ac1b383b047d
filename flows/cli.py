"""``product-studio`` command line. Each command imports only what it needs (Prefect only for flows).

It lives beside the flows because some commands start them; the library (``product_studio``) never imports
Prefect or ``flows``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path


def _outcomes(outcomes: list) -> int:
    for o in outcomes:
        line = f"{o.status:9} {o.catalogue_id}/{o.sku}"
        line += f"  {o.manifest}" if o.status == "published" else f"  {o.reason or o.error}"
        print(line)
        for p in o.problems:
            print(f"          photo not used: {p.reason}")
    return 0 if all(o.status != "failed" for o in outcomes) else 1


def cmd_tiny_model(args: argparse.Namespace) -> int:
    from product_studio.devkit.tiny_models import build_tiny_model, build_tiny_upscaler

    if args.family == "sd-x4-upscaler":
        print(build_tiny_upscaler(args.path, seed=args.seed))
    else:
        print(build_tiny_model(args.path, seed=args.seed, family=args.family))
    return 0


# `product-studio train` flags -> TrainConfig fields (None = not given: the preset or default applies).
_TRAIN_FLAGS = {
    "steps": "steps",
    "rank": "rank",
    "alpha": "alpha",
    "prior_images": "prior_images",
    "prior_loss_weight": "prior_loss_weight",
    "resolution": "resolution",
    "lr": "learning_rate",
    "text_encoder_lr": "text_encoder_lr",
    "lr_scheduler": "lr_scheduler",
    "lr_warmup_steps": "lr_warmup_steps",
    "seed": "seed",
    "batch_size": "batch_size",
    "gradient_accumulation_steps": "gradient_accumulation_steps",
    "optimizer": "optimizer",
    "train_text_encoder": "train_text_encoder",
    "gradient_checkpointing": "gradient_checkpointing",
    "masked_loss": "masked_loss",
    "background_weight": "background_weight",
    "snr_gamma": "snr_gamma",
    "noise_offset": "noise_offset",
    "random_flip": "random_flip",
    "attention": "attention",
    "cpu_conv_backend": "cpu_conv_backend",
    "cache_latents": "cache_latents",
    "lean_lora": "lean_lora",
    "trace_unet": "trace_unet",
    "parallel_halves": "parallel_halves",
    "checkpoint_every": "checkpoint_every",
    "validation_every": "validation_every",
    "validation_prompt": "validation_prompts",
    "validation_steps": "validation_steps",
    "kohya": "export_kohya",
    "preset": "preset",
}


def cmd_train(args: argparse.Namespace) -> int:
    import time

    started = time.perf_counter()
    from product_studio.settings import Settings
    from product_studio.training import train_folder

    settings = Settings()
    given = {
        field: getattr(args, flag) for flag, field in _TRAIN_FLAGS.items() if getattr(args, flag) is not None
    }
    if args.no_validation:
        given["validation_prompts"] = []
    config = settings.train.with_options(**given)
    device = args.device or settings.resolved_device()
    dtype = args.dtype or ("float32" if device == "cpu" else settings.resolved_dtype())
    bar = None

    def progress(step: int, loss: float) -> None:
        nonlocal bar
        if args.quiet:
            return
        if bar is None:  # created at the first step, so loading and errors print no empty bar
            from tqdm.auto import tqdm

            bar = tqdm(total=config.steps, desc="training", unit="step", dynamic_ncols=True)
        bar.n = step
        bar.set_postfix(loss=f"{loss:.4f}", refresh=False)
        bar.refresh()

    try:
        result, prompts = train_folder(
            args.photos_dir,
            args.class_noun,
            args.out,
            base_model=args.base_model or settings.base_model,
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


def cmd_sample_catalogue(args: argparse.Namespace) -> int:
    from product_studio.devkit.samples import upload_sample_catalogue
    from product_studio.settings import Settings
    from product_studio.storage import Store

    incoming = Store(Settings().incoming)
    if args.create_bucket:
        incoming.ensure_bucket()
    for sku in upload_sample_catalogue(incoming, args.catalogue_id):
        print(incoming.url(f"{args.catalogue_id}/{sku}/"))
    return 0


def cmd_catalogue(args: argparse.Namespace) -> int:
    from flows.catalogue import catalogue_flow

    return _outcomes(catalogue_flow(args.catalogue_id, force=args.force))


def cmd_sku(args: argparse.Namespace) -> int:
    from flows.sku import sku_flow

    state = sku_flow(args.catalogue_id, args.sku, force=args.force, return_state=True)
    if state.is_completed():
        return _outcomes([state.result()])
    # One line starting with the status word, on stdout like the other outcomes (error.json has the detail).
    print(f"failed    {args.catalogue_id}/{args.sku}  {state.result(raise_on_failure=False)}")
    return 1


def cmd_review(args: argparse.Namespace) -> int:
    """Print an SKU's proposed cards with their decisions and scores, or record decisions."""
    import getpass

    from product_studio import approvals, decisions
    from product_studio.manifest import now
    from product_studio.reuse import read_published
    from product_studio.settings import Settings
    from product_studio.storage import Store

    output = Store(Settings().output)
    manifest = read_published(output, args.catalogue_id, args.sku)
    if manifest is None:
        raise ValueError(f"SKU {args.catalogue_id}/{args.sku} has no published run to review")
    try:
        earlier = approvals.read_decisions(output, manifest)
    except decisions.DecisionsError as exc:
        print(f"the current decisions file is not valid and will be replaced: {exc}", file=sys.stderr)
        earlier = None
    verdicts: dict = {}
    for verdict, names in (("approve", args.approve), ("reject", args.reject), ("retry", args.retry)):
        for name in names or []:
            if name in verdicts:
                raise ValueError(f"card {name} is given two decisions ({verdicts[name]} and {verdict})")
            verdicts[name] = verdict
    if verdicts:
        by = args.by or getpass.getuser()
        made = decisions.decide(manifest, verdicts, note=args.note, by=by, at=now(), earlier=earlier)
        key = f"{args.catalogue_id}/{args.sku}/{decisions.DECISIONS}"
        output.write(key, made.to_json(), "application/json")
        print(f"wrote {output.url(key)}")
        earlier = made
    holding = decisions.current_decisions(earlier, manifest) if earlier else {}
    for name, (key, _) in decisions.proposed_cards(manifest).items():
        card = next(c for c in manifest.cards if c.file == key)
        decision = holding.get(name)
        state = decision.decision if decision else "pending"
        scores = " ".join(f"{k}={v:.3f}" for k, v in sorted(card.scores.items()) if k in _SHOWN_SCORES)
        note = f"  note: {decision.note}" if decision and decision.note else ""
        print(
            f"{state:8} {name}  {card.format} {card.width}x{card.height} {card.render.mode}  {scores}{note}"
        )
    return 0


_SHOWN_SCORES = {"identity_dino", "prompt_clip", "sharpness"}


def cmd_publish_approved(args: argparse.Namespace) -> int:
    from flows.publish_approved import publish_approved_flow

    results = publish_approved_flow(args.catalogue_id)
    for r in results:
        line = f"{r.status:11} {r.catalogue_id}/{r.sku}  live: {len(r.live)}"
        line += f", added {len(r.added)}" if r.added else ""
        line += f", removed {len(r.removed)}" if r.removed else ""
        line += f", retry: {' '.join(r.retry)}" if r.retry else ""
        print(line + (f"  {r.error}" if r.error else ""))
    if not results:
        print("nothing to publish: no decisions or manifests changed since the last run")
    return 1 if any(r.status == "error" for r in results) else 0


def cmd_review_link(args: argparse.Namespace) -> int:
    from product_studio import sharing
    from product_studio.settings import Settings
    from product_studio.storage import Store

    seconds = sharing.parse_expiry(args.expires)
    output = Store(Settings().output)
    if args.sku:
        print(sharing.share_sku_page(output, args.catalogue_id, args.sku, seconds))
    else:
        print(sharing.share_catalogue_index(output, args.catalogue_id, seconds))
    return 0


def cmd_deployments(args: argparse.Namespace) -> int:
    from flows.deployments import DEPLOYMENTS, deploy, prefect_yaml
    from product_studio.settings import Settings

    settings = Settings()
    if args.deploy:
        pools = {"gpu": args.gpu_pool, "cpu": args.cpu_pool}
        for name in deploy(pools, settings.schedule_cron):
            print(f"deployed {name}")
        return 0
    text = prefect_yaml(settings.schedule_cron)
    if args.write:
        Path(args.write).write_text(text)
        print(f"wrote {args.write} ({len(DEPLOYMENTS)} deployments)")
    else:
        print(text, end="")
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    from flows.serve import main

    main()
    return 0


def cmd_settings(args: argparse.Namespace) -> int:
    from product_studio.settings import Settings

    print(json.dumps(Settings().model_dump(mode="json"), indent=2))
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    from product_studio import evaluation
    from product_studio.scoring import Scorer
    from product_studio.settings import Settings

    settings = Settings()
    only = [s.strip() for s in args.subjects.split(",") if s.strip()] if args.subjects else None
    subjects = evaluation.find_subjects(args.subjects_dir, args.prompts, only)
    prompts = evaluation.read_prompts(args.prompts) if args.prompts else evaluation.OBJECT_PROMPTS
    prompts = prompts[: args.prompts_per_subject]
    given = {"steps": args.steps, "preset": args.preset}
    config = settings.train.with_options(**{k: v for k, v in given.items() if v is not None})
    device = settings.resolved_device()
    scorer = Scorer(
        args.dino_model or settings.scores.dino_model, args.clip_model or settings.scores.clip_model, device
    )
    bar = None
    if not args.quiet:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(subjects) * len(prompts), desc="eval", unit="prompt", dynamic_ncols=True)
    try:
        report = evaluation.evaluate(
            subjects,
            args.out,
            base_model=args.base_model or settings.base_model,
            config=config,
            scorer=scorer,
            prompts=prompts,
            images_per_prompt=args.images_per_prompt,
            steps=args.render_steps,
            device=device,
            dtype="float32" if device == "cpu" else settings.resolved_dtype(),
            real=args.real,
            progress=(lambda what: bar.update(1)) if bar is not None else None,
        )
    finally:
        if bar is not None:
            bar.close()
    print(json.dumps(report["mean"]))
    print(args.out / "report.json")
    return 0


def cmd_tiny_encoders(args: argparse.Namespace) -> int:
    from product_studio.devkit.tiny_models import build_tiny_encoders

    for folder in build_tiny_encoders(args.path, seed=args.seed):
        print(folder)
    return 0


def cmd_formats(args: argparse.Namespace) -> int:
    from product_studio.formats import ALIASES, FORMATS

    for f in FORMATS.values():
        aliases = [old for old, new in ALIASES.items() if new == f.id]
        print(
            f"{f.id}  {f.width}x{f.height}  {f.kind}  {f.marketplace}: {f.title}"
            + (f"  (old id: {', '.join(aliases)})" if aliases else "")
        )
    return 0


def cmd_templates(args: argparse.Namespace) -> int:
    from product_studio import scenes
    from product_studio.settings import Settings

    if args.action == "check":
        folder = args.folder or Settings().templates_dir
        problems = scenes.check_library(folder)
        if not problems and args.base_model:
            from product_studio.models import load_pipeline

            tokenizer = load_pipeline(args.base_model).tokenizer
            problems += scenes.prompt_length_problems(list(scenes.load_library(folder).values()), tokenizer)
        for problem in problems:
            print(problem)
        print(f"{folder}: {'ok' if not problems else f'{len(problems)} problem(s)'}", file=sys.stderr)
        return 1 if problems else 0
    settings = Settings()
    for t in scenes.load_library(settings.templates_dir, settings.extra_templates_dir).values():
        print(f"{t.id}  {t.mode}  {t.title}  suits: {', '.join(t.suits)}")
    return 0


def _id(kind: str):
    """An argparse type that accepts only valid catalogue or SKU ids (they become keys and folders)."""

    def check(value: str) -> str:
        from product_studio.ingest import check_id

        try:
            return check_id(kind, value)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    return check


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="product-studio", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("tiny-model", help="write a tiny seeded Stable Diffusion folder (for tests and demos)")
    p.add_argument("path", type=Path)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--family",
        choices=["sd", "sdxl", "sd-inpaint", "sd-x4-upscaler"],
        default="sd",
        help="SD 1.x, SDXL, SD inpainting or the SD x4 upscaler",
    )
    p.set_defaults(func=cmd_tiny_model)
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
    p = sub.add_parser("tiny-encoders", help="write tiny seeded DINO and CLIP folders (PATH/dino, PATH/clip)")
    p.add_argument("path", type=Path)
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=cmd_tiny_encoders)
    _add_train_parser(sub)
    p = sub.add_parser(
        "sample-catalogue", help="upload the built-in sample catalogue to the incoming location"
    )
    p.add_argument("catalogue_id")
    p.add_argument("--create-bucket", action="store_true", help="create the incoming bucket if missing")
    p.set_defaults(func=cmd_sample_catalogue)
    p = sub.add_parser("catalogue", help="run the catalogue flow: every SKU of a ready catalogue")
    p.add_argument("catalogue_id", type=_id("catalogue"))
    p.add_argument("--force", action="store_true", help="make every SKU again, even unchanged ones")
    p.set_defaults(func=cmd_catalogue)
    p = sub.add_parser("sku", help="run the single-SKU flow")
    p.add_argument("catalogue_id", type=_id("catalogue"))
    p.add_argument("sku", type=_id("SKU"))
    p.add_argument("--force", action="store_true", help="make the SKU again, even if unchanged")
    p.set_defaults(func=cmd_sku)
    p = sub.add_parser("review", help="show an SKU's proposed cards and decisions, or record decisions")
    p.add_argument("catalogue_id", type=_id("catalogue"))
    p.add_argument("sku", type=_id("SKU"))
    p.add_argument("--approve", nargs="+", metavar="FILE", help="card file names to approve")
    p.add_argument("--reject", nargs="+", metavar="FILE", help="card file names to reject")
    p.add_argument("--retry", nargs="+", metavar="FILE", help="scene cards to make again (new seeds)")
    p.add_argument("--note", default="", help="a note kept with these decisions")
    p.add_argument("--by", default="", help="who decides (default: the user name)")
    p.set_defaults(func=cmd_review)
    p = sub.add_parser("publish-approved", help="copy approved cards to the marketplace location")
    p.add_argument("catalogue_id", nargs="?", type=_id("catalogue"), help="one catalogue (default: all)")
    p.set_defaults(func=cmd_publish_approved)
    p = sub.add_parser("review-link", help="print a presigned link to a review page (no credentials needed)")
    p.add_argument("catalogue_id", type=_id("catalogue"))
    p.add_argument("sku", nargs="?", type=_id("SKU"), help="one SKU's page (default: the catalogue's index)")
    p.add_argument("--expires", default="1h", help="how long the link works: 90s, 15m, 1h, 7d (default 1h)")
    p.set_defaults(func=cmd_review_link)
    p = sub.add_parser("deployments", help="print or write infra/prefect.yaml, or deploy to work pools")
    p.add_argument("--write", metavar="FILE", help="write the prefect.yaml here instead of printing it")
    p.add_argument("--deploy", action="store_true", help="create the deployments on the Prefect server")
    p.add_argument("--gpu-pool", default="gpu-pool", help="pool of the SKU and retry runs (with --deploy)")
    p.add_argument("--cpu-pool", default="cpu-pool", help="pool of the other runs (with --deploy)")
    p.set_defaults(func=cmd_deployments)
    p = sub.add_parser("serve", help="serve the Prefect deployments (scheduled scan + manual flows)")
    p.set_defaults(func=cmd_serve)
    p = sub.add_parser("formats", help="the marketplace card formats")
    p.add_argument("action", choices=["list"])
    p.set_defaults(func=cmd_formats)
    p = sub.add_parser("templates", help="list the scene templates, or check a template folder")
    p.add_argument("action", choices=["list", "check"])
    p.add_argument("folder", nargs="?", type=Path, help="check: a template folder (default: templates_dir)")
    p.add_argument("--base-model", help="check: also count prompt tokens with this model's tokenizer")
    p.set_defaults(func=cmd_templates)
    p = sub.add_parser("settings", help="print the settings in force (from PRODUCT_STUDIO_* variables)")
    p.set_defaults(func=cmd_settings)
    return parser


def _add_train_parser(sub) -> None:
    p = sub.add_parser(
        "train",
        help="train a DreamBooth LoRA on a folder of photos (no Prefect, no S3)",
        description="Train a product LoRA on the photos in PHOTOS_DIR, used as given. Unset options come "
        "from --preset, then PRODUCT_STUDIO_TRAIN__* variables, then the defaults (README, Training).",
    )
    p.add_argument("photos_dir", type=Path, help="folder of 3+ photos (.jpg/.png/.webp; alpha = loss mask)")
    p.add_argument("--class-noun", required=True, help="what the product is, e.g. 'teapot'")
    p.add_argument("--out", required=True, type=Path, help="output folder (the LoRA, loss curve, renders)")
    p.add_argument("--base-model", help="Hugging Face id or local diffusers folder (SD 1.x/2.x or SDXL)")
    p.add_argument("--identifier", help="rare token to bind (default: chosen from the tokenizer)")
    p.add_argument("--class-dir", type=Path, help="use these class images instead of generating them")
    p.add_argument("--priors-dir", type=Path, help="class-image cache (default: WORK_DIR/priors)")
    p.add_argument("--device", help="cpu, cuda, cuda:1, mps (default: the device setting)")
    p.add_argument("--dtype", choices=["float32", "float16", "bfloat16"], help="weights dtype")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--preset", help="object, fine-detail, person or quick")
    num = {"steps": int, "rank": int, "alpha": int, "prior-images": int, "prior-loss-weight": float,
           "resolution": int, "lr": float, "text-encoder-lr": float, "lr-warmup-steps": int, "seed": int,
           "batch-size": int, "gradient-accumulation-steps": int, "background-weight": float,
           "snr-gamma": float, "noise-offset": float, "checkpoint-every": int, "validation-every": int,
           "validation-steps": int}  # fmt: skip
    for flag, kind in num.items():
        p.add_argument(f"--{flag}", type=kind)
    p.add_argument("--lr-scheduler", choices=["constant", "constant_with_warmup", "linear", "cosine",
                                               "cosine_with_restarts", "polynomial"])  # fmt: skip
    p.add_argument("--optimizer", choices=["adamw", "adamw8bit"])
    p.add_argument("--attention", choices=["sdpa", "eager"])
    p.add_argument("--cpu-conv-backend", choices=["default", "auto", "mkldnn", "native"])
    # --snr-gamma 0 turns min-SNR weighting off.
    p.add_argument("--validation-prompt", action="append", help="repeatable; must contain {product}")
    p.add_argument("--no-validation", action="store_true", help="no validation renders")
    for flag in ("train-text-encoder", "gradient-checkpointing", "masked-loss", "random-flip",
                 "cache-latents", "lean-lora", "trace-unet", "parallel-halves", "kohya"):  # fmt: skip
        p.add_argument(f"--{flag}", action=argparse.BooleanOptionalAction, default=None)
    p.set_defaults(func=cmd_train)


def _run(args: argparse.Namespace) -> int:
    try:
        return args.func(args)
    except (ValueError, FileNotFoundError, ImportError, RuntimeError) as exc:
        if type(exc).__module__.startswith("prefect"):
            raise
        print(f"product-studio {args.command}: error: {exc}", file=sys.stderr)
        return 2


def main(argv: list[str] | None = None) -> int:
    """Run one command in this process (tests and embedding use this)."""
    return _run(build_parser().parse_args(argv))


# Commands whose every file is written and closed when they return, and which start no background
# services: their process may skip interpreter teardown (~1.3 s with torch and diffusers loaded).
_FAST_EXIT = {"train", "tiny-model", "tiny-encoders"}


def entrypoint() -> None:
    """The ``product-studio`` console script."""
    args = build_parser().parse_args()
    code = _run(args)
    if args.command in _FAST_EXIT:
        import logging

        logging.shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    sys.exit(code)


if __name__ == "__main__":
    entrypoint()
