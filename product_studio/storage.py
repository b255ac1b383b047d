"""Object storage over plain boto3: any S3-compatible endpoint, always SigV4, botocore's retries.

Endpoint and credentials come from boto3's standard sources (``AWS_ENDPOINT_URL``,
``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY``, profiles, instance roles).
"""

from __future__ import annotations

import os
import re
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

_BUCKET = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")


class StorageError(RuntimeError):
    """An object-store call failed; the message names the s3:// URL, never the endpoint.

    ``transient`` says whether trying again later can help (an outage, throttling, a 5xx).
    """

    transient = True


class ObjectNotFound(StorageError):
    """The object does not exist."""

    transient = False


class ObjectTooLarge(StorageError):
    """The object is larger than the caller accepts; nothing past the limit was read."""

    transient = False


class AccessDenied(StorageError):
    """Missing or wrong credentials, or no permission: an operator's to fix, never retried."""

    transient = False


class RequestRefused(StorageError):
    """The store refused the request as invalid (a 4xx other than 403/404): retrying cannot help."""

    transient = False


def is_transient(exc: BaseException | None) -> bool:
    """Worth retrying: a storage outage, not bad input, a missing object or a credentials problem."""
    return isinstance(exc, StorageError) and exc.transient


_DENIED = {
    "AccessDenied",
    "InvalidAccessKeyId",
    "SignatureDoesNotMatch",
    "ExpiredToken",
    "InvalidToken",
    "AllAccessDisabled",
    "403",
}
_THROTTLED = {"SlowDown", "Throttling", "ThrottlingException", "RequestTimeout", "RequestLimitExceeded"}


def _client_error(op: str, url: str, code: str, status: int, setting: str = "") -> StorageError:
    """The error class for an S3 error response (code and HTTP status)."""
    if code in {"NoSuchKey", "404", "NotFound"}:
        return ObjectNotFound(f"{url} does not exist")
    if code in _DENIED or status == 403:
        return AccessDenied(
            f"{op} on {url} was denied ({code}): check the credentials (AWS_ACCESS_KEY_ID/"
            "AWS_SECRET_ACCESS_KEY, profile or role) and that they may access this bucket"
        )
    if code == "NoSuchBucket":
        bucket = url.removeprefix("s3://").split("/", 1)[0]
        fix = f"set {setting} to an existing bucket" if setting else "check the s3:// setting that names it"
        return RequestRefused(f"{op} on {url} failed: bucket {bucket!r} does not exist; create it or {fix}")
    if status >= 500 or code in _THROTTLED:
        return StorageError(f"{op} on {url} failed: {code or status}")
    return RequestRefused(f"{op} on {url} was refused: {code or status}")


def _client_failure(op: str, url: str, exc: Exception, setting: str = "") -> StorageError:
    """A botocore exception (no HTTP response, or a broken one) as our error, without the endpoint URL."""
    from botocore.exceptions import ClientError, NoCredentialsError, PartialCredentialsError

    if isinstance(exc, ClientError):
        code = str(exc.response.get("Error", {}).get("Code", ""))
        status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0)
        return _client_error(op, url, code, status, setting)
    if isinstance(exc, NoCredentialsError | PartialCredentialsError):
        return AccessDenied(
            f"{op} on {url}: no usable credentials ({type(exc).__name__}); set AWS_* variables or a role"
        )
    # Connection refused or reset, timeouts, a truncated body: the store is unreachable for now. Its
    # message would name the endpoint, which must not reach seller-facing files.
    return StorageError(f"{op} on {url} failed: the object store could not be reached ({type(exc).__name__})")


@dataclass(frozen=True)
class Location:
    """A bucket and optional key prefix, parsed from ``s3://bucket/prefix``."""

    bucket: str
    prefix: str = ""

    @classmethod
    def parse(cls, url: str) -> Location:
        if not url.startswith("s3://"):
            raise ValueError(f"expected an s3://bucket[/prefix] URL, got {url!r}")
        bucket, _, prefix = url[len("s3://") :].partition("/")
        if not _BUCKET.match(bucket):
            raise ValueError(f"{bucket!r} in {url!r} is not a valid S3 bucket name")
        return cls(bucket, prefix.strip("/"))

    def key(self, *parts: str) -> str:
        return "/".join(p.strip("/") for p in (self.prefix, *parts) if p)

    def url(self, *parts: str) -> str:
        return f"s3://{self.bucket}/{self.key(*parts)}"


def make_s3_client() -> Any:
    """A boto3 S3 client: SigV4, standard retry mode, path-style addressing for custom endpoints."""
    import boto3
    from botocore.config import Config

    addressing = "path" if os.environ.get("AWS_ENDPOINT_URL") else "auto"
    config = Config(
        signature_version="s3v4",
        retries={"mode": "standard", "max_attempts": 5},
        s3={"addressing_style": addressing},
        connect_timeout=10,
        read_timeout=60,
    )
    return boto3.session.Session().client("s3", config=config)


# What decides which endpoint and credentials a client uses: a change (a test's own server) makes a new one.
_CLIENT_ENV = (
    "AWS_ENDPOINT_URL",
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_REGION",
    "AWS_DEFAULT_REGION",
    "AWS_PROFILE",
)
_clients: dict[tuple, Any] = {}
_clients_lock = threading.Lock()


def shared_s3_client() -> Any:
    """The process's S3 client for the current endpoint and credentials (boto3 clients are thread-safe).

    Making one costs ~80 ms and a new connection; an SKU run opens a store a dozen times.
    """
    key = (make_s3_client, *(os.environ.get(name) for name in _CLIENT_ENV))
    with _clients_lock:
        if key not in _clients:
            _clients[key] = make_s3_client()
        return _clients[key]


class _Writes:
    """``write``, for stores that implement ``write_tagged``."""

    def write(
        self,
        key: str,
        data: bytes,
        content_type: str = "application/octet-stream",
        *,
        if_absent: bool = False,
    ) -> bool:
        """Put an object. With ``if_absent`` it is a conditional write: False if the key already existed."""
        return self.write_tagged(key, data, content_type, if_absent=if_absent) is not None


def _condition_failed(exc: StorageError) -> bool:
    """412: the condition does not hold; 409: another conditional write is in flight (AWS). Not ours."""
    return "PreconditionFailed" in str(exc) or "ConditionalRequestConflict" in str(exc)


class Store(_Writes):
    """One bucket location; every key is relative to its prefix. ``setting`` names the variable the location
    came from, for errors an operator fixes there (a missing bucket)."""

    def __init__(self, url: str | Location, client: Any | None = None, setting: str = "") -> None:
        self.location = url if isinstance(url, Location) else Location.parse(url)
        self.client = client if client is not None else shared_s3_client()
        self.setting = setting

    def url(self, key: str = "") -> str:
        return self.location.url(key)

    def _call(self, op: str, key: str, **kwargs: Any) -> Any:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            return getattr(self.client, op)(Bucket=self.location.bucket, **kwargs)
        except (ClientError, BotoCoreError) as exc:
            raise _client_failure(op, self.url(key), exc, self.setting) from exc

    def read(self, key: str, max_bytes: int | None = None) -> bytes:
        """The object's bytes; with ``max_bytes``, at most that many are ever read (ObjectTooLarge past it).

        The limit bounds the read itself, so an object replaced by a larger one after a listing or a HEAD
        cannot slip through.
        """
        return self.read_tagged(key, max_bytes)[0]

    def read_tagged(self, key: str, max_bytes: int | None = None) -> tuple[bytes, str]:
        """:meth:`read`, and the tag (ETag) of exactly those bytes, for a later ``if_match``."""
        data, tag, _ = self.read_aged(key, max_bytes)
        return data, tag

    def read_aged(self, key: str, max_bytes: int | None = None) -> tuple[bytes, str, float | None]:
        """:meth:`read_tagged`, and the object's age in seconds by the store's own clock (the response's
        ``Date`` less the object's ``Last-Modified``, both to the second): no worker's clock enters it.
        None when the store sends no ``Date``."""
        from botocore.exceptions import BotoCoreError

        response = self._call("get_object", key, Key=self.location.key(key))
        body = response["Body"]
        size = int(response.get("ContentLength") or 0)
        try:
            if max_bytes is not None and size > max_bytes:
                raise ObjectTooLarge(f"{self.url(key)} is {size} bytes, over the {max_bytes}-byte limit")
            data = body.read() if max_bytes is None else body.read(max_bytes + 1)
            if max_bytes is not None and len(data) > max_bytes:
                raise ObjectTooLarge(f"{self.url(key)} is over the {max_bytes}-byte limit")
            return data, str(response.get("ETag", "")), _age(response)
        except (BotoCoreError, OSError) as exc:
            raise _client_failure("get_object", self.url(key), exc, self.setting) from exc
        finally:
            body.close()

    def exists(self, key: str) -> bool:
        try:
            self._call("head_object", key, Key=self.location.key(key))
        except ObjectNotFound:
            return False
        return True

    def write_tagged(
        self,
        key: str,
        data: bytes,
        content_type: str = "application/octet-stream",
        *,
        if_absent: bool = False,
        if_match: str | None = None,
    ) -> str | None:
        """Put an object and return its new tag (ETag); None when a condition failed: ``if_absent`` and the
        key exists, or ``if_match`` and the object is no longer the one with that tag."""
        extra = {"IfNoneMatch": "*"} if if_absent else {}
        if if_match is not None:
            extra["IfMatch"] = if_match
        try:
            response = self._call(
                "put_object", key, Key=self.location.key(key), Body=data, ContentType=content_type, **extra
            )
        except StorageError as exc:
            if extra and _condition_failed(exc):
                return None
            raise
        return str(response.get("ETag", ""))

    def delete(self, key: str, if_match: str | None = None) -> bool:
        """Remove an object (a no-op when it does not exist, as in S3 itself). With ``if_match``, only the
        object with that tag: False when it has changed since."""
        extra = {"IfMatch": if_match} if if_match is not None else {}
        try:
            self._call("delete_object", key, Key=self.location.key(key), **extra)
        except ObjectNotFound:
            return True
        except StorageError as exc:
            if extra and _condition_failed(exc):
                return False
            raise
        return True

    def list(self, prefix: str = "") -> list[str]:
        """Keys under ``prefix``, relative to this location, sorted."""
        return sorted(self.versions(prefix))

    def versions(self, prefix: str = "") -> dict[str, str]:
        """Key -> version tag (ETag and size) under ``prefix``: what changed, from listings alone."""
        return {key: f"{obj.get('ETag', '')}:{obj.get('Size', 0)}" for key, obj in self._listed(prefix)}

    def modified(self, prefix: str = "") -> dict[str, float]:
        """Key -> when the store last wrote it (epoch seconds, the store's clock) under ``prefix``."""
        return {key: obj["LastModified"].timestamp() for key, obj in self._listed(prefix)}

    def _listed(self, prefix: str) -> list[tuple[str, dict]]:
        """(key relative to this location, listing entry) for every object under ``prefix``."""
        base = self.location.key(prefix)
        if base and (prefix.endswith("/") or not prefix):
            base += "/"  # under s3://b/out, never list s3://b/out-old/...
        from botocore.exceptions import BotoCoreError, ClientError

        strip = len(self.location.prefix) + 1 if self.location.prefix else 0
        found = []
        paginator = self.client.get_paginator("list_objects_v2")
        try:
            for page in paginator.paginate(Bucket=self.location.bucket, Prefix=base):
                found += [(obj["Key"][strip:], obj) for obj in page.get("Contents", [])]
        except (ClientError, BotoCoreError) as exc:
            raise _client_failure("list_objects_v2", self.url(prefix), exc, self.setting) from exc
        return found

    def presigned_url(self, key: str, seconds: int) -> str:
        """A URL that reads the object without credentials until it expires (``seconds``, at most 7 days)."""
        return self.client.generate_presigned_url(
            "get_object",
            Params={"Bucket": self.location.bucket, "Key": self.location.key(key)},
            ExpiresIn=seconds,
        )

    def presigned_put_url(self, key: str, seconds: int, content_type: str) -> str:
        """A URL that writes this one object, with this content type only, without credentials until it
        expires: the signature covers the bucket, the key and the content type, so no other object can be
        written with it."""
        return self.client.generate_presigned_url(
            "put_object",
            Params={
                "Bucket": self.location.bucket,
                "Key": self.location.key(key),
                "ContentType": content_type,
            },
            ExpiresIn=seconds,
        )

    def cors_rules(self) -> list[dict]:
        """The bucket's CORS rules (botocore's shape); none when it has no CORS configuration."""
        from botocore.exceptions import ClientError

        try:
            return self.client.get_bucket_cors(Bucket=self.location.bucket)["CORSRules"]
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") == "NoSuchCORSConfiguration":
                return []
            raise _client_failure("get_bucket_cors", self.url(), exc, self.setting) from exc

    def set_cors_rules(self, rules: list[dict]) -> None:
        """Replace the bucket's CORS rules (all of them: pass the ones to keep)."""
        self._call("put_bucket_cors", "", CORSConfiguration={"CORSRules": rules})

    def check_bucket(self) -> None:
        """Raise the StorageError of a bucket that is missing or cannot be read (one small listing)."""
        self._call("list_objects_v2", "", Prefix=self.location.prefix, MaxKeys=1)

    def ensure_bucket(self) -> None:
        """Create the bucket if it is missing (for local servers and the demo; not needed on AWS)."""
        from botocore.exceptions import ClientError

        try:
            self.client.head_bucket(Bucket=self.location.bucket)
        except ClientError:
            self.client.create_bucket(Bucket=self.location.bucket)


def _age(response: dict[str, Any]) -> float | None:
    """Seconds between an object's ``Last-Modified`` and the response's ``Date`` (the store's clock)."""
    from email.utils import parsedate_to_datetime

    date = response.get("ResponseMetadata", {}).get("HTTPHeaders", {}).get("date")
    modified = response.get("LastModified")
    if not date or modified is None:
        return None
    try:
        return (parsedate_to_datetime(date) - modified).total_seconds()
    except (TypeError, ValueError):
        return None


class ObjectStore(Protocol):
    """What the caches (class priors, checkpoints) need: a :class:`Store` or a :class:`LocalStore`."""

    def url(self, key: str = "") -> str: ...
    def read(self, key: str, max_bytes: int | None = None) -> bytes: ...
    def exists(self, key: str) -> bool: ...
    def write(self, key: str, data: bytes, content_type: str = ..., *, if_absent: bool = False) -> bool: ...
    def write_tagged(
        self,
        key: str,
        data: bytes,
        content_type: str = ...,
        *,
        if_absent: bool = ...,
        if_match: str | None = ...,
    ) -> str | None: ...
    def read_tagged(self, key: str, max_bytes: int | None = None) -> tuple[bytes, str]: ...
    def read_aged(self, key: str, max_bytes: int | None = None) -> tuple[bytes, str, float | None]: ...
    def delete(self, key: str, if_match: str | None = None) -> bool: ...
    def list(self, prefix: str = "") -> list[str]: ...


_local_lock = threading.Lock()


def _sha(data: bytes) -> str:
    import hashlib

    return hashlib.sha256(data).hexdigest()


class LocalStore(_Writes):
    """A folder with the subset of :class:`Store` that caches use (priors, checkpoints).

    Lets the same content-addressed caches work for ``product-studio train`` on a laptop without S3.
    Conditional writes are exclusive file creation, so concurrent writers never overwrite each other.
    """

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root).expanduser()

    def url(self, key: str = "") -> str:
        return str(self.root / key)

    def _path(self, key: str) -> Path:
        path = (self.root / key).resolve()
        if self.root.resolve() not in path.parents and path != self.root.resolve():
            raise StorageError(f"key {key!r} escapes the folder {self.root}")
        return path

    def read(self, key: str, max_bytes: int | None = None) -> bytes:
        path = self._path(key)
        if not path.is_file():
            raise ObjectNotFound(f"{path} does not exist")
        if max_bytes is not None and path.stat().st_size > max_bytes:
            raise ObjectTooLarge(f"{path} is {path.stat().st_size} bytes, over the {max_bytes}-byte limit")
        return path.read_bytes()

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    def write_tagged(
        self,
        key: str,
        data: bytes,
        content_type: str = "application/octet-stream",
        *,
        if_absent: bool = False,
        if_match: str | None = None,
    ) -> str | None:
        """As :meth:`Store.write_tagged`; the tag is the content's sha256 (conditions hold within a process
        and, for ``if_absent``, across processes: the file appears whole or not at all)."""
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
        tmp.write_bytes(data)
        with _local_lock:
            try:
                if if_match is not None and self._tag(path) != if_match:
                    return None
                if if_absent:
                    try:
                        os.link(tmp, path)  # atomic, and fails when the key exists
                    except FileExistsError:
                        return None
                else:
                    tmp.replace(path)  # readers never see a half-written file
            finally:
                tmp.unlink(missing_ok=True)
        return _sha(data)

    @staticmethod
    def _tag(path: Path) -> str | None:
        return _sha(path.read_bytes()) if path.is_file() else None

    def read_tagged(self, key: str, max_bytes: int | None = None) -> tuple[bytes, str]:
        data = self.read(key, max_bytes)
        return data, _sha(data)

    def read_aged(self, key: str, max_bytes: int | None = None) -> tuple[bytes, str, float | None]:
        """:meth:`read_tagged` and the file's age (one machine: its own clock is the store's)."""
        data, tag = self.read_tagged(key, max_bytes)
        return data, tag, time.time() - self._path(key).stat().st_mtime

    def delete(self, key: str, if_match: str | None = None) -> bool:
        path = self._path(key)
        with _local_lock:
            if if_match is not None and self._tag(path) not in (None, if_match):
                return False
            path.unlink(missing_ok=True)
        return True

    def list(self, prefix: str = "") -> list[str]:
        if not self.root.is_dir():
            return []
        keys = (p.relative_to(self.root).as_posix() for p in self.root.rglob("*") if p.is_file())
        return sorted(k for k in keys if k.startswith(prefix) and not k.rsplit("/", 1)[-1].startswith("."))


_TYPES = {
    ".png": "image/png",
    ".jpg": "image/jpeg",
    ".jpeg": "image/jpeg",
    ".webp": "image/webp",
    ".json": "application/json",
    ".html": "text/html; charset=utf-8",
    ".safetensors": "application/octet-stream",
    ".yaml": "application/yaml",
}


def guess_content_type(path: str | Path) -> str:
    return _TYPES.get(Path(path).suffix.lower(), "application/octet-stream")
