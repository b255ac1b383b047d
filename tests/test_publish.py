import json

from product_studio import publish
from product_studio.manifest import Manifest
from product_studio.records import PhotoProblem, SkuOutcome


def test_manifest_is_written_last(buckets, tmp_path, make_manifest):
    _, output = buckets
    puts: list[str] = []
    output.client.meta.events.register(
        "provide-client-params.s3.PutObject", lambda params, **_: puts.append(params["Key"])
    )
    files = {}
    for name in ("runs/r1/cards/a.jpg", "runs/r1/lora/pytorch_lora_weights.safetensors"):
        path = tmp_path / name.replace("/", "_")
        path.write_bytes(name.encode())
        files[name] = path
    url = publish.publish_sku(output, make_manifest("sku1"), files)
    assert url == output.url("cat/sku1/manifest.json")
    # The run's two files and review page, then the manifest; then the SKU's review page for sellers and
    # what pages shared earlier read of it.
    last = ["cat/sku1/manifest.json", "cat/sku1/review/index.html", "cat/sku1/review/status.json"]
    assert puts[-3:] == last
    assert len(puts) == 6
    manifest = json.loads(output.read("cat/sku1/manifest.json"))
    assert set(manifest["files"]) == {*files, "runs/r1/review/index.html"} and manifest["sku"] == "sku1"
    assert Manifest.model_validate(manifest).files == manifest["files"]
    page = output.read("cat/sku1/review/index.html").decode()
    assert "A &lt;i&gt;mug&lt;/i&gt;" in page and "<i>" not in page


def test_failure_and_catalogue_report(buckets, tmp_path, make_manifest):
    _, output = buckets
    failed = SkuOutcome(
        catalogue_id="cat",
        sku="bad",
        status="failed",
        error="SKU 'bad': no photos",
        problems=[PhotoProblem(file="x.jpg", reason="corrupt")],
    )
    publish.publish_failure(output, failed)
    assert json.loads(output.read("cat/bad/error.json"))["error"] == "SKU 'bad': no photos"
    path = tmp_path / "card.jpg"
    path.write_bytes(b"x")
    publish.publish_sku(output, make_manifest("bad"), {"runs/r1/cards/card.jpg": path})  # fixed and re-run
    assert not output.exists("cat/bad/error.json") and output.exists("cat/bad/manifest.json")
    ok = SkuOutcome(
        catalogue_id="cat", sku="good", status="published", manifest="s3://o/cat/good/manifest.json"
    )
    publish.publish_catalogue_report(output, "cat", [ok, failed])
    report = json.loads(output.read("cat/catalogue-report.json"))
    assert (report["published"], report["failed"]) == (1, 1)
