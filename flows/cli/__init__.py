"""``product-studio`` command line: the parser and the entry point. Each command imports only what it
needs (Prefect only for flows); the commands live by family: ``runs`` (catalogue, sku, deployments, serve,
settings, formats, templates), ``review`` (review, publish-approved, review-link, storage, verify) and
``models`` (train, eval, tiny-model, tiny-encoders, sample-catalogue); ``flags`` makes flags from typed
configs, ``help`` each command's description and example.

It lives beside the flows because some commands start them; the library (``product_studio``) never imports
Prefect or ``flows``.
"""

from __future__ import annotations

import argparse
import os
import sys

from pydantic import ValidationError

from flows.cli import models, review, runs
from flows.cli.help import describe
from flows.prefect_server import allow_slow_ephemeral_start


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="product-studio",
        description="Seller product photos in, marketplace cards of that exact product out (README.md).",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    models.add_commands(sub)
    runs.add_commands(sub)
    review.add_commands(sub)
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
