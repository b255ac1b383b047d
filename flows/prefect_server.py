"""The Prefect API a command needs, made to work on a fresh, small machine.

Schedules need a real Prefect server: the temporary one Prefect starts for a process without
``PREFECT_API_URL`` has no scheduler, so a served cron schedule would never fire. ``local_server`` starts
``prefect server start`` on 127.0.0.1 (a free port, the database in ``PREFECT_HOME``), waits until it answers
and stops it again, whatever happens. Commands that run flows in-process keep Prefect's temporary server but
give it a start-up limit that fits a 2-core machine migrating a fresh database (Prefect's own is 20 s).
"""

from __future__ import annotations

import ctypes
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager, suppress
from pathlib import Path

API_URL = "PREFECT_API_URL"
STARTUP_TIMEOUT = "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS"
EPHEMERAL_STARTUP_S = 180  # a fresh PREFECT_HOME migrates its database first: 20-31 s on 2 busy cores
SERVER_STARTUP_S = 180


class ServerDidNotStart(RuntimeError):
    """The local Prefect server exited or did not answer in time."""


def allow_slow_ephemeral_start(environ: dict[str, str] | None = None) -> None:
    """Give Prefect's temporary server time to start, unless the operator set a limit (call before Prefect
    reads its settings, i.e. before it is imported)."""
    environ = os.environ if environ is None else environ
    environ.setdefault(STARTUP_TIMEOUT, str(EPHEMERAL_STARTUP_S))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/health", timeout=2) as response:
            return response.status == 200
    except OSError:
        return False


class ServerNotReachable(RuntimeError):
    """``PREFECT_API_URL`` names a server that does not answer."""


def check_reachable(url: str) -> str:
    """``url`` (an API URL) if a Prefect server answers its health check; else :class:`ServerNotReachable`
    in one line naming ``PREFECT_API_URL`` and what to do (never an httpx traceback later)."""
    try:
        with urllib.request.urlopen(f"{url.rstrip('/')}/health", timeout=10) as response:
            if response.status == 200:
                return url
            why = f"it answered {response.status}"
    except OSError as exc:  # refused, unknown host, timed out, an HTTP error
        why = str(getattr(exc, "reason", None) or exc)
    except ValueError as exc:  # not a URL at all
        why = str(exc)
    raise ServerNotReachable(
        f"{API_URL}={url}: no Prefect server answers there ({why}); start it, fix {API_URL}, or unset "
        "it to have serve start a local server"
    )


def _wait_for(server: subprocess.Popen, url: str, log: Path, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if _answers(url):
            return
        if server.poll() is not None:
            tail = log.read_text(errors="replace")[-2000:]
            raise ServerDidNotStart(
                f"the local Prefect server exited ({server.returncode}); its log {log} ends:\n{tail}\n"
                f"Start one yourself (`prefect server start`) and set {API_URL}."
            )
        time.sleep(0.5)
    raise ServerDidNotStart(
        f"the local Prefect server did not answer at {url} within {timeout:.0f} s (log: {log}); "
        f"start one yourself (`prefect server start`) and set {API_URL}."
    )


def _stop(server: subprocess.Popen) -> None:
    for sig, wait in ((signal.SIGTERM, 15.0), (signal.SIGKILL, 5.0)):
        with suppress(ProcessLookupError, PermissionError):
            os.killpg(server.pid, sig)
        try:
            server.wait(wait)
            return
        except subprocess.TimeoutExpired:
            continue


def server_env(environ: Mapping[str, str], home: Path, port: int) -> dict[str, str]:
    """The server's environment: its home; its UI told the address it really listens on (Prefect's UI reads
    its API address from the server's UI settings, which say port 4200 whatever ``--port`` says; an address
    the operator set, e.g. a proxy's, wins); analytics off in the UI unless the operator turned them on."""
    env = {k: v for k, v in environ.items() if k != API_URL}
    env.update(
        {
            "PREFECT_HOME": str(home),
            "PREFECT_SERVER_API_HOST": "127.0.0.1",
            "PREFECT_SERVER_API_PORT": str(port),
        }
    )
    if not any(env.get(name) for name in ("PREFECT_SERVER_UI_API_URL", "PREFECT_UI_API_URL")):
        env["PREFECT_SERVER_UI_API_URL"] = f"http://127.0.0.1:{port}/api"  # else a proxy's, the operator's
    env.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    env.setdefault("PREFECT_SERVER_UI_SHOW_PROMOTIONAL_CONTENT", "false")
    if env["PREFECT_SERVER_ANALYTICS_ENABLED"].strip().lower() in ("false", "0", "no", "off"):
        # Prefect's V2 UI starts its analytics client (which fetches a config from amplitude.com) before it
        # reads the setting; the V1 UI asks nothing off the server. A browser that chose V2 keeps it.
        env.setdefault("PREFECT_SERVER_UI_V2_ENABLED", "false")
    return env


# The signals that stop a command (Ctrl-C, a supervisor's TERM, a closed terminal's HUP): whichever arrives,
# at whatever moment, the server started for the command stops with it.
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
_PR_SET_PDEATHSIG = 1  # linux/prctl.h


def _stop_now(signum: int, frame: object) -> None:
    """TERM and HUP end the command as Ctrl-C would: by an exception, so every ``finally`` runs."""
    raise SystemExit(128 + signum)


def _child_setup(parent: int) -> Callable[[], None]:
    """What the server's process does before it becomes the server: take back the stop signals blocked
    around its start, and (Linux) ask for SIGTERM when its parent dies, even by SIGKILL, which no
    ``finally`` sees; if the parent is already gone, stop at once."""
    prctl = None
    if sys.platform.startswith("linux"):
        with suppress(OSError, AttributeError):
            prctl = ctypes.CDLL(None, use_errno=True).prctl

    def setup() -> None:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)
        if prctl is not None:
            prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
            if os.getppid() != parent:  # the parent died before the request was made
                os.kill(os.getpid(), signal.SIGTERM)

    return setup


@contextmanager
def _stopping_on_signals() -> Iterator[None]:
    """TERM and HUP raise SystemExit in the main thread for the block (INT raises KeyboardInterrupt as it
    does anyway); the handlers before are put back after."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {sig: signal.signal(sig, _stop_now) for sig in (signal.SIGTERM, signal.SIGHUP)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


@contextmanager
def local_server(home: Path, timeout: float = SERVER_STARTUP_S) -> Iterator[str]:
    """A Prefect server (with its scheduler) on 127.0.0.1 for the block; yields its API URL.

    Its database and log (``local-server.log``) live in ``home``; it runs in a session of its own and is
    stopped with everything it started when the block ends, whichever of INT, TERM or HUP ends the command
    and whenever (while the server starts too); if the command is killed outright, the server gets SIGTERM
    from the kernel (Linux's parent-death signal).
    """
    home.mkdir(parents=True, exist_ok=True)
    port, log = _free_port(), home / "local-server.log"
    url = f"http://127.0.0.1:{port}/api"
    env = server_env(os.environ, home, port)
    command = [sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1", "--port", str(port)]
    server = None
    with _stopping_on_signals():
        try:
            # A stop signal arriving while the process is made waits until ``server`` is known (the child
            # unblocks it for itself), so no moment leaves a server nobody stops.
            signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
            try:
                with log.open("ab") as out:
                    server = subprocess.Popen(
                        command, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
                        preexec_fn=_child_setup(os.getpid()),
                    )  # fmt: skip
            finally:
                signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)
            _wait_for(server, url, log, timeout)
            yield url
        finally:
            if server is not None:
                signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)  # a second signal waits for the stop
                try:
                    _stop(server)
                finally:
                    signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)
