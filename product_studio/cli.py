"""``product-studio`` command line. Each command imports only what it needs (Prefect only for flows)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def _outcomes(outcomes: list) -> int:
    for o in outcomes:
        line = f"{o.status:9} {o.catalogue_id}/{o.sku}"
        line += f"  {o.manifest}" if o.status == "published" else f"  {o.error}"
        print(line)
        for p in o.problems:
            print(f"          photo not used: {p.reason}")
    return 0 if all(o.status == "published" for o in outcomes) else 1


def cmd_tiny_model(args: argparse.Namespace) -> int:
    from product_studio.models import build_tiny_model

    print(build_tiny_model(args.path, seed=args.seed))
    return 0


def cmd_sample_catalogue(args: argparse.Namespace) -> int:
    from product_studio.samples import upload_sample_catalogue
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

    return _outcomes(catalogue_flow(args.catalogue_id))


def cmd_sku(args: argparse.Namespace) -> int:
    from flows.sku import sku_flow

    state = sku_flow(args.catalogue_id, args.sku, return_state=True)
    if state.is_completed():
        return _outcomes([state.result()])
    print(
        f"failed    {args.catalogue_id}/{args.sku}  {state.result(raise_on_failure=False)}", file=sys.stderr
    )
    return 1


def cmd_serve(args: argparse.Namespace) -> int:
    from flows.serve import main

    main()
    return 0


def cmd_settings(args: argparse.Namespace) -> int:
    from product_studio.settings import Settings

    print(json.dumps(Settings().model_dump(mode="json"), indent=2))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="product-studio", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("tiny-model", help="write a tiny seeded Stable Diffusion folder (for tests and demos)")
    p.add_argument("path", type=Path)
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=cmd_tiny_model)
    p = sub.add_parser(
        "sample-catalogue", help="upload the built-in sample catalogue to the incoming location"
    )
    p.add_argument("catalogue_id")
    p.add_argument("--create-bucket", action="store_true", help="create the incoming bucket if missing")
    p.set_defaults(func=cmd_sample_catalogue)
    p = sub.add_parser("catalogue", help="run the catalogue flow: every SKU of a ready catalogue")
    p.add_argument("catalogue_id")
    p.set_defaults(func=cmd_catalogue)
    p = sub.add_parser("sku", help="run the single-SKU flow")
    p.add_argument("catalogue_id")
    p.add_argument("sku")
    p.set_defaults(func=cmd_sku)
    p = sub.add_parser("serve", help="serve the Prefect deployments (scheduled scan + manual flows)")
    p.set_defaults(func=cmd_serve)
    p = sub.add_parser("settings", help="print the settings in force (from PRODUCT_STUDIO_* variables)")
    p.set_defaults(func=cmd_settings)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (ValueError, FileNotFoundError, ImportError, RuntimeError) as exc:
        if type(exc).__module__.startswith("prefect"):
            raise
        print(f"product-studio {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
