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
import contextlib
import io
import os
import sys
from collections.abc import Iterator
from typing import TextIO

from pydantic import ValidationError

from flows.cli import models, review, runs
from flows.cli.help import describe
from flows.prefect_server import allow_slow_ephemeral_start
from flows.quiet import quiet_logging
from product_studio.text import escape_controls, printable


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="product-studio",
        description="Seller product photos in, marketplace cards of that exact product out (README.md).",
    )
    parser.add_argument(
        "--verbose",
        action="store_true",
        help="Prefect's own log lines and library progress bars too (also: PRODUCT_STUDIO_LOG_LEVEL=DEBUG)",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    models.add_commands(sub)
    runs.add_commands(sub)
    review.add_commands(sub)
    describe(sub)
    return parser


def _run(args: argparse.Namespace) -> int:
    quiet_logging(flag=getattr(args, "verbose", False))  # both before any command imports Prefect
    allow_slow_ephemeral_start()
    with _escaped_output():
        return _call(args)


@contextlib.contextmanager
def _escaped_output() -> Iterator[None]:
    """Every line a command prints or logs goes out without terminal control sequences: seller text is
    escaped where it is shown (``text.printable``); this catches whatever else would carry one (an escape,
    a NUL, a bidirectional override), keeping only newlines, tabs and the carriage returns of progress bars.
    Log handlers made while a command runs (Prefect's) keep writing through it after the command ends."""
    streams = sys.stdout, sys.stderr
    sys.stdout = _Escaping(sys.stdout, sys.__stdout__)
    sys.stderr = _Escaping(sys.stderr, sys.__stderr__)
    try:
        yield
    finally:
        sys.stdout, sys.stderr = streams


class _Escaping(io.TextIOBase):
    """A text stream that escapes control characters; once the stream it wraps is closed (a test's
    capture), it writes to the process's own (``fallback``)."""

    def __init__(self, stream: TextIO, fallback: TextIO | None) -> None:
        self.stream, self.fallback = stream, fallback

    def _target(self) -> TextIO | None:
        return self.fallback if getattr(self.stream, "closed", False) else self.stream

    def write(self, text: str) -> int:
        if (target := self._target()) is not None:
            target.write(escape_controls(text, keep="\n\t\r"))
        return len(text)

    def flush(self) -> None:
        if (target := self._target()) is not None:
            target.flush()

    def isatty(self) -> bool:
        target = self._target()
        return target is not None and target.isatty()

    def fileno(self) -> int:
        target = self._target()
        if target is None:
            raise OSError("no stream")
        return target.fileno()

    @property
    def encoding(self) -> str:  # type: ignore[override]
        return getattr(self._target(), "encoding", "utf-8")


def _call(args: argparse.Namespace) -> int:
    try:
        return args.func(args)
    except ValidationError as exc:
        if exc.title != "Settings":
            print(f"product-studio {args.command}: error: {printable(str(exc), 4000)}", file=sys.stderr)
            return 2
        from product_studio.settings import describe_settings_error

        for line in describe_settings_error(exc).splitlines():
            print(f"product-studio {args.command}: bad setting: {printable(line, 2000)}", file=sys.stderr)
        return 2
    except (ValueError, FileNotFoundError, ImportError, RuntimeError) as exc:
        if type(exc).__module__.startswith("prefect"):
            raise
        print(f"product-studio {args.command}: error: {printable(str(exc), 4000)}", file=sys.stderr)
        return 2


def main(argv: list[str] | None = None) -> int:
    """Run one command in this process (tests and embedding use this)."""
    return _run(build_parser().parse_args(argv))


# Commands whose every file is written and closed when they return, and which start no background
# services: their process may skip interpreter teardown (~1.3 s with torch and diffusers loaded).
_FAST_EXIT = {"train", "tiny-model", "tiny-encoders"}


# What a shell reports for a command stopped by SIGPIPE (128 + 13): `yes | head -1` under `set -o pipefail`.
READER_GONE = 141


def entrypoint() -> None:
    """The ``product-studio`` console script. A command whose reader goes away (``| head -1``) stops
    quietly with :data:`READER_GONE`, whatever it was printing (help included)."""
    try:
        args = build_parser().parse_args()
        code = _run(args)
        sys.stdout.flush()
        sys.stderr.flush()
    except BrokenPipeError:
        if not _reader_gone():
            raise  # another pipe (a socket): not ours to hide
        sys.exit(READER_GONE)  # nothing left to say, and no one to say it to
    if args.command in _FAST_EXIT:
        import logging

        logging.shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    sys.exit(code)


def _reader_gone() -> bool:
    """Whether the process's stdout or stderr is a pipe whose reader has closed it (poll says POLLERR);
    their buffered lines are dropped so that nothing tries to write them again at exit."""
    import select

    gone = False
    for fd in (1, 2):
        poll = select.poll()
        poll.register(fd, 0)
        if any(event & select.POLLERR for _, event in poll.poll(0)):
            gone = True
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, fd)  # what is still buffered goes nowhere, instead of raising again
            os.close(devnull)
    return gone
