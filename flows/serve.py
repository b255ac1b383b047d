"""``product-studio serve``: every deployment (``flows.deployments``) served by this one process.

For a single machine without work pools: runs start here, and a catalogue runs its SKUs here one by one
(no fan-out). For GPU workers use the work pools (``infra/prefect.yaml``, ``make pool-demo``).

The schedule needs a Prefect server's scheduler: with ``PREFECT_API_URL`` set, that server's; without it, a
local server started for as long as ``serve`` runs (``flows.prefect_server``).
"""

from __future__ import annotations

import os
from pathlib import Path

from prefect import serve
from prefect.flows import load_flow_from_entrypoint
from prefect.settings import PREFECT_API_URL, temporary_settings

from flows.deployments import DEPLOYMENTS, REPO
from flows.prefect_server import API_URL, check_reachable, local_server
from product_studio.settings import Settings


def deployments(settings: Settings | None = None) -> list:
    settings = settings or Settings()
    served = []
    for d in DEPLOYMENTS:
        flow = load_flow_from_entrypoint(str(REPO / d.entrypoint))
        cron = settings.schedule_cron if d.cron else None
        served.append(flow.to_deployment(name=d.name, cron=cron, description=d.description))
    return served


def _serve(settings: Settings) -> None:
    served = deployments(settings)
    names = ", ".join(f"{d.flow_name}/{d.name}" for d in served)
    print(f"Serving {names}; the scan runs on {settings.schedule_cron!r}. Ctrl-C stops it.", flush=True)
    serve(*served, print_starting_message=False)


def main() -> None:
    settings = Settings()  # a bad setting stops serve before any server starts
    if os.environ.get(API_URL):
        check_reachable(os.environ[API_URL])  # one line naming it, not an httpx traceback from serve
        _serve(settings)
        return
    home = Path(os.environ.get("PREFECT_HOME") or "~/.prefect").expanduser()
    print(f"No {API_URL} set: starting a local Prefect server (its scheduler fires the schedule)", flush=True)
    with local_server(home) as url:
        os.environ[API_URL] = url  # the flow runs serve starts inherit it
        print(f"Prefect server on {url.removesuffix('/api')} (UI too); it stops when serve stops", flush=True)
        with temporary_settings(updates={PREFECT_API_URL: url}):
            _serve(settings)
