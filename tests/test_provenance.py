"""Cards that say how they were made (issue 24): the IPTC digital source type in every card's XMP, read
back with exiv2 (pyexiv2), and C2PA manifests signed by a test CA, checked by c2pa-python's Reader."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
from PIL import Image
from pydantic import ValidationError

from flows.cli import main
from product_studio.cards import formats, making, planning
from product_studio.devkit.certificates import make_test_certificates
from product_studio.provenance import labels
from product_studio.provenance.content_credentials import load_signing_key
from product_studio.provenance.labelling import Labelling
from product_studio.records import CardOrigin, CleanedPhoto, InputRef
from product_studio.settings import Settings

IPTC = "http://cv.iptc.org/newscodes/digitalsourcetype/"
TERMS = {
    "cutout": "algorithmicallyEnhanced",
    "composite": "compositeWithTrainedAlgorithmicMedia",
    "generate": "trainedAlgorithmicMedia",
}
ORIGIN = CardOrigin(
    manifest="cat/sku1/manifest.json",
    base_model="stable-diffusion-v1-5/stable-diffusion-v1-5",
    base_model_revision="451f4fe",
    cleaner="grabcut",
    photos=[InputRef(file="00.jpg", sha256="a" * 64), InputRef(file="01.jpg", sha256="b" * 64)],
    placed="00.jpg",
    lora=InputRef(file="pytorch_lora_weights.safetensors", sha256="c" * 64),
)


@pytest.fixture(scope="module")
def certs(tmp_path_factory):
    return make_test_certificates(tmp_path_factory.mktemp("c2pa"))


def _card(tmp_path: Path, mode: str, labelling: Labelling) -> Path:
    path = tmp_path / f"{mode}.jpg"
    labelling.save(Image.new("RGB", (320, 240), (40, 120, 200)), path, "JPEG", mode)
    return path


@pytest.mark.parametrize("mode", ["cutout", "composite", "generate"])
def test_every_card_names_its_iptc_term_generator_model_and_manifest_in_xmp(mode, tmp_path, xmp_of):
    data = _card(tmp_path, mode, Labelling(origin=ORIGIN)).read_bytes()
    xmp = xmp_of(data)
    assert xmp["Xmp.iptcExt.DigitalSourceType"] == IPTC + TERMS[mode]
    assert xmp["Xmp.xmp.CreatorTool"].startswith("product-studio ")
    assert xmp["Xmp.pstudio.Manifest"] == "cat/sku1/manifest.json"
    assert xmp["Xmp.pstudio.BaseModel"] == ORIGIN.base_model
    # The generative model is named on cards it made pixels of; the main image has none.
    assert xmp.get("Xmp.iptcExt.AISystemUsed") == (None if mode == "cutout" else ORIGIN.base_model)
    assert b"c2pa" not in data.lower()  # no certificate: XMP only


def test_check_card_refuses_a_card_whose_label_was_stripped_or_is_wrong(tmp_path):
    main_format = formats.FORMATS["amazon-main"]
    path = _card(tmp_path, "cutout", Labelling())
    assert formats.check_card(main_format, path, mode="cutout").checks["label"]
    wrong = formats.check_card(main_format, path, mode="generate")
    assert not wrong.checks["label"] and "'algorithmicallyEnhanced'" in wrong.problems[-1]
    Image.open(path).save(path, format="JPEG")  # an image tool re-saving the card drops its XMP
    stripped = formats.check_card(main_format, path, mode="cutout")
    assert not stripped.passed and "the label was stripped" in stripped.problems[-1]


@pytest.mark.parametrize("mode", ["cutout", "composite", "generate"])
def test_signed_cards_validate_and_name_their_actions_and_ingredients_by_hash(
    mode, tmp_path, certs, xmp_of, c2pa_of
):
    signing = load_signing_key(certs.chain, certs.key)
    data = _card(tmp_path, mode, Labelling(origin=ORIGIN, signing=signing)).read_bytes()
    assert xmp_of(data)["Xmp.iptcExt.DigitalSourceType"] == IPTC + TERMS[mode]  # kept by signing
    state, manifest, results = c2pa_of(data)
    failures = [f["code"] for f in results["activeManifest"].get("failure", [])]
    assert state == "Valid" and failures == ["signingCredential.untrusted"]  # intact; the test CA is unknown
    assert c2pa_of(data, anchors=certs.ca)[0] == "Trusted"
    assert manifest["signature_info"]["common_name"] == "Product Studio test signer"
    (actions,) = [a["data"]["actions"] for a in manifest["assertions"] if a["label"] == "c2pa.actions.v2"]
    assert actions[0]["action"] == "c2pa.created" and actions[0]["digitalSourceType"] == IPTC + TERMS[mode]
    names = [a["action"] for a in actions]
    assert names == {"cutout": ["c2pa.created", "c2pa.placed", "c2pa.edited"],
                     "composite": ["c2pa.created", "c2pa.placed", "c2pa.edited"],
                     "generate": ["c2pa.created"]}[mode]  # fmt: skip
    ingredients = {i["title"]: i for i in manifest["ingredients"]}
    assert ingredients["00.jpg"]["instance_id"] == "sha256:" + "a" * 64
    assert ingredients["00.jpg"]["relationship"] == ("inputTo" if mode == "generate" else "componentOf")
    if mode == "cutout":  # the main image is one photo, with its background removed
        assert set(ingredients) == {"00.jpg"}
    else:  # every photo (trained on), the base model and the LoRA, by hash
        assert ingredients["01.jpg"]["relationship"] == "inputTo"
        assert ingredients["pytorch_lora_weights.safetensors"]["instance_id"] == "sha256:" + "c" * 64
        assert ingredients[ORIGIN.base_model]["instance_id"] == f"{ORIGIN.base_model}@451f4fe"
    assert all("thumbnail" not in i and "data" not in i for i in manifest["ingredients"])  # no content


def test_a_tampered_card_fails_validation_and_verify_says_so(tmp_path, certs, capsys, c2pa_of):
    signing = load_signing_key(certs.chain, certs.key)
    path = _card(tmp_path, "composite", Labelling(origin=ORIGIN, signing=signing))
    assert main(["verify", str(path), "--trust-anchors", str(certs.ca)]) == 0
    out = capsys.readouterr().out
    assert "digital source type: compositeWithTrainedAlgorithmicMedia" in out
    assert f"iptc uri: {IPTC}compositeWithTrainedAlgorithmicMedia" in out
    assert "c2pa: Trusted" in out and "signer: Product Studio test signer" in out
    assert "manifest: cat/sku1/manifest.json" in out
    data = bytearray(path.read_bytes())
    data[data.rindex(b"\xff\xd9") - 20] ^= 0xFF  # one byte of the pixels
    path.write_bytes(bytes(data))
    assert c2pa_of(bytes(data))[0] == "Invalid"
    assert main(["verify", str(path)]) == 1
    out = capsys.readouterr().out
    assert "c2pa: Invalid" in out and "assertion.dataHash.mismatch" in out
    unlabelled = tmp_path / "plain.jpg"
    Image.new("RGB", (64, 64)).save(unlabelled)
    assert main(["verify", str(unlabelled)]) == 1
    assert "digital source type: none" in capsys.readouterr().out


def test_make_cards_labels_and_signs_the_main_image(tmp_path, certs, c2pa_of):
    cutout = Image.new("RGBA", (300, 300), (0, 0, 0, 0))
    cutout.paste((200, 30, 30, 255), (60, 40, 240, 260))
    cutout.save(tmp_path / "00.png")
    plan = planning.CardPlan(formats=[formats.FORMATS["amazon-main"]], templates=[])
    labelling = Labelling(
        origin=ORIGIN.model_copy(update={"placed": None}), signing=load_signing_key(certs.chain, certs.key)
    )
    photo = CleanedPhoto(source="00.jpg", cutout_path=tmp_path / "00.png", coverage=0.5)
    (card,) = making.make_cards(plan, [photo], tmp_path / "out", labelling=labelling)
    assert card.compliance.passed and card.compliance.checks["label"]
    assert card.provenance.digital_source_type == "algorithmicallyEnhanced" and card.provenance.c2pa
    data = card.local_path.read_bytes()
    _, manifest, _ = c2pa_of(data)
    assert [i["title"] for i in manifest["ingredients"]] == ["00.jpg"]  # the photo it shows, placed
    assert labels.read_label(data).manifest == "cat/sku1/manifest.json"


def test_card_origin_names_the_manifest_models_and_photos_by_hash(tmp_path, tiny_model):
    from product_studio.records import PhotoRecord

    lora = tmp_path / "pytorch_lora_weights.safetensors"
    lora.write_bytes(b"weights")
    photo = PhotoRecord(file="00.jpg", sha256="d" * 64, bytes=1, format="JPEG", width=9, height=9)
    origin = making.card_origin("cat", "sku1", [photo], lora, base_model=str(tiny_model), cleaner="grabcut")
    assert origin.manifest == "cat/sku1/manifest.json"
    assert origin.base_model == "a local Stable Diffusion model"  # public: never the folder's path
    assert origin.cleaner == "grabcut"
    assert origin.base_model_revision and origin.photos == [InputRef(file="00.jpg", sha256="d" * 64)]
    assert origin.lora == InputRef(file=lora.name, sha256=hashlib.sha256(b"weights").hexdigest())


def test_c2pa_settings_name_the_variable_and_file_at_fault(tmp_path, certs, monkeypatch):
    monkeypatch.setenv("PRODUCT_STUDIO_C2PA__CERT", str(certs.chain))
    with pytest.raises(
        ValidationError, match="PRODUCT_STUDIO_C2PA__CERT is set but PRODUCT_STUDIO_C2PA__KEY"
    ):
        Settings()
    monkeypatch.setenv("PRODUCT_STUDIO_C2PA__KEY", str(certs.key))
    assert Settings().c2pa.signing_key().alg == "es256"
    cases = {
        "KEY": (tmp_path / "missing.pem", "PRODUCT_STUDIO_C2PA__KEY=.*missing.pem cannot be read"),
        "CERT": (certs.ca, "PRODUCT_STUDIO_C2PA__CERT=.*ca.pem: the first certificate must be an end-entity"),
    }
    other = make_test_certificates(tmp_path / "other")
    cases["KEY "] = (other.key, "PRODUCT_STUDIO_C2PA__KEY=.*is not the key of the signing certificate")
    for name, (path, message) in cases.items():
        with monkeypatch.context() as mp:
            mp.setenv(f"PRODUCT_STUDIO_C2PA__{name.strip()}", str(path))
            with pytest.raises(ValidationError, match=message):
                Settings()
    monkeypatch.setenv("PRODUCT_STUDIO_C2PA__TRUST_ANCHORS", str(tmp_path / "none.pem"))
    with pytest.raises(ValidationError, match="PRODUCT_STUDIO_C2PA__TRUST_ANCHORS=.*none.pem: no such file"):
        Settings()


def test_verify_calls_a_truncated_card_or_a_directory_an_error_in_one_line(tmp_path, capsys):
    """Issue 34 #5: the first third of a labelled 1000x1000 JPEG still carries its label, but it is not the
    card that was labelled: an error (exit 2, one line); a directory is one line too, not a traceback."""
    whole = tmp_path / "whole.jpg"
    noise = Image.effect_noise((1000, 1000), 64).convert("RGB")  # pixels enough to cut a file short
    Labelling(origin=ORIGIN).save(noise, whole, "JPEG", "composite")
    assert main(["verify", str(whole)]) == 0
    capsys.readouterr()
    cut = tmp_path / "cut.jpg"
    cut.write_bytes(whole.read_bytes()[: whole.stat().st_size // 3])
    for bad, says in [(cut, "is not a whole image"), (tmp_path, "is a directory")]:
        assert main(["verify", str(bad)]) == 2, bad
        out, err = capsys.readouterr()
        assert out == "" and len(err.strip().splitlines()) == 1, err
        assert says in err and str(bad) in err, err
