"""The ``product-studio`` parser: the train flags are TrainConfig's fields, generated, not copied by hand."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest
from PIL import Image, ImageDraw

from flows.cli import build_parser, main
from product_studio.training import TrainConfig


def _train_parser():
    sub = next(a for a in build_parser()._actions if a.dest == "command")
    return sub.choices["train"]


def test_every_train_config_field_has_its_flag_and_help():
    options = {o: a for a in _train_parser()._actions for o in a.option_strings}
    for name, field in TrainConfig.model_fields.items():
        action = options[f"--{name.replace('_', '-')}"]
        assert action.dest == name
        assert (field.description or name.replace("_", " ")) in action.help
    assert options["--learning-rate"].dest == "learning_rate" and "--lr" not in options
    assert options["--export-kohya"].dest == "export_kohya"
    assert options["--lr-scheduler"].choices == ["constant", "constant_with_warmup", "linear", "cosine",
                                                 "cosine_with_restarts", "polynomial"]  # fmt: skip


def test_a_flag_reaches_the_config_and_bad_values_are_refused(tmp_path: Path, tiny_model, capsys):
    photos = tmp_path / "photos"
    photos.mkdir()
    for i in range(3):
        im = Image.new("RGB", (160, 160), (230, 225, 215))
        ImageDraw.Draw(im).rectangle((40 + 5 * i, 40, 120, 130), fill=(40, 90 + 30 * i, 160))
        im.save(photos / f"{i}.jpg")
    out = tmp_path / "out"
    args = ["train", str(photos), "--class-noun", "mug", "--out", str(out), "--base-model", str(tiny_model),
            "--priors-dir", str(tmp_path / "priors"), "--prior-images", "1", "--rank", "2", "--quiet",
            "--steps", "2", "--no-validation", "--max-grad-norm", "0.25", "--weight-decay", "0",
            "--no-masked-loss"]  # fmt: skip
    assert main(args) == 0
    settings = json.loads((out / "training.json").read_text())["settings"]
    assert (settings["max_grad_norm"], settings["weight_decay"], settings["masked_loss"]) == (
        0.25,
        0.0,
        False,
    )
    with pytest.raises(SystemExit):
        main([*args, "--optimizer", "sgd"])
    assert "invalid choice: 'sgd'" in capsys.readouterr().err
    assert main([*args, "--max-grad-norm", "-1"]) == 2
    assert "max_grad_norm" in capsys.readouterr().err


def test_every_command_has_a_description_and_an_example(capsys):
    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    for name in sub.choices:
        with pytest.raises(SystemExit):
            build_parser().parse_args([name, "--help"])
        text = capsys.readouterr().out
        description = text.split("\n\n")[1]
        assert description.strip() and not description.startswith(("positional", "options")), (name, text)
        example = text.split("example:\n", 1)[1].strip()
        assert example.startswith(("product-studio ", "PRODUCT_STUDIO_")) and f" {name}" in example, name


def test_outcome_lines_escape_photo_names_and_the_command_output_keeps_no_control_character(capsys):
    """Issue 38 #2: an SKU's photo names and reasons are the seller's; whatever a command prints goes out
    without a terminal escape (newlines, tabs and progress bars' carriage returns aside)."""
    from flows.cli import _escaped_output
    from flows.cli.runs import _outcomes
    from product_studio.records import PhotoProblem, SkuOutcome

    evil = "photo\x1b]0;pwned\x07\r\nFAKE\x00\u202e.jpg"
    outcome = SkuOutcome.failed("cat", "sku1", ValueError(f"{evil}: not a photo"))
    outcome = outcome.model_copy(update={"problems": [PhotoProblem(file=evil, reason=f"{evil}: blank")]})
    assert _outcomes([outcome]) == 1
    out = capsys.readouterr().out
    assert len(out.splitlines()) == 2 and not any(c in out for c in ("\x1b", "\x07", "\r", "\x00", "\u202e"))
    assert "photo\\x1b]0;pwned\\x07\\r\\nFAKE\\x00\\u202e.jpg" in out
    with _escaped_output():
        print("plain\x1b[2J and a bar\r50%\tdone")
    assert capsys.readouterr().out == "plain\\x1b[2J and a bar\r50%\tdone\n"
    # A log handler made during a command keeps the stream; once a test's capture closes, the process's own.
    import io

    from flows.cli import _Escaping

    captured, own = io.StringIO(), io.StringIO()
    stream = _Escaping(captured, own)
    captured.close()
    stream.write("Stopping\x1b[0m\n")
    assert own.getvalue() == "Stopping\\x1b[0m\n"


def test_the_console_drops_prefects_run_chatter_and_explained_tracebacks_but_not_ours():
    """Issue 35: Prefect's lifecycle lines and the traceback before an error the command explains in one
    line stay off the terminal (the Prefect UI's handler has no such filter)."""
    import logging
    import sys

    from flows.quiet import QuietConsole

    quiet = QuietConsole()

    def record(name: str, msg: str, level: int = logging.INFO, error: BaseException | None = None):
        exc_info = (type(error), error, None) if error else None
        return logging.LogRecord(name, level, __file__, 1, msg, (), exc_info)

    for chatter in ("Finished in state Completed()", "Beginning subflow run 'c/s' for flow 'product-sku'"):
        assert not quiet.filter(record("prefect.flow_runs", chatter))
    assert not quiet.filter(record("prefect.flow_runs.runner", "Opening process..."))
    assert not quiet.filter(record("prefect", "Starting temporary server on http://127.0.0.1:8000"))
    assert quiet.filter(record("prefect.flow_runs", "training: step 40/200 (3.1 steps/s, about 51 s left)"))
    assert quiet.filter(record("prefect.flow_runs", "Crashed: the worker died", logging.ERROR))
    two_lines = "Encountered: 2 errors\nfirst\nsecond"
    explained = record("prefect.flow_runs", two_lines, logging.ERROR, ValueError())
    assert quiet.filter(explained) and explained.exc_info is None  # one line stays, the traceback goes
    assert explained.getMessage() == "Encountered: 2 errors"
    try:
        raise KeyError("a bug")
    except KeyError:
        bug = record("prefect.flow_runs", "Encountered exception", logging.ERROR)
        bug.exc_info = sys.exc_info()
    assert quiet.filter(bug) and bug.exc_info is not None  # an unexpected error keeps its traceback


def test_a_command_that_fails_for_a_known_reason_prints_no_traceback(s3_env, tmp_path):
    """Issue 35: ``product-studio catalogue`` of a catalogue that is not there: one line saying so, exit 2,
    no Prefect traceback before it (``--verbose`` brings Prefect's own logging back)."""
    import os
    import subprocess
    import sys
    import uuid

    from product_studio.storage import Store

    incoming = Store(f"s3://in-{uuid.uuid4().hex[:8]}")
    incoming.ensure_bucket()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_API", "PRODUCT_STUDIO_"))}
    env |= {
        "PREFECT_HOME": str(tmp_path / "prefect"),
        "PRODUCT_STUDIO_INCOMING": incoming.url(),
        "PRODUCT_STUDIO_OUTPUT": incoming.url(),
        "PRODUCT_STUDIO_DEVICE": "cpu",
    }
    env.pop("PREFECT_LOGGING_SETTINGS_PATH", None)
    done = subprocess.run(
        [sys.executable, "-m", "flows.cli", "catalogue", "no-such-catalogue"],
        cwd=Path(__file__).resolve().parents[1], env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    text = done.stdout + done.stderr
    assert done.returncode == 2, text[-3000:]
    assert "Traceback" not in text and "Starting temporary server" not in text, text
    assert "product-studio catalogue: error:" in done.stderr and "no-such-catalogue" in done.stderr
    assert len(text.strip().splitlines()) <= 4, text


def test_training_progress_says_the_step_the_rate_and_what_is_left(monkeypatch):
    import logging

    from flows import progress

    clock = iter([100.0, 100.0, 110.0, 112.0, 130.0])  # start; steps 11, 21, 22 (too soon), 40 (the last)
    monkeypatch.setattr(progress.time, "monotonic", lambda: next(clock))
    lines: list[str] = []

    class Log(logging.Logger):
        def info(self, msg, *args, **kwargs):
            lines.append(msg % args)

    report = progress.TrainingProgress(40, Log("x"), "cat/sku", every=5)
    for step in (11, 21, 22, 40):  # resumed from a checkpoint at step 10: its rate counts from there
        report(step, 0.25)
    assert lines == [
        "cat/sku: training: step 21/40 (1.1 steps/s, about 17 s left), loss 0.250",
        "cat/sku: training: step 40/40 (1.0 steps/s, about 0 s left), loss 0.250",
    ]


@pytest.mark.parametrize("args", [["settings"], ["formats", "list"], ["templates", "list"]])
def test_a_command_whose_reader_goes_away_stops_quietly(args, tmp_path):
    """Issue 34 #10: ``product-studio settings | head -1``: the reader closes the pipe before the command
    prints; the command stops with 141 (as SIGPIPE would) and no BrokenPipeError traceback."""
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if not k.startswith("PRODUCT_STUDIO_")}
    env |= {"PRODUCT_STUDIO_WORK_DIR": str(tmp_path), "PREFECT_HOME": str(tmp_path / "prefect")}
    read, write = os.pipe()
    os.close(read)  # the reader is gone before the first line is written (head -1 that already read one)
    try:
        done = subprocess.run(
            [sys.executable, "-m", "flows.cli", *args], stdout=write, stderr=subprocess.PIPE, text=True,
            cwd=Path(__file__).resolve().parents[1], env=env, timeout=300,
        )  # fmt: skip
    finally:
        os.close(write)
    assert "Traceback" not in done.stderr and "BrokenPipe" not in done.stderr, done.stderr
    assert done.returncode == 141, done.stderr
