"""``product-studio`` commands that run the pipeline or show its setup: catalogue, sku, deployments, serve,
settings, formats, templates."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from flows.cli.flags import valid_id
from product_studio.text import printable


def add_commands(sub) -> None:
    p = sub.add_parser("catalogue", help="run the catalogue flow: every SKU of a ready catalogue")
    p.add_argument("catalogue_id", type=valid_id("catalogue"))
    p.add_argument("--force", action="store_true", help="make every SKU again, even unchanged ones")
    p.set_defaults(func=cmd_catalogue)
    p = sub.add_parser("sku", help="run the single-SKU flow")
    p.add_argument("catalogue_id", type=valid_id("catalogue"))
    p.add_argument("sku", type=valid_id("SKU"))
    p.add_argument("--force", action="store_true", help="make the SKU again, even if unchanged")
    p.set_defaults(func=cmd_sku)
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


def _outcomes(outcomes: list) -> int:
    for o in outcomes:
        line = f"{o.status:9} {o.catalogue_id}/{o.sku}"
        line += f"  {o.manifest}" if o.status == "published" else f"  {printable(o.reason or o.error, 2000)}"
        print(line)
        for p in o.problems:  # photo file names are the seller's
            print(f"          photo not used: {printable(p.reason, 2000)}")
    return 0 if all(o.status != "failed" for o in outcomes) else 1


def cmd_catalogue(args: argparse.Namespace) -> int:
    from flows.catalogue import NOT_RUN, catalogue_flow
    from product_studio.settings import Settings

    Settings()  # a bad setting is said in one line before any flow (or Prefect server) starts
    state = catalogue_flow(args.catalogue_id, force=args.force, return_state=True)
    outcomes = state.result(raise_on_failure=False)  # a Failed run still carries every SKU's outcome
    if isinstance(outcomes, BaseException):
        raise outcomes
    if (state.message or "").startswith(NOT_RUN):  # another run works on it; it writes the report
        print(f"busy      {args.catalogue_id}  {state.message.removeprefix(NOT_RUN)}; this run did nothing")
        return 0
    return _outcomes(outcomes)


def cmd_sku(args: argparse.Namespace) -> int:
    from flows.sku import sku_flow
    from product_studio.settings import Settings

    Settings()  # a bad setting is said in one line before any flow (or Prefect server) starts
    state = sku_flow(args.catalogue_id, args.sku, force=args.force, return_state=True)
    if state.is_completed():
        return _outcomes([state.result()])
    # One line starting with the status word, on stdout like the other outcomes (error.json has the detail).
    error = printable(str(state.result(raise_on_failure=False)), 2000)
    print(f"failed    {args.catalogue_id}/{args.sku}  {error}")
    return 1


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


def cmd_formats(args: argparse.Namespace) -> int:
    from product_studio.cards.formats import ALIASES, FORMATS

    for f in FORMATS.values():
        aliases = [old for old, new in ALIASES.items() if new == f.id]
        print(
            f"{f.id}  {f.width}x{f.height}  {f.kind}  {f.marketplace}: {f.title}"
            + (f"  (old id: {', '.join(aliases)})" if aliases else "")
        )
    return 0


def cmd_templates(args: argparse.Namespace) -> int:
    from product_studio.rendering import scenes
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
