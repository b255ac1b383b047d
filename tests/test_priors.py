from product_studio import layout
from product_studio.models import model_identity
from product_studio.training import priors


def test_class_images_are_cached_extended_and_shared(buckets, tiny_pipe, tiny_model, tmp_path, monkeypatch):
    _, output = buckets
    spec = priors.prior_spec(
        tiny_pipe, model_identity(str(tiny_model)), "a photo of a vase", resolution=64, steps=2
    )
    calls: list[list[int]] = []
    real = priors.generate_class_images
    monkeypatch.setattr(
        priors,
        "generate_class_images",
        lambda pipe, s, idx, **kw: calls.append(list(idx)) or real(pipe, s, idx, **kw),
    )

    first = priors.ensure_class_images(output, tiny_pipe, spec, 3, tmp_path / "a")
    again = priors.ensure_class_images(output, tiny_pipe, spec, 3, tmp_path / "b")  # another SKU, same class
    more = priors.ensure_class_images(output, tiny_pipe, spec, 5, tmp_path / "c")

    assert calls == [[0, 1, 2], [3, 4]]  # reused, then extended: never regenerated
    assert (
        [p.read_bytes() for p in first]
        == [p.read_bytes() for p in again]
        == [p.read_bytes() for p in more[:3]]
    )
    key = priors.prior_key(spec)
    assert len([k for k in output.list(f"_priors/{key}/") if k.endswith(".png")]) == 5
    assert output.exists(f"_priors/{key}/spec.json")


def test_prior_key_changes_with_what_changes_the_images(tiny_pipe, tiny_model):
    ident = model_identity(str(tiny_model))
    base = priors.prior_spec(tiny_pipe, ident, "a photo of a vase", resolution=64, steps=2)
    keys = {
        priors.prior_key(base),
        priors.prior_key(priors.prior_spec(tiny_pipe, ident, "a photo of a vase", resolution=64, steps=3)),
        priors.prior_key(
            priors.prior_spec(tiny_pipe, ident, "a photo of a vase", resolution=64, steps=2, seed=1)
        ),
        priors.prior_key(priors.prior_spec(tiny_pipe, ident, "a photo of a mug", resolution=64, steps=2)),
        priors.prior_key(
            priors.prior_spec(
                tiny_pipe, {**ident, "revision": "other"}, "a photo of a vase", resolution=64, steps=2
            )
        ),
    }
    assert len(keys) == 5
    assert priors.prior_key(base) == priors.prior_key(
        priors.prior_spec(tiny_pipe, ident, "a photo of a vase", resolution=64, steps=2)
    )


def test_a_second_sku_of_a_new_class_waits_for_the_first_ones_class_images(
    buckets, tiny_pipe, tiny_model, tmp_path, monkeypatch
):
    import json
    import threading
    import time

    _, output = buckets
    spec = priors.prior_spec(
        tiny_pipe, model_identity(str(tiny_model)), "a photo of a lamp", resolution=64, steps=2
    )
    prefix = f"_priors/{priors.prior_key(spec)}"
    made = priors.generate_class_images(tiny_pipe, spec, [0, 1])
    # Another worker holds the class's lease and is generating; it finishes a moment later.
    lease = {"owner": "worker-a", "token": "t", "expires": "2999-01-01T00:00:00+00:00"}
    assert output.write(f"{prefix}/{layout.LEASE}", json.dumps(lease).encode(), if_absent=True)

    def other_worker_finishes() -> None:
        time.sleep(1.5)
        for i, image in enumerate(made):
            path = tmp_path / f"{i}.png"
            image.save(path)
            output.write(f"{prefix}/{i:05d}.png", path.read_bytes(), "image/png")
        output.delete(f"{prefix}/{layout.LEASE}")

    calls: list[list[int]] = []
    monkeypatch.setattr(
        priors, "generate_class_images", lambda pipe, s, idx, **kw: calls.append(list(idx)) or []
    )
    threading.Thread(target=other_worker_finishes).start()
    started = time.monotonic()
    paths = priors.ensure_class_images(output, tiny_pipe, spec, 2, tmp_path / "mine", owner="worker-b")
    assert time.monotonic() - started >= 1.0  # it waited for the lease
    assert calls == []  # and generated nothing: the images were there once the lease was released
    assert [p.name for p in paths] == ["00000.png", "00001.png"]
    assert not output.exists(f"{prefix}/{layout.LEASE}")
