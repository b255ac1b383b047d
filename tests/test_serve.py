"""``product-studio serve`` as an operator runs it: no Prefect server, a fresh ``PREFECT_HOME``, a cron
schedule. The schedule must fire by itself and the ready catalogue be published without any other command."""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
import uuid
from pathlib import Path

import pytest

from flows.prefect_server import ServerDidNotStart, allow_slow_ephemeral_start, local_server
from product_studio import layout
from product_studio.devkit.samples import upload_sample_catalogue
from product_studio.storage import Store

REPO = Path(__file__).resolve().parents[1]
# One SKU is enough: what these tests prove is the server and the schedule, not the catalogue.
ONE = ["teapot-teal"]
CAT = "served-cat"


def _serve_env(
    s3_server, tiny_model: Path, encoders: tuple[Path, Path], tmp_path: Path, tag: str
) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_API", "PRODUCT_STUDIO_"))}
    return {
        **env,
        **s3_server.env(),
        "PREFECT_HOME": str(tmp_path / "fresh-prefect-home"),
        "PREFECT_LOGGING_LEVEL": "WARNING",
        "PRODUCT_STUDIO_SCHEDULE_CRON": "* * * * *",
        "PRODUCT_STUDIO_INCOMING": f"s3://in-{tag}",
        "PRODUCT_STUDIO_OUTPUT": f"s3://out-{tag}",
        "PRODUCT_STUDIO_BASE_MODEL": str(tiny_model),
        "PRODUCT_STUDIO_DEVICE": "cpu",
        "PRODUCT_STUDIO_CLEANER": "grabcut",
        "PRODUCT_STUDIO_WORK_DIR": str(tmp_path / "work"),
        "PRODUCT_STUDIO_TRAIN__STEPS": "2",
        "PRODUCT_STUDIO_TRAIN__PRIOR_IMAGES": "1",
        "PRODUCT_STUDIO_TRAIN__VALIDATION_STEPS": "2",
        "PRODUCT_STUDIO_RENDER__STEPS": "2",
        "PRODUCT_STUDIO_RENDER__PRIOR_STEPS": "2",
        "PRODUCT_STUDIO_DEFAULT_SCENES": '["oak-table"]',
        "PRODUCT_STUDIO_DEFAULT_MARKETPLACES": '["main-white"]',
        "PRODUCT_STUDIO_SCORES__DINO_MODEL": str(encoders[0]),
        "PRODUCT_STUDIO_SCORES__CLIP_MODEL": str(encoders[1]),
        "PRODUCT_STUDIO_SCORES__MIN_IDENTITY": "-1",  # the tiny encoders' scores mean nothing
        "PRODUCT_STUDIO_SCORES__MIN_PROMPT": "-1",
    }


def _wait_for_report(output: Store, timeout: float, serve: subprocess.Popen, log: Path) -> dict:
    key = layout.catalogue_key(CAT, layout.CATALOGUE_REPORT)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert serve.poll() is None, f"serve exited ({serve.returncode}):\n{log.read_text()[-3000:]}"
        if output.exists(key):
            return json.loads(output.read(key))
        time.sleep(2)
    raise AssertionError(f"no catalogue report after {timeout:.0f} s:\n{log.read_text()[-3000:]}")


def _ui_loads_its_api(chromium, base: str) -> None:
    """Prefect's UI at ``base`` reads its API address from the server and reaches it; with analytics off
    it asks no analytics host (every request off the server is refused and recorded)."""
    with urllib.request.urlopen(f"{base}/ui-settings", timeout=10) as response:
        assert json.load(response)["api_url"] == f"{base}/api"
    with urllib.request.urlopen(f"{base}/api/admin/settings", timeout=10) as response:
        assert json.load(response)["server"]["analytics_enabled"] is False
    page, answered, elsewhere = chromium.new_page(), [], []
    page.on("response", lambda r: answered.append(r.status) if r.url.startswith(f"{base}/api/") else None)

    def only_the_server(route) -> None:
        if route.request.url.startswith(base) or route.request.url.startswith("data:"):
            route.continue_()
        else:
            elsewhere.append(route.request.url)
            route.abort()

    page.route("**/*", only_the_server)
    with page.expect_response(lambda r: r.url.startswith(f"{base}/api/"), timeout=60_000):
        page.goto(base, timeout=60_000)
    page.wait_for_load_state("networkidle", timeout=60_000)
    assert answered and all(status < 400 for status in answered), answered
    assert "Unable to connect" not in page.inner_text("body")
    assert not [u for u in elsewhere if "amplitude" in u], elsewhere
    page.close()


@pytest.mark.slow
def test_serve_runs_the_schedule_by_itself_with_a_fresh_prefect_home(
    s3_env, tiny_model, tiny_encoders, tmp_path, chromium
):
    tag = uuid.uuid4().hex[:8]
    env = _serve_env(s3_env, tiny_model, tiny_encoders, tmp_path, tag)
    incoming, output = Store(env["PRODUCT_STUDIO_INCOMING"]), Store(env["PRODUCT_STUDIO_OUTPUT"])
    incoming.ensure_bucket()
    output.ensure_bucket()
    upload_sample_catalogue(incoming, CAT, photos=3, size=256, with_corrupt_photo=False, products=ONE)

    log = tmp_path / "serve.log"
    with log.open("wb") as out:
        serve = subprocess.Popen(
            [sys.executable, "-m", "flows.cli", "serve"],
            cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
    try:
        report = _wait_for_report(output, 420, serve, log)
        skus = {row["sku"]: row for row in report["skus"]}
        assert skus and all(row["status"] == "published" for row in skus.values()), [
            row["error"] for row in skus.values()
        ]
        assert output.exists(layout.sku_key(CAT, "teapot-teal", layout.MANIFEST))
        url = re.search(r"Prefect server on (http://127\.0\.0\.1:\d+)", log.read_text())
        assert url, log.read_text()[-3000:]
        _ui_loads_its_api(chromium, url.group(1))
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(serve.pid, signal.SIGTERM)
        serve.wait(60)
    assert (Path(env["PREFECT_HOME"]) / "local-server.log").exists(), "its log is kept in PREFECT_HOME"
    with pytest.raises(OSError):  # serve stopped the server it started
        urllib.request.urlopen(f"{url.group(1)}/api/health", timeout=5)


@pytest.mark.slow
def test_a_catalogue_runs_from_a_fresh_prefect_home_while_every_core_is_busy(
    s3_env, tiny_model, tiny_encoders, tmp_path
):
    """Issue 20 #2: Prefect's temporary server migrates a fresh database first (20-31 s on 2 busy cores, past
    Prefect's own 20-s start-up limit); ``product-studio catalogue`` must still run."""
    tag = uuid.uuid4().hex[:8]
    env = _serve_env(s3_env, tiny_model, tiny_encoders, tmp_path, tag)
    incoming, output = Store(env["PRODUCT_STUDIO_INCOMING"]), Store(env["PRODUCT_STUDIO_OUTPUT"])
    incoming.ensure_bucket()
    output.ensure_bucket()
    upload_sample_catalogue(incoming, CAT, photos=3, size=256, with_corrupt_photo=False, products=ONE)
    assert not Path(env["PREFECT_HOME"]).exists()
    spin = [sys.executable, "-c", "while True: pass"]
    busy = [subprocess.Popen(spin) for _ in range(os.cpu_count() or 2)]
    try:
        done = subprocess.run(
            [sys.executable, "-m", "flows.cli", "catalogue", CAT],
            cwd=REPO, env=env, capture_output=True, text=True, timeout=900,
        )  # fmt: skip
    finally:
        for process in busy:
            process.kill()
            process.wait()
    assert done.returncode == 0, (done.stdout + done.stderr)[-3000:]
    report = json.loads(output.read(layout.catalogue_key(CAT, layout.CATALOGUE_REPORT)))
    assert {row["status"] for row in report["skus"]} == {"published"}


def test_a_local_server_that_cannot_start_is_named_with_what_to_do(tmp_path, monkeypatch):
    monkeypatch.setattr(sys, "executable", "/bin/false")  # the server command exits at once
    expected = r"(?s)exited \(1\).*prefect server start.*PREFECT_API_URL"
    with pytest.raises(ServerDidNotStart, match=expected), local_server(tmp_path / "home", timeout=30):
        pass


def test_prefects_temporary_server_gets_a_start_up_limit_that_fits_a_small_machine():
    environ: dict[str, str] = {}
    allow_slow_ephemeral_start(environ)
    assert int(environ["PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS"]) >= 120
    environ = {"PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "45"}
    allow_slow_ephemeral_start(environ)
    assert environ["PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS"] == "45"  # the operator's own wins


@pytest.mark.parametrize("url", ["http://127.0.0.1:{port}/api", "not a url"])
def test_serve_with_an_unreachable_prefect_api_url_says_so_in_one_line(url, tmp_path):
    """Issue 34 #8: an httpx traceback before; one line naming PREFECT_API_URL and what to do."""
    from product_studio.devkit.processes import free_port

    url = url.format(port=free_port())  # nothing listens there
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_API", "PRODUCT_STUDIO_"))}
    env |= {"PREFECT_API_URL": url, "PREFECT_HOME": str(tmp_path / "prefect"), "PRODUCT_STUDIO_DEVICE": "cpu"}
    done = subprocess.run(
        [sys.executable, "-m", "flows.cli", "serve"], cwd=REPO, env=env, capture_output=True, text=True,
        timeout=300,
    )  # fmt: skip
    text = done.stdout + done.stderr
    assert done.returncode == 2, text[-3000:]
    assert "Traceback" not in text and "httpx" not in text, text[-3000:]
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert f"PREFECT_API_URL={url}: no Prefect server answers there" in done.stderr, done.stderr


def _processes_with(variable: str, value: str) -> list[int]:
    """The processes whose environment holds ``variable=value`` (Linux /proc)."""
    needle = f"{variable}={value}".encode()
    found = []
    for entry in Path("/proc").glob("[0-9]*"):
        with contextlib.suppress(OSError):
            if needle in (entry / "environ").read_bytes().split(b"\0"):
                found.append(int(entry.name))
    return found


def _serve_until(tmp_path: Path, line: str, sig: int) -> tuple[int, str]:
    """Start ``serve`` without PREFECT_API_URL, send ``sig`` to it (alone, not its group) once its output
    has ``line``, and return its exit status and output once it and every process of its server are gone."""
    home = str(tmp_path / "fresh-prefect-home")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_API", "PRODUCT_STUDIO_"))}
    env |= {"PREFECT_HOME": home, "PRODUCT_STUDIO_DEVICE": "cpu", "PRODUCT_STUDIO_CLEANER": "grabcut"}
    log = tmp_path / "serve.log"
    with log.open("wb") as out:
        serve = subprocess.Popen(
            [sys.executable, "-u", "-m", "flows.cli", "serve"],
            cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
    try:
        deadline = time.monotonic() + 300
        while line not in log.read_text(errors="replace"):
            assert serve.poll() is None and time.monotonic() < deadline, log.read_text()[-3000:]
            time.sleep(0.1)
        os.kill(serve.pid, sig)
        code = serve.wait(120)
        deadline = time.monotonic() + 60  # the server's own shutdown
        while (left := [p for p in _processes_with("PREFECT_HOME", home) if p != serve.pid]) and (
            time.monotonic() < deadline
        ):
            time.sleep(0.5)
        return code, log.read_text(errors="replace") + f"\nleft: {left}"
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(serve.pid, signal.SIGKILL)
        for pid in _processes_with("PREFECT_HOME", home):  # a failing test leaves nothing behind either
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
@pytest.mark.parametrize(
    "sig", [signal.SIGTERM, signal.SIGHUP, signal.SIGINT, signal.SIGKILL], ids=lambda s: s.name
)
def test_serve_stopped_while_its_server_starts_stops_the_server(sig, tmp_path):
    """Issue 34 #7: SIGTERM while the local server started left it running, re-parented to init; INT, TERM
    and HUP end serve by an exception that stops the server, SIGKILL by the server's parent-death signal."""
    code, log = _serve_until(tmp_path, "starting a local Prefect server", sig)
    assert log.endswith("left: []"), log[-3000:]
    assert code != 0


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_serve_stopped_by_hup_while_serving_stops_the_server(tmp_path):
    _, log = _serve_until(tmp_path, "Serving ", signal.SIGHUP)
    assert log.endswith("left: []"), log[-3000:]
