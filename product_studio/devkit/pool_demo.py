"""``make pool-demo``: the distributed path, for real, on this machine.

Starts a private S3 server and a Prefect server on 127.0.0.1, two ``process`` work pools (``demo-gpu``: two
SKU workers, one run each at a time; ``demo-cpu``: one worker for the runs that plan and wait), deploys the
project's deployments to them (``product-studio deployments --deploy``), uploads a sample catalogue, runs the
``product-catalogue/catalogue`` deployment (``prefect deployment run --watch``) and waits: the catalogue run
starts one ``product-sku-batch/batch`` run per SKU worker (the pool's concurrency limit), each loading the
models once and taking SKUs until none is left. Prints which worker ran each SKU and the seconds it spent
loading models; the last line is a JSON object
``{"skus": N, "published": N, "workers": {"<worker>": ["<sku>", ...]}, "seconds": S}``. Everything it
started is stopped on the way out, also on Ctrl-C or failure. On Kubernetes the same deployments run from
``infra/prefect.yaml`` (docs/scale-out.md, *From make demo to a Kubernetes GPU pool*). Like a user, it
drives the flows only through the ``product-studio`` and ``prefect`` commands: the library never
imports Prefect.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path

from product_studio.devkit.processes import MARK, Processes, free_port, healthy, prefect, wait_until
from product_studio.layout import RUNS, sku_key

STATE = Path.cwd() / ".pool-demo"  # the tiny models, kept between runs
CATALOGUE = "pool-demo"
GPU_POOL, CPU_POOL = "demo-gpu", "demo-cpu"

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
    # Several processes share this machine's few cores. OpenMP threads that spin while they wait (the
    # default) starve the other processes: a batch run's second SKU then trained at 400-700 ms a step
    # instead of 20 (two batch runs on 2 cores, one thread each; PASSIVE: 20-30 ms).
    "OMP_WAIT_POLICY": "PASSIVE",
}


def _cli(*args: str) -> list[str]:
    """The ``product-studio`` command, as this interpreter runs it."""
    return [sys.executable, "-m", "flows.cli", *args]


def _run_catalogue(env: dict[str, str], output, force: bool = False) -> tuple[dict, float]:
    started = time.perf_counter()
    params = json.dumps({"catalogue_id": CATALOGUE, "force": force})
    run = ["deployment", "run", "product-catalogue/catalogue", "--params", params, "--watch"]
    done = subprocess.run(
        [sys.executable, "-m", "prefect", *run, "--watch-timeout", "1800"], env=env, capture_output=True
    )
    if done.returncode:
        raise RuntimeError(f"the catalogue run did not complete: {done.stdout.decode()[-2000:]}")
    report = json.loads(output.read(f"{CATALOGUE}/catalogue-report.json"))
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
    from product_studio.manifest import read_published

    skus, classes = [], set()
    for entry in report["skus"]:
        manifest = read_published(output, CATALOGUE, entry["sku"])
        timings = manifest.timings_s if manifest else {}
        classes.add(manifest.class_noun if manifest else entry["sku"])
        fields = ("sku", "worker", "seconds", "model_load_s", "status")
        training = (
            manifest.lora.training.timings_s if manifest and manifest.lora else {}
        )  # the trainer's own: ms per step
        skus.append({**{k: entry.get(k) for k in fields}, "timings_s": timings, "training_s": training})
    # A class's first SKU generates its class images; every later SKU of the class reads them from the cache.
    hit_rate = round(1 - len(classes) / max(1, len(skus)), 3)
    return {"summary": summary, "skus": skus, "prior_cache_hit_rate": hit_rate}


def _start_servers(stack: ExitStack, tmp: Path, threads: int | None) -> tuple[dict[str, str], Processes]:
    """The S3 and Prefect servers, the tiny models; the environment every process of the demo shares."""
    from product_studio.devkit.local_s3 import LocalS3
    from product_studio.devkit.tiny_models import build_tiny_encoders, build_tiny_model

    port = free_port()
    env = {
        **os.environ,
        **SETTINGS,
        "PREFECT_HOME": str(tmp / "prefect"),
        "PREFECT_API_URL": f"http://127.0.0.1:{port}/api",
        "PRODUCT_STUDIO_WORK_DIR": str(tmp / "work"),
        MARK: secrets.token_hex(8),
    }
    if threads:
        env |= {"OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    s3 = stack.enter_context(LocalS3(tmp / "s3"))
    env |= s3.env()
    os.environ.update(env)  # this process reads the same buckets
    procs = Processes(tmp, env)
    stack.callback(procs.stop)
    server = ["server", "start", "--host", "127.0.0.1", "--port", str(port)]
    procs.start("prefect-server", [sys.executable, "-m", "prefect", *server])
    if not (STATE / "tiny-sd" / "model_index.json").exists():
        build_tiny_model(STATE / "tiny-sd")
    if not (STATE / "tiny-encoders" / "clip" / "config.json").exists():
        build_tiny_encoders(STATE / "tiny-encoders")
    wait_until(lambda: healthy(f"http://127.0.0.1:{port}/api/health"), "the Prefect server", 90)
    print(f"Prefect server on http://127.0.0.1:{port}, S3 server on {s3.endpoint}", flush=True)
    return env, procs


def _start_workers(env: dict[str, str], procs: Processes, workers: int) -> list[str]:
    """The two pools, the deployments on them, ``workers`` SKU workers and one planner."""
    for pool in (GPU_POOL, CPU_POOL):
        prefect(env, "work-pool", "create", pool, "--type", "process", "--overwrite")
    prefect(env, "work-pool", "set-concurrency-limit", GPU_POOL, str(workers))
    deployed = _cli("deployments", "--deploy", "--gpu-pool", GPU_POOL, "--cpu-pool", CPU_POOL)
    print(subprocess.run(deployed, env=env, check=True, capture_output=True, text=True).stdout, end="")
    names = [f"sku-worker-{i + 1}" for i in range(workers)]
    for name in names:
        worker = ["worker", "start", "--pool", GPU_POOL, "--type", "process", "--name", name, "--limit", "1"]
        procs.start(name, [sys.executable, "-m", "prefect", *worker], PRODUCT_STUDIO_WORKER_NAME=name)
    planner = ["worker", "start", "--pool", CPU_POOL, "--type", "process", "--name", "planner"]
    procs.start("planner", [sys.executable, "-m", "prefect", *planner], PRODUCT_STUDIO_WORKER_NAME="planner")
    print(f"workers: {', '.join(names)} on {GPU_POOL}; planner on {CPU_POOL}", flush=True)
    return names


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="pool-demo", description=__doc__.split("\n\n")[0])
    parser.add_argument("--copies", type=int, default=2, help="variants of each of the 3 sample products")
    parser.add_argument("--workers", type=int, default=2, help="SKU workers on the demo GPU pool")
    parser.add_argument("--again", action="store_true", help="then run the catalogue again (all skipped)")
    parser.add_argument(
        "--report", type=Path, help="also write each SKU's outcome and stage timings (model_load_s too) here"
    )
    parser.add_argument(
        "--threads", type=int, help="CPU threads per SKU run (OMP_NUM_THREADS); default: torch's"
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    signal.signal(signal.SIGTERM, signal.default_int_handler)  # a TERM unwinds like Ctrl-C: all stopped
    with ExitStack() as stack:
        tmp = Path(tempfile.mkdtemp(prefix="pool-demo-"))
        stack.callback(shutil.rmtree, tmp, ignore_errors=True)
        env, procs = _start_servers(stack, tmp, args.threads)
        _start_workers(env, procs, args.workers)
        from product_studio.devkit.samples import upload_sample_catalogue
        from product_studio.settings import Settings

        settings = Settings()
        incoming, output = settings.store("incoming"), settings.store("output")
        for store in (incoming, output, settings.store("marketplace")):
            store.ensure_bucket()
        skus = upload_sample_catalogue(incoming, CATALOGUE, photos=3, size=256, copies=args.copies)
        print(f"uploaded {len(skus)} SKUs to {incoming.url(CATALOGUE)}/; running product-catalogue/catalogue")
        report, seconds = _run_catalogue(env, output)
        for e in report["skus"]:
            print(
                f"{e['status']:9} {e['sku']:20} on {e.get('worker') or '?':14} "
                f"{e.get('seconds') or 0:6.1f} s (load {e.get('model_load_s') or 0:4.1f} s)  "
                f"{e.get('reason') or ''}",
                flush=True,
            )
        summary = _summary(report, seconds)
        listed = {sku: output.list(sku_key(CATALOGUE, sku, f"{RUNS}/")) for sku in skus}
        runs = {sku: {k.split("/")[3] for k in keys} for sku, keys in listed.items()}
        once = all(len(r) == 1 for r in runs.values())
        print(f"every SKU published exactly once: {'yes' if once else runs}", flush=True)
        if args.report:
            args.report.write_text(json.dumps(_details(output, report, summary), indent=2))
        if args.again:
            again, again_s = _run_catalogue(env, output)
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
