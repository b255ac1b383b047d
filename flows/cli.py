"""``product-studio`` command line: the parser and the entry point. Each command imports only what it
needs (Prefect only for flows); the commands live in ``flows/commands.py`` and ``flows/model_commands.py``.

It lives beside the flows because some commands start them; the library (``product_studio``) never imports
Prefect or ``flows``.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from pydantic import ValidationError

from flows import commands, model_commands
from flows.cli_flags import add_model_flags
from flows.cli_help import describe
from flows.prefect_server import allow_slow_ephemeral_start


def _id(kind: str):
    """An argparse type that accepts only valid catalogue or SKU ids (they become keys and folders)."""

    def check(value: str) -> str:
        from product_studio.ingest import check_id

        try:
            return check_id(kind, value)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    return check


def _add_model_commands(sub) -> None:
    p = sub.add_parser("tiny-model", help="write a tiny seeded diffusers model folder (for tests and demos)")
    p.add_argument("path", type=Path)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--family",
        choices=["sd", "sdxl", "sd-inpaint", "sd-x4-upscaler", "flux2-klein"],
        default="sd",
        help="SD 1.x, SDXL, SD inpainting, the SD x4 upscaler or FLUX.2 [klein]",
    )
    p.set_defaults(func=model_commands.cmd_tiny_model)
    p = sub.add_parser("tiny-encoders", help="write tiny seeded DINO and CLIP folders (PATH/dino, PATH/clip)")
    p.add_argument("path", type=Path)
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=model_commands.cmd_tiny_encoders)
    p = sub.add_parser(
        "sample-catalogue", help="upload the built-in sample catalogue to the incoming location"
    )
    p.add_argument("catalogue_id")
    p.add_argument("--create-bucket", action="store_true", help="create the incoming bucket if missing")
    p.set_defaults(func=model_commands.cmd_sample_catalogue)
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
    p.set_defaults(func=model_commands.cmd_train, config_fields=fields)


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
    p.set_defaults(func=model_commands.cmd_eval)


def _add_run_commands(sub) -> None:
    p = sub.add_parser("catalogue", help="run the catalogue flow: every SKU of a ready catalogue")
    p.add_argument("catalogue_id", type=_id("catalogue"))
    p.add_argument("--force", action="store_true", help="make every SKU again, even unchanged ones")
    p.set_defaults(func=commands.cmd_catalogue)
    p = sub.add_parser("sku", help="run the single-SKU flow")
    p.add_argument("catalogue_id", type=_id("catalogue"))
    p.add_argument("sku", type=_id("SKU"))
    p.add_argument("--force", action="store_true", help="make the SKU again, even if unchanged")
    p.set_defaults(func=commands.cmd_sku)
    p = sub.add_parser("deployments", help="print or write infra/prefect.yaml, or deploy to work pools")
    p.add_argument("--write", metavar="FILE", help="write the prefect.yaml here instead of printing it")
    p.add_argument("--deploy", action="store_true", help="create the deployments on the Prefect server")
    p.add_argument("--gpu-pool", default="gpu-pool", help="pool of the SKU and retry runs (with --deploy)")
    p.add_argument("--cpu-pool", default="cpu-pool", help="pool of the other runs (with --deploy)")
    p.set_defaults(func=commands.cmd_deployments)
    p = sub.add_parser("serve", help="serve the Prefect deployments (scheduled scan + manual flows)")
    p.set_defaults(func=commands.cmd_serve)
    p = sub.add_parser("formats", help="the marketplace card formats")
    p.add_argument("action", choices=["list"])
    p.set_defaults(func=commands.cmd_formats)
    p = sub.add_parser("templates", help="list the scene templates, or check a template folder")
    p.add_argument("action", choices=["list", "check"])
    p.add_argument("folder", nargs="?", type=Path, help="check: a template folder (default: templates_dir)")
    p.add_argument("--base-model", help="check: also count prompt tokens with this model's tokenizer")
    p.set_defaults(func=commands.cmd_templates)
    p = sub.add_parser("settings", help="print the settings in force (from PRODUCT_STUDIO_* variables)")
    p.set_defaults(func=commands.cmd_settings)


def _add_review_commands(sub) -> None:
    p = sub.add_parser("review", help="show an SKU's proposed cards and decisions, or record decisions")
    p.add_argument("catalogue_id", type=_id("catalogue"))
    p.add_argument("sku", type=_id("SKU"))
    p.add_argument("--approve", nargs="+", metavar="FILE", help="card file names to approve")
    p.add_argument("--reject", nargs="+", metavar="FILE", help="card file names to reject")
    p.add_argument("--retry", nargs="+", metavar="FILE", help="scene cards to make again (new seeds)")
    p.add_argument(
        "--note",
        default="",
        help="a note kept with every card decided in this command (one command per note)",
    )
    p.add_argument("--by", default="", help="who decides (default: the user name)")
    p.set_defaults(func=commands.cmd_review)
    p = sub.add_parser("publish-approved", help="copy approved cards to the marketplace location")
    p.add_argument("catalogue_id", nargs="?", type=_id("catalogue"), help="one catalogue (default: all)")
    p.set_defaults(func=commands.cmd_publish_approved)
    p = sub.add_parser(
        "review-link", help="print a presigned link to a review page where sellers decide (no credentials)"
    )
    p.add_argument("catalogue_id", type=_id("catalogue"))
    p.add_argument("sku", nargs="?", type=_id("SKU"), help="one SKU's page (default: the catalogue's index)")
    p.add_argument("--expires", default="1h", help="how long the link works: 90s, 15m, 1h, 7d (default 1h)")
    p.add_argument("--read-only", action="store_true", help="a view-only page: no buttons, it writes nothing")
    p.set_defaults(func=commands.cmd_review_link)
    p = sub.add_parser("storage", help="the output bucket's CORS rule, for review pages on another origin")
    p.add_argument("action", choices=["cors"])
    p.add_argument("--origin", action="append", required=True, help="the pages' origin: https://host[:port]")
    p.set_defaults(func=commands.cmd_storage)
    p = sub.add_parser("verify", help="print a card file's IPTC digital source type and C2PA credentials")
    p.add_argument("file", help="a card file, or s3://bucket/key")
    p.add_argument(
        "--trust-anchors", type=Path, help="PEM CAs to trust (default: the c2pa.trust_anchors setting)"
    )
    p.set_defaults(func=commands.cmd_verify)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="product-studio",
        description="Seller product photos in, marketplace cards of that exact product out (README.md).",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    _add_model_commands(sub)
    _add_run_commands(sub)
    _add_review_commands(sub)
    describe(sub)
    return parser


def _run(args: argparse.Namespace) -> int:
    allow_slow_ephemeral_start()  # before any command imports Prefect
    try:
        return args.func(args)
    except ValidationError as exc:
        if exc.title != "Settings":
            print(f"product-studio {args.command}: error: {exc}", file=sys.stderr)
            return 2
        from product_studio.settings import describe_settings_error

        for line in describe_settings_error(exc).splitlines():
            print(f"product-studio {args.command}: bad setting: {line}", file=sys.stderr)
        return 2
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
