"""``make pool-demo``: the distributed path, for real, on this machine.

Starts a private S3 server and a Prefect server on 127.0.0.1, two ``process`` work pools (``demo-gpu``: two
SKU workers, one run each at a time; ``demo-cpu``: one worker for the runs that plan and wait), deploys
``flows.deployments`` to them, uploads a sample catalogue, runs the ``product-catalogue/catalogue``
deployment and waits. Prints which worker ran each SKU; the last line is a JSON object
``{"skus": N, "published": N, "workers": {"<worker>": ["<sku>", ...]}, "seconds": S}``. Everything it
started is stopped on the way out, also on Ctrl-C or failure. On Kubernetes the same deployments run from
``infra/prefect.yaml`` (README, *From make demo to a GPU pool*).
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from contextlib import ExitStack, suppress
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
STATE = ROOT / ".pool-demo"  # the tiny models, kept between runs
CATALOGUE = "pool-demo"
GPU_POOL, CPU_POOL = "demo-gpu", "demo-cpu"
MARK = "POOL_DEMO_RUN"  # in every process this demo starts: how stragglers are found

# Every stage runs for real, at the size two CPU cores manage in a couple of minutes.
SETTINGS = {
    "PRODUCT_STUDIO_INCOMING": "s3://incoming",
    "PRODUCT_STUDIO_OUTPUT": "s3://output",
    "PRODUCT_STUDIO_MARKETPLACE": "s3://marketplace",
    "PRODUCT_STUDIO_BASE_MODEL": str(STATE / "tiny-sd"),
    "PRODUCT_STUDIO_DEVICE": "cpu",
    "PRODUCT_STUDIO_CLEANER": "grabcut",
    "PRODUCT_STUDIO_TRAIN__STEPS": "30",
    "PRODUCT_STUDIO_TRAIN__PRIOR_IMAGES": "4",
    "PRODUCT_STUDIO_TRAIN__LEAN_LORA": "true",
    "PRODUCT_STUDIO_TRAIN__VALIDATION_STEPS": "2",
    "PRODUCT_STUDIO_RENDER__STEPS": "4",
    "PRODUCT_STUDIO_RENDER__PRIOR_STEPS": "4",
    "PRODUCT_STUDIO_SCENE_COUNT": "1",
    "PRODUCT_STUDIO_DEFAULT_MARKETPLACES": '["amazon-main", "ebay-square"]',
    "PRODUCT_STUDIO_SCORES__DINO_MODEL": str(STATE / "tiny-encoders" / "dino"),
    "PRODUCT_STUDIO_SCORES__CLIP_MODEL": str(STATE / "tiny-encoders" / "clip"),
    "PRODUCT_STUDIO_SCORES__MIN_IDENTITY": "-1",
    "PRODUCT_STUDIO_SCORES__MIN_PROMPT": "-1",
    "HF_HUB_OFFLINE": "1",
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "DO_NOT_TRACK": "1",
    "PREFECT_WORKER_QUERY_SECONDS": "2",  # poll often: the demo's runs are short
    "PREFECT_WORKER_HEARTBEAT_SECONDS": "10",
    "PREFECT_LOGGING_LEVEL": "WARNING",
}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_until(check, what: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.5)
    raise TimeoutError(f"{what} did not come up within {timeout:.0f} s")


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return response.status == 200
    except OSError:
        return False


class Processes:
    """The servers and workers this demo starts; ``stop`` ends them and every process they started."""

    def __init__(self, logs: Path, env: dict[str, str]) -> None:
        self.logs, self.env, self.procs = logs, env, []

    def start(self, name: str, args: list[str], **extra_env: str) -> subprocess.Popen:
        log = (self.logs / f"{name}.log").open("ab")
        proc = subprocess.Popen(
            args, env={**self.env, **extra_env}, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        self.procs.append(proc)
        return proc

    def stop(self) -> None:
        for proc in self.procs:
            _signal_group(proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + 15
        for proc in self.procs:
            try:
                proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                _signal_group(proc.pid, signal.SIGKILL)
                proc.wait()
        _kill_marked(self.env[MARK])  # flow-run processes a worker started in a session of their own


def _signal_group(pid: int, sig: int) -> None:
    with suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, sig)


def _kill_marked(token: str) -> None:
    """Kill every process whose environment carries this demo's mark (Linux /proc; elsewhere a no-op)."""
    needle = f"{MARK}={token}".encode()
    for entry in Path("/proc").glob("[0-9]*"):
        try:
            if int(entry.name) != os.getpid() and needle in (entry / "environ").read_bytes().split(b"\0"):
                os.kill(int(entry.name), signal.SIGKILL)
        except (OSError, ValueError):
            continue


def _prefect(env: dict[str, str], *args: str) -> None:
    subprocess.run([sys.executable, "-m", "prefect", *args], env=env, check=True, capture_output=True)


def _run_catalogue(force: bool = False) -> tuple[dict, float]:
    from prefect.deployments import run_deployment

    from product_studio.settings import Settings
    from product_studio.storage import Store

    started = time.perf_counter()
    run = run_deployment(
        "product-catalogue/catalogue", parameters={"catalogue_id": CATALOGUE, "force": force}, timeout=1800
    )
    if not (run.state and run.state.is_completed()):
        raise RuntimeError(f"the catalogue run ended {run.state.type if run.state else 'without a state'}")
    report = json.loads(Store(Settings().output).read(f"{CATALOGUE}/catalogue-report.json"))
    return report, time.perf_counter() - started


def _summary(report: dict, seconds: float) -> dict:
    workers: dict[str, list[str]] = {}
    for entry in report["skus"]:
        workers.setdefault(entry.get("worker") or "?", []).append(entry["sku"])
    return {
        "skus": len(report["skus"]),
        "published": report["published"],
        "workers": workers,
        "seconds": round(seconds, 1),
    }


def _details(output, report: dict, summary: dict) -> dict:
    """For ``bench/pool.py``: each SKU's worker, seconds and stage timings, and the class-prior reuse."""
    from product_studio.reuse import read_published

    skus, classes = [], set()
    for entry in report["skus"]:
        manifest = read_published(output, CATALOGUE, entry["sku"])
        timings = manifest.timings_s if manifest else {}
        classes.add(manifest.class_noun if manifest else entry["sku"])
        skus.append(
            {**{k: entry.get(k) for k in ("sku", "worker", "seconds", "status")}, "timings_s": timings}
        )
    # A class's first SKU generates its class images; every later SKU of the class reads them from the cache.
    hit_rate = round(1 - len(classes) / max(1, len(skus)), 3)
    return {"summary": summary, "skus": skus, "prior_cache_hit_rate": hit_rate}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="pool-demo", description=__doc__.split("\n\n")[0])
    parser.add_argument("--copies", type=int, default=2, help="variants of each of the 3 sample products")
    parser.add_argument("--workers", type=int, default=2, help="SKU workers on the demo GPU pool")
    parser.add_argument("--again", action="store_true", help="then run the catalogue again (all skipped)")
    parser.add_argument("--report", type=Path, help="also write each SKU's outcome and stage timings here")
    parser.add_argument(
        "--threads", type=int, help="CPU threads per SKU run (OMP_NUM_THREADS); default: torch's"
    )
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, signal.default_int_handler)  # a TERM unwinds like Ctrl-C: all stopped

    with ExitStack() as stack:
        tmp = Path(tempfile.mkdtemp(prefix="pool-demo-"))
        stack.callback(shutil.rmtree, tmp, ignore_errors=True)
        port = _free_port()
        env = {
            **os.environ,
            **SETTINGS,
            "PREFECT_HOME": str(tmp / "prefect"),
            "PREFECT_API_URL": f"http://127.0.0.1:{port}/api",
            "PRODUCT_STUDIO_WORK_DIR": str(tmp / "work"),
            MARK: secrets.token_hex(8),
        }
        if args.threads:
            env |= {"OMP_NUM_THREADS": str(args.threads), "MKL_NUM_THREADS": str(args.threads)}
        os.environ.update(env)  # this process talks to the same servers (set before Prefect is imported)

        from product_studio.devkit.local_s3 import LocalS3
        from product_studio.devkit.samples import upload_sample_catalogue
        from product_studio.devkit.tiny_models import build_tiny_encoders, build_tiny_model

        s3 = stack.enter_context(LocalS3(tmp / "s3"))
        env |= s3.env()
        os.environ.update(s3.env())
        procs = Processes(tmp, env)
        stack.callback(procs.stop)
        server = ["server", "start", "--host", "127.0.0.1", "--port", str(port)]
        procs.start("prefect-server", [sys.executable, "-m", "prefect", *server])
        if not (STATE / "tiny-sd" / "model_index.json").exists():
            build_tiny_model(STATE / "tiny-sd")
        if not (STATE / "tiny-encoders" / "clip" / "config.json").exists():
            build_tiny_encoders(STATE / "tiny-encoders")
        _wait_until(lambda: _healthy(f"http://127.0.0.1:{port}/api/health"), "the Prefect server", 90)
        print(f"Prefect server on http://127.0.0.1:{port}, S3 server on {s3.endpoint}", flush=True)

        for pool in (GPU_POOL, CPU_POOL):
            _prefect(env, "work-pool", "create", pool, "--type", "process", "--overwrite")
        _prefect(env, "work-pool", "set-concurrency-limit", GPU_POOL, str(args.workers))
        from flows.deployments import deploy
        from product_studio.settings import Settings
        from product_studio.storage import Store

        settings = Settings()
        for name in deploy({"gpu": GPU_POOL, "cpu": CPU_POOL}, settings.schedule_cron):
            print(f"deployed {name}", flush=True)
        names = [f"sku-worker-{i + 1}" for i in range(args.workers)]
        for name in names:
            worker = [
                "worker",
                "start",
                "--pool",
                GPU_POOL,
                "--type",
                "process",
                "--name",
                name,
                "--limit",
                "1",
            ]
            procs.start(name, [sys.executable, "-m", "prefect", *worker], PRODUCT_STUDIO_WORKER_NAME=name)
        planner = ["worker", "start", "--pool", CPU_POOL, "--type", "process", "--name", "planner"]
        procs.start(
            "planner", [sys.executable, "-m", "prefect", *planner], PRODUCT_STUDIO_WORKER_NAME="planner"
        )
        print(f"workers: {', '.join(names)} on {GPU_POOL}; planner on {CPU_POOL}", flush=True)

        incoming, output = Store(settings.incoming), Store(settings.output)
        for store in (incoming, output, Store(settings.marketplace)):
            store.ensure_bucket()
        skus = upload_sample_catalogue(incoming, CATALOGUE, photos=3, size=256, copies=args.copies)
        print(
            f"uploaded {len(skus)} SKUs to {incoming.url(CATALOGUE)}/; running product-catalogue/catalogue",
            flush=True,
        )

        report, seconds = _run_catalogue()
        for entry in report["skus"]:
            print(
                f"{entry['status']:9} {entry['sku']:20} on {entry.get('worker') or '?':14} "
                f"{entry.get('seconds') or 0:6.1f} s  {entry.get('reason') or ''}",
                flush=True,
            )
        summary = _summary(report, seconds)
        runs = {sku: {k.split("/")[3] for k in output.list(f"{CATALOGUE}/{sku}/runs/")} for sku in skus}
        once = all(len(r) == 1 for r in runs.values())
        print(f"every SKU published exactly once: {'yes' if once else runs}", flush=True)
        if args.report:
            args.report.write_text(json.dumps(_details(output, report, summary), indent=2))
        if args.again:
            again, again_s = _run_catalogue()
            counts = {s: again[s] for s in ("published", "skipped", "failed")}
            print("again: " + json.dumps({**counts, "seconds": round(again_s, 1)}), flush=True)
    print(json.dumps(summary))
    return 0 if summary["published"] == summary["skus"] and once else 1


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        print("pool-demo: interrupted; everything it started is stopped", file=sys.stderr)
        sys.exit(130)
