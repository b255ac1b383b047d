"""The deployments, defined once: ``infra/prefect.yaml`` is generated from here (``product-studio
deployments --write``), ``make pool-demo`` deploys them to local process pools, ``product-studio serve``
serves them in one process.

Two pools: ``gpu`` runs the work that needs a GPU (a batch of SKUs, one SKU, a retry); ``cpu`` runs the runs
that plan and wait (the scan, a catalogue, publishing approvals), so a waiting catalogue never holds a GPU or
a GPU slot. Each deployment's ``env`` wires the fan-out: a catalogue run starts ``product-sku-batch/batch``
runs (one per GPU slot; each runs SKUs as ``product-sku`` subflows, models loaded once), the scan starts
``product-catalogue/catalogue`` runs, publish-approved starts ``product-retry/retry`` runs.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

REPO = Path(__file__).resolve().parents[1]
SKU_DEPLOYMENT = "product-sku/sku"
BATCH_DEPLOYMENT = "product-sku-batch/batch"
CATALOGUE_DEPLOYMENT = "product-catalogue/catalogue"
RETRY_DEPLOYMENT = "product-retry/retry"
SCHEDULE = "schedule"  # stands for settings.schedule_cron


@dataclass(frozen=True)
class Deployment:
    """One deployment: the flow's entrypoint, its name, its pool and what its runs need."""

    entrypoint: str
    name: str
    pool: Literal["gpu", "cpu"]
    description: str
    cron: str | None = None
    concurrency: int | None = None
    env: dict[str, str] = field(default_factory=dict)
    parameters: dict[str, Any] = field(default_factory=dict)


DEPLOYMENTS = [
    Deployment(
        "flows/catalogue.py:new_catalogues_flow",
        "scheduled",
        "cpu",
        "starts a catalogue run for each ready catalogue that is new or changed",
        cron=SCHEDULE,
        concurrency=1,
        env={"PRODUCT_STUDIO_CATALOGUE_DEPLOYMENT": CATALOGUE_DEPLOYMENT},
    ),
    Deployment(
        "flows/catalogue.py:catalogue_flow",
        "catalogue",
        "cpu",
        "plans a catalogue, starts one product-sku-batch/batch run per GPU slot, writes the report",
        env={"PRODUCT_STUDIO_BATCH_DEPLOYMENT": BATCH_DEPLOYMENT},
    ),
    Deployment(
        "flows/batch.py:sku_batch_flow",
        "batch",
        "gpu",
        "one GPU slot: models loaded once, then a catalogue's SKUs one at a time until none is left",
    ),
    Deployment("flows/sku.py:sku_flow", "sku", "gpu", "one SKU on one GPU: photos to published cards"),
    Deployment("flows/retry.py:retry_flow", "retry", "gpu", "re-renders scene cards a seller sent back"),
    Deployment(
        "flows/publish_approved.py:publish_approved_flow",
        "scheduled",
        "cpu",
        "publishes approved cards of every SKU whose decisions changed",
        cron=SCHEDULE,
        concurrency=1,
        env={"PRODUCT_STUDIO_RETRY_DEPLOYMENT": RETRY_DEPLOYMENT},
    ),
    Deployment(
        "flows/publish_approved.py:publish_approved_flow",
        "catalogue",
        "cpu",
        "publishes approved cards of one catalogue (parameter catalogue_id)",
        env={"PRODUCT_STUDIO_RETRY_DEPLOYMENT": RETRY_DEPLOYMENT},
    ),
]


def _cron(d: Deployment, schedule_cron: str) -> str | None:
    return schedule_cron if d.cron == SCHEDULE else d.cron


def deploy(
    pools: dict[str, str], schedule_cron: str, env: dict[str, str] | None = None, source: Path = REPO
) -> list[str]:
    """Create or update every deployment on work pools (``{"gpu": ..., "cpu": ...}``), code from ``source``
    (a folder every worker can read); ``env`` is added to each deployment's own. Returns their names."""
    from prefect import Flow

    names = []
    for d in DEPLOYMENTS:
        flow = Flow.from_source(source=str(source), entrypoint=d.entrypoint)
        flow.deploy(
            d.name,
            work_pool_name=pools[d.pool],
            build=False,
            push=False,
            job_variables={"env": {**(env or {}), **d.env}},
            cron=_cron(d, schedule_cron),
            concurrency_limit=d.concurrency,
            description=d.description,
            tags=["product-studio"],
            print_next_steps=False,
            ignore_warnings=True,  # "a process pool runs code from a local path": the local demo's point
        )
        names.append(f"{flow.name}/{d.name}")
    return names


def prefect_yaml(schedule_cron: str) -> str:
    """``infra/prefect.yaml``: the same deployments for Kubernetes pools (``gpu-pool``, ``cpu-pool``)."""
    deployments = []
    for d in DEPLOYMENTS:
        entry: dict[str, Any] = {
            "name": d.name,
            "entrypoint": d.entrypoint,
            "description": d.description,
            "tags": ["product-studio"],
            "work_pool": {
                "name": f"{d.pool}-pool",
                "job_variables": {
                    "image": "{{ $PRODUCT_STUDIO_IMAGE }}",
                    "env": {**_POOL_ENV[d.pool], **d.env},
                },
            },
        }
        if d.pool == "cpu" and "publish_approved" in d.entrypoint:
            entry["work_pool"]["job_variables"]["service_account_name"] = "product-studio-publisher"
        if (cron := _cron(d, schedule_cron)) is not None:
            entry["schedules"] = [{"cron": cron}]
        if d.concurrency is not None:
            entry["concurrency_limit"] = d.concurrency
        deployments.append(entry)
    body = {
        "name": "product-studio",
        "prefect-version": "3.9.1",
        "build": None,
        "push": None,
        "pull": [{"prefect.deployments.steps.set_working_directory": {"directory": "/opt/product-studio"}}],
        "deployments": deployments,
    }
    return _YAML_HEAD + yaml.safe_dump(body, sort_keys=False, width=110)


_COMMON_ENV = {
    "PRODUCT_STUDIO_INCOMING": "{{ $PRODUCT_STUDIO_INCOMING }}",
    "PRODUCT_STUDIO_OUTPUT": "{{ $PRODUCT_STUDIO_OUTPUT }}",
    "PRODUCT_STUDIO_MARKETPLACE": "{{ $PRODUCT_STUDIO_MARKETPLACE }}",
    # The catalogue run chooses identifiers with the base model's tokenizer: the same model everywhere.
    "PRODUCT_STUDIO_BASE_MODEL": "black-forest-labs/FLUX.2-klein-base-4B",
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "DO_NOT_TRACK": "1",
}
_POOL_ENV = {
    "gpu": {
        **_COMMON_ENV,
        "PRODUCT_STUDIO_DEVICE": "cuda",
        "PRODUCT_STUDIO_DTYPE": "auto",  # bfloat16 on GPUs that have it (klein overflows in float16)
        "PRODUCT_STUDIO_CLEANER": "rembg:birefnet-general",
    },
    "cpu": {**_COMMON_ENV, "PRODUCT_STUDIO_DEVICE": "cpu"},
}
_YAML_HEAD = """\
# GENERATED by `product-studio deployments --write infra/prefect.yaml` from flows/deployments.py:
# edit that file, not this one (a test checks they agree).
#   prefect work-pool create gpu-pool --type kubernetes --base-job-template infra/k8s-work-pool.json
#   prefect work-pool create cpu-pool --type kubernetes
#   prefect deploy --all --prefect-file infra/prefect.yaml
"""
