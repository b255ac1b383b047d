"""A terminal that is ours: Prefect's run-state chatter and library progress bars off the console.

``product-studio`` points Prefect at ``flows/logging.yml`` (``PREFECT_LOGGING_SETTINGS_PATH``) before
Prefect is imported, so every process it starts (``serve``'s flow runs, a work pool's) logs the same way.
The console handler there carries :class:`QuietConsole`: it drops Prefect's lifecycle lines ("Beginning
flow run", "Finished in state Completed()", task-run creation, the runner's process bookkeeping, the
temporary server's start and stop) and the traceback of an error the command explains in one line. The
Prefect UI still gets every line (its API handler has no filter). ``--verbose`` (or
``PRODUCT_STUDIO_LOG_LEVEL=DEBUG``) keeps Prefect's own configuration, and everything with it.
"""

from __future__ import annotations

import logging
import os
from collections.abc import MutableMapping
from pathlib import Path

LOGGING_CONFIG = Path(__file__).with_name("logging.yml")

# Prefect's own INFO lines about runs, which say nothing our stage lines do not.
_CHATTER = (
    "Beginning flow run",
    "Beginning subflow run",
    "Finished in state",  # its error, if any, was logged on its own line
    "Created task run",
    "Created flow run",
    "Executing ",
    "Submitting ",
    "Opening process",
    "Completed submission",
    "Process for flow run",
    "Starting temporary server",
    "Stopping temporary server",
    "Downloading flow code",
    "Runner '",
    "View at ",
)
_RUNNER = ("prefect.flow_runs.runner", "prefect.runner")  # its process bookkeeping, at INFO
# Errors the command line explains in one line (flows/cli): their tracebacks help nobody there. Ours are
# ValueErrors (bad input: IngestError, TemplateError, ...) or RuntimeErrors (StorageError, TrainingError).
_EXPLAINED = (ValueError, FileNotFoundError, ImportError, RuntimeError)


_LIBRARIES_QUIET = {
    "HF_HUB_DISABLE_PROGRESS_BARS": "1",
    "TQDM_DISABLE": "1",
    "TRANSFORMERS_VERBOSITY": "error",
    "DIFFUSERS_VERBOSITY": "error",
}


def verbose(environ: MutableMapping[str, str] | None = None, flag: bool = False) -> bool:
    environ = os.environ if environ is None else environ
    return flag or environ.get("PRODUCT_STUDIO_LOG_LEVEL", "").strip().upper() == "DEBUG"


def quiet_logging(environ: MutableMapping[str, str] | None = None, flag: bool = False) -> None:
    """Our logging configuration for this process and those it starts, unless verbose or the operator set
    one (call before Prefect is imported)."""
    environ = os.environ if environ is None else environ
    if verbose(environ, flag):
        environ["PRODUCT_STUDIO_LOG_LEVEL"] = "DEBUG"  # the processes it starts are verbose too
        return
    environ.setdefault("PREFECT_LOGGING_SETTINGS_PATH", str(LOGGING_CONFIG))
    # The libraries' loading bars and their notes (an optional torchvision, unused text-encoder LoRA keys).
    for name, value in _LIBRARIES_QUIET.items():
        environ.setdefault(name, value)


class QuietConsole(logging.Filter):
    """The console's filter (``flows/logging.yml``); made once per process that loads that configuration,
    which is also where diffusers' "Loading pipeline components" bars are turned off."""

    def __init__(self) -> None:
        super().__init__()
        try:
            from diffusers.utils import logging as diffusers_logging

            diffusers_logging.disable_progress_bar()
        except ImportError:  # a process that never loads a model
            pass

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno <= logging.INFO and record.name.startswith("prefect"):
            text = record.getMessage()
            if text.startswith(_CHATTER) or record.name.startswith(_RUNNER):
                return False
        error = record.exc_info[1] if record.exc_info else None
        if isinstance(error, _EXPLAINED) and not type(error).__module__.startswith("prefect"):
            # One line stays (a served run has no command to explain it); the command says the rest.
            record.msg, record.args = record.getMessage().splitlines()[0], ()
            record.exc_info, record.exc_text = None, None
        return True
