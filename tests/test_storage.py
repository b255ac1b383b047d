import boto3
import pytest
from botocore.config import Config

from product_studio.storage import Location, ObjectNotFound, StorageError, Store, is_transient


def test_location_parse():
    assert Location.parse("s3://bucket/a/b/") == Location("bucket", "a/b")
    assert Location.parse("s3://bucket").url("x/y.json") == "s3://bucket/x/y.json"
    assert Location.parse("s3://bucket/pre").key("k") == "pre/k"
    with pytest.raises(ValueError, match="s3://bucket"):
        Location.parse("/local/path")
    with pytest.raises(ValueError, match="'Bad_Bucket'"):
        Location.parse("s3://Bad_Bucket/x")


def test_read_write_list_under_prefix(buckets):
    incoming, _ = buckets
    store = Store(incoming.location.url("some/prefix"))
    store.write("a/1.txt", b"one", "text/plain")
    store.write("a/2.txt", b"two")
    store.write("b.txt", b"three")
    assert store.list() == ["a/1.txt", "a/2.txt", "b.txt"]
    assert store.list("a/") == ["a/1.txt", "a/2.txt"]
    assert incoming.list() == ["some/prefix/a/1.txt", "some/prefix/a/2.txt", "some/prefix/b.txt"]
    assert store.read("a/2.txt") == b"two"
    assert store.exists("b.txt") and not store.exists("c.txt")
    with pytest.raises(ObjectNotFound, match=r"s3://incoming-\w+/some/prefix/missing"):
        store.read("missing")
    with pytest.raises(StorageError, match="over the 2-byte limit"):
        store.read("a/1.txt", max_bytes=2)


def test_conditional_write_never_overwrites(buckets):
    store, _ = buckets
    assert store.write("k", b"first", if_absent=True) is True
    assert store.write("k", b"second", if_absent=True) is False
    assert store.read("k") == b"first"


def test_wrong_credentials_are_refused(buckets, s3_env):
    store, _ = buckets
    store.write("secret", b"x")
    client = boto3.client(
        "s3",
        endpoint_url=s3_env.endpoint,
        aws_access_key_id=s3_env.access_key,
        aws_secret_access_key="not-the-secret",
        region_name="us-east-1",
        config=Config(signature_version="s3v4", retries={"mode": "standard", "max_attempts": 1}),
    )
    with pytest.raises(StorageError, match="SignatureDoesNotMatch"):
        Store(store.location, client=client).read("secret")


def test_local_store_has_the_cache_semantics_of_the_bucket(tmp_path):
    from product_studio.storage import LocalStore, ObjectNotFound, StorageError

    store = LocalStore(tmp_path / "cache")
    assert store.list() == [] and not store.exists("a/b.png")
    assert store.write("a/b.png", b"first", if_absent=True)
    assert not store.write(
        "a/b.png", b"second", if_absent=True
    )  # the first writer wins, as with If-None-Match
    assert store.read("a/b.png") == b"first"
    store.write("a/b.png", b"third")
    assert store.read("a/b.png") == b"third" and store.list("a/") == ["a/b.png"]
    store.delete("a/b.png")
    store.delete("a/b.png")  # a no-op, as in S3
    with pytest.raises(ObjectNotFound):
        store.read("a/b.png")
    with pytest.raises(StorageError, match="escapes the folder"):
        store.write("../outside.txt", b"x")


def test_only_storage_outages_are_retried():
    from product_studio.ingest import IngestError

    assert is_transient(StorageError("put_object on s3://b/k failed: SlowDown"))
    assert not is_transient(ObjectNotFound("s3://b/k does not exist"))
    assert not is_transient(IngestError("SKU 'x': product.json is invalid"))


def test_a_prefix_never_lists_its_siblings(buckets):
    _, output = buckets
    output.write("out/cat/catalogue.json", b"{}")
    output.write("out-old/cat2/catalogue.json", b"{}")  # a sibling prefix that merely starts the same
    under = Store(output.url("out"))
    assert under.list() == ["cat/catalogue.json"]
    assert under.list("cat/") == ["cat/catalogue.json"]


def test_a_lease_is_exclusive_expires_and_is_renewed_only_when_due(buckets):
    import json

    from product_studio import leases

    _, output = buckets
    first = leases.try_acquire(output, "c/s/lease.json", "worker-a", seconds=120)
    assert isinstance(first, leases.Lease)
    second = leases.try_acquire(output, "c/s/lease.json", "worker-b", seconds=120)
    assert second["owner"] == "worker-a"  # held: the other run is told by whom, until when
    body = output.read("c/s/lease.json")
    first.renew_if_due()  # just taken: nothing to renew
    assert output.read("c/s/lease.json") == body
    first.expires = "2000-01-01T00:00:00+00:00"  # as if it had run for long
    first.renew_if_due()
    assert json.loads(output.read("c/s/lease.json"))["expires"] > "2026"
    past = {**json.loads(body), "seconds": 0}  # past its seconds by the store's clock
    output.write("c/s/lease.json", json.dumps(past).encode())
    taken = leases.try_acquire(output, "c/s/lease.json", "worker-b", seconds=120)  # a crashed holder's
    assert isinstance(taken, leases.Lease) and taken.owner == "worker-b"
    with pytest.raises(leases.LeaseLost):
        first.renew()  # the old holder learns it lost the lease
    first.release()  # and releasing it leaves the new holder's lease alone
    assert json.loads(output.read("c/s/lease.json"))["owner"] == "worker-b"
    taken.release()
    assert not output.exists("c/s/lease.json")


@pytest.mark.parametrize("kind", ["s3", "folder"])
def test_a_worker_with_a_fast_clock_does_not_take_a_fresh_lease(kind, buckets, tmp_path, monkeypatch):
    import time
    from datetime import UTC, datetime, timedelta

    from product_studio import leases
    from product_studio.storage import LocalStore

    store = buckets[1] if kind == "s3" else LocalStore(tmp_path / "cache")
    first = leases.try_acquire(store, "k/lease.json", "worker-a", seconds=600)
    assert isinstance(first, leases.Lease)

    class FastClock(datetime):  # worker B's clock runs 11 minutes ahead
        @classmethod
        def now(cls, tz=None):
            return datetime.now(tz) + timedelta(minutes=11)

    monkeypatch.setattr(leases, "datetime", FastClock)
    held = leases.try_acquire(store, "k/lease.json", "worker-b", seconds=600)
    assert isinstance(held, dict) and held["owner"] == "worker-a" and not held["expired"]
    short = leases.try_acquire(store, "k/short.json", "worker-b", seconds=1)
    assert isinstance(short, leases.Lease)
    time.sleep(2.2)  # past its second by the store's clock: a crashed holder's lease is taken over
    monkeypatch.setattr(leases, "datetime", datetime)
    taken = leases.try_acquire(store, "k/short.json", "worker-c", seconds=60)
    assert isinstance(taken, leases.Lease) and taken.owner == "worker-c"
    assert datetime.fromisoformat(taken.expires) > datetime.now(UTC)


@pytest.mark.parametrize("kind", ["s3", "folder"])
def test_a_lease_taken_over_by_one_worker_is_not_deleted_by_another(kind, buckets, tmp_path):
    import json

    from product_studio import leases
    from product_studio.storage import LocalStore

    store = buckets[1] if kind == "s3" else LocalStore(tmp_path / "cache")
    crashed = {"owner": "dead", "token": "x", "expires": "2000-01-01T00:00:00+00:00"}
    assert store.write("k/lease.json", json.dumps(crashed).encode(), if_absent=True)
    _, expired_tag = store.read_tagged("k/lease.json")  # both A and B read the expired lease
    a = leases.try_acquire(store, "k/lease.json", "worker-a", seconds=60)  # A takes it over first
    assert isinstance(a, leases.Lease)
    assert store.delete("k/lease.json", if_match=expired_tag) is False  # B's takeover deletes nothing
    b = leases.try_acquire(store, "k/lease.json", "worker-b", seconds=60)
    assert b["owner"] == "worker-a"
    a.renew()
    a.release()
    assert not store.exists("k/lease.json")


def test_a_missing_bucket_names_the_setting_to_fix(s3_env, monkeypatch, capsys):
    from flows.cli import main
    from product_studio.settings import Settings
    from product_studio.storage import RequestRefused

    monkeypatch.setenv("PRODUCT_STUDIO_MARKETPLACE", "s3://no-such-shop/live")
    with pytest.raises(RequestRefused, match="bucket 'no-such-shop' does not exist; create it or set "
                       "PRODUCT_STUDIO_MARKETPLACE to an existing bucket"):  # fmt: skip
        Settings().store("marketplace").read("listing.json")
    monkeypatch.setenv("PRODUCT_STUDIO_OUTPUT", "s3://no-such-results")
    assert main(["review", "cat-1", "sku-1"]) == 2
    err = capsys.readouterr().err
    assert "product-studio review: error:" in err and "set PRODUCT_STUDIO_OUTPUT to" in err, err


def test_a_kept_lease_is_renewed_in_the_background_until_the_block_ends(buckets):
    import time

    from product_studio import leases

    _, output = buckets
    lease = leases.try_acquire(output, "cat/catalogue-lease.json", "me", 60)
    first = lease.tag
    with leases.kept(lease, every=0.2):
        deadline = time.monotonic() + 30
        while lease.tag == first and time.monotonic() < deadline:
            time.sleep(0.1)
        assert lease.tag != first and not lease.lost  # renewed: a new object
    tag = lease.tag
    time.sleep(0.5)
    assert lease.tag == tag  # no renewal after the block
    output.delete("cat/catalogue-lease.json")
    rival = leases.try_acquire(output, "cat/catalogue-lease.json", "rival", 60)
    with leases.kept(lease, every=0.2):
        deadline = time.monotonic() + 30
        while not lease.lost and time.monotonic() < deadline:
            time.sleep(0.1)
    assert lease.lost and leases.read_lease(output, "cat/catalogue-lease.json")["owner"] == "rival"
    rival.release()
