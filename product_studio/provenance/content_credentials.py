"""C2PA content credentials on card files, signed and read with ``c2pa-python``.

With a signing certificate (``PRODUCT_STUDIO_C2PA__CERT`` / ``__KEY``), every card carries a signed C2PA
manifest: ``c2pa.created`` with the card's IPTC digital source type, ``c2pa.placed`` for the seller's photo
shown in the main image and composite cards, ``c2pa.edited`` for what a model did to it; the seller's photos,
the base model and the product's LoRA are ingredients by name and sha256 (never their content, no
thumbnails). The manifest's hard binding covers every byte but its own, the XMP label included, so a card
edited after signing fails validation. :func:`read_credentials` says what a marketplace would read.

C2PA accepts ES256/384/512, PS256 and Ed25519 signatures by an end-entity certificate (not a CA, not
self-signed) whose extended key usage names email protection, document signing or C2PA signing.
"""

from __future__ import annotations

import datetime as dt
import io
import mimetypes
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import c2pa
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from pydantic import BaseModel, ConfigDict

from product_studio.provenance.labels import IPTC_TERMS, CardLabel
from product_studio.records import CardOrigin

# Extended key usages C2PA validators accept on a signing certificate (c2pa-rs' list).
ACCEPTED_EKUS = {
    "1.3.6.1.5.5.7.3.4": "email protection",
    "1.3.6.1.5.5.7.3.36": "document signing",
    "1.3.6.1.4.1.62558.2.1": "C2PA signing",
    "1.3.6.1.4.1.311.76.59.1.9": "MS C2PA signing",
}
_CURVES = {"secp256r1": "es256", "secp384r1": "es384", "secp521r1": "es512"}
# What the builder must not embed: thumbnails of the card or of any ingredient (the photos stay private).
_BUILD_SETTINGS = {"builder": {"thumbnail": {"enabled": False}}}


class SigningKeyError(ValueError):
    """A certificate chain or key C2PA cannot sign with; ``which`` is ``"cert"`` or ``"key"``."""

    def __init__(self, which: Literal["cert", "key"], message: str) -> None:
        super().__init__(message)
        self.which = which


@dataclass(frozen=True)
class SigningKey:
    """A checked PEM chain and private key, the algorithm they sign with and the signer's name."""

    chain: bytes
    key: bytes
    alg: str
    signer: str
    tsa_url: str | None = None


def _read(which: Literal["cert", "key"], path: Path) -> bytes:
    try:
        return path.expanduser().read_bytes()
    except OSError as exc:
        raise SigningKeyError(which, f"{path} cannot be read ({exc.strerror or exc})") from None


def _name(cert: x509.Certificate) -> str:
    """``CN (O)`` of a certificate's subject, as C2PA readers show the signer."""
    cn = cert.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)
    org = cert.subject.get_attributes_for_oid(x509.NameOID.ORGANIZATION_NAME)
    name = str(cn[0].value) if cn else cert.subject.rfc4514_string()
    return f"{name} ({org[0].value})" if org else name


def _check_signing_cert(cert: x509.Certificate, path: Path) -> None:
    """The rules C2PA validators apply to the signing (first) certificate of the chain."""
    ext = cert.extensions
    try:
        is_ca = ext.get_extension_for_class(x509.BasicConstraints).value.ca
    except x509.ExtensionNotFound:
        is_ca = False
    if is_ca or cert.issuer == cert.subject:
        raise SigningKeyError(
            "cert", f"{path}: the first certificate must be an end-entity certificate issued by a CA, "
            "not a CA or self-signed one; put the signing certificate first, then its intermediates",
        )  # fmt: skip
    try:
        usages = {u.dotted_string for u in ext.get_extension_for_class(x509.ExtendedKeyUsage).value}
    except x509.ExtensionNotFound:
        usages = set()
    if not usages & set(ACCEPTED_EKUS):
        raise SigningKeyError(
            "cert", f"{path}: the signing certificate's extended key usage names none of "
            f"{sorted(ACCEPTED_EKUS.values())}; C2PA validators refuse it (ask your CA for a document "
            "signing or email protection certificate)",
        )  # fmt: skip
    if cert.not_valid_after_utc < dt.datetime.now(dt.UTC):
        raise SigningKeyError(
            "cert", f"{path}: the signing certificate expired on {cert.not_valid_after_utc}"
        )


def _algorithm(key: Any, path: Path) -> str:
    if isinstance(key, ec.EllipticCurvePrivateKey) and key.curve.name in _CURVES:
        return _CURVES[key.curve.name]
    if isinstance(key, rsa.RSAPrivateKey):
        return "ps256"
    if isinstance(key, ed25519.Ed25519PrivateKey):
        return "ed25519"
    raise SigningKeyError(
        "key", f"{path}: a {type(key).__name__} key; C2PA signs with EC P-256/384/521, RSA or Ed25519"
    )


def _spki(public: Any) -> bytes:
    return public.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


def load_signing_key(cert: Path, key: Path, tsa_url: str | None = None) -> SigningKey:
    """Read and check a PEM certificate chain (signing certificate first) and its unencrypted PEM key."""
    chain = _read("cert", cert)
    try:
        certs = x509.load_pem_x509_certificates(chain)
    except ValueError:
        raise SigningKeyError(
            "cert", f"{cert} holds no PEM certificate (-----BEGIN CERTIFICATE-----)"
        ) from None
    _check_signing_cert(certs[0], cert)
    pem = _read("key", key)
    try:
        private = serialization.load_pem_private_key(pem, password=None)
    except (ValueError, TypeError) as exc:
        raise SigningKeyError("key", f"{key} is not an unencrypted PEM private key ({exc})") from None
    alg = _algorithm(private, key)
    if _spki(private.public_key()) != _spki(certs[0].public_key()):
        raise SigningKeyError("key", f"{key} is not the key of the signing certificate in {cert}")
    return SigningKey(chain=chain, key=pem, alg=alg, signer=_name(certs[0]), tsa_url=tsa_url)


def _agent(name: str, version: str | None = None) -> dict[str, str]:
    return {"name": name, **({"version": version} if version else {})}


def _ingredients(mode: str, origin: CardOrigin) -> list[dict[str, Any]]:
    """The seller's photos (the placed one first), the base model and the LoRA, by name and hash."""
    photos = [p for p in origin.photos if mode != "cutout" or p.file == origin.placed]
    photos.sort(key=lambda p: p.file != origin.placed)
    found: dict[str, dict[str, Any]] = {}
    for p in photos:
        placed = p.file == origin.placed and mode != "generate"
        found.setdefault(
            f"sha256:{p.sha256}",
            {
                "title": p.file,
                "format": mimetypes.guess_type(p.file)[0] or "application/octet-stream",
                "relationship": "componentOf" if placed else "inputTo",
                "description": "the seller's photo" + (", shown in this card" if placed else ", trained on"),
            },
        )
    if mode != "cutout":
        model = {"format": "application/octet-stream", "relationship": "inputTo"}
        types = [{"type": "c2pa.types.model"}]
        found[f"{origin.base_model}@{origin.base_model_revision}"] = {
            **model, "title": origin.base_model, "description": "the base model", "data_types": types,
        }  # fmt: skip
        if origin.lora is not None:
            found[f"sha256:{origin.lora.sha256}"] = {
                **model, "title": origin.lora.file, "description": "the product's LoRA", "data_types": types,
            }  # fmt: skip
    return [{**body, "instance_id": instance} for instance, body in found.items()]


def _actions(mode: str, label: CardLabel, origin: CardOrigin | None) -> list[dict[str, Any]]:
    """``c2pa.created`` with the card's digital source type, then what was placed and edited."""
    tool = label.generator or "product-studio"
    name, _, version = tool.partition(" ")
    actions: list[dict[str, Any]] = [
        {"action": "c2pa.created", "digitalSourceType": label.uri, "softwareAgent": _agent(name, version)}
    ]
    placed = [f"sha256:{p.sha256}" for p in origin.photos if p.file == origin.placed] if origin else []
    if mode in ("cutout", "composite") and placed:
        actions.append({"action": "c2pa.placed", "parameters": {"ingredientIds": placed[:1]}})
    if mode == "cutout":
        cleaner = origin.cleaner if origin and origin.cleaner else "a segmentation model"
        actions.append(
            {
                "action": "c2pa.edited",
                "digitalSourceType": IPTC_TERMS + "algorithmicallyEnhanced",
                "description": f"background removed by {cleaner}; the product centred on pure white",
                "softwareAgent": _agent(cleaner),
            }
        )
    elif mode == "composite":
        model = origin.base_model if origin else "the base model"
        actions.append(
            {
                "action": "c2pa.edited",
                "digitalSourceType": IPTC_TERMS + "trainedAlgorithmicMedia",
                "description": f"surroundings generated by inpainting with {model} and the product's LoRA",
                "softwareAgent": _agent(model),
            }
        )
    return actions


def manifest_definition(mode: str, label: CardLabel, origin: CardOrigin | None, title: str) -> dict[str, Any]:
    """The C2PA manifest definition of one card (what ``c2pa.Builder`` signs)."""
    name, _, version = (label.generator or "product-studio").partition(" ")
    return {
        "claim_generator_info": [_agent(name, version)],
        "title": title,
        "ingredients": _ingredients(mode, origin) if origin else [],
        "assertions": [{"label": "c2pa.actions.v2", "data": {"actions": _actions(mode, label, origin)}}],
    }


def mime_type(path: Path) -> str:
    """The MIME type C2PA is told for a card file (JPEG or PNG)."""
    found = mimetypes.guess_type(path.name)[0]
    if found not in ("image/jpeg", "image/png"):
        raise ValueError(f"{path.name}: only JPEG and PNG cards are signed here, not {found}")
    return found


def sign_card(path: Path, key: SigningKey, mode: str, label: CardLabel, origin: CardOrigin | None) -> None:
    """Embed a signed C2PA manifest in the card file at ``path`` (replaced when the signed copy is whole)."""
    mime = mime_type(path)
    signed = path.with_name(path.name + ".signing")
    info = c2pa.C2paSignerInfo(key.alg, key.chain, key.key, key.tsa_url)
    definition = manifest_definition(mode, label, origin, path.name)
    with (
        c2pa.Context.from_dict(_BUILD_SETTINGS) as context,
        c2pa.Builder.from_json(definition, context) as builder,
        c2pa.Signer.from_info(info) as signer,
        path.open("rb") as source,
        signed.open("w+b") as dest,
    ):
        builder.sign(signer, mime, source, dest)
    os.replace(signed, path)


class Credentials(BaseModel):
    """What a C2PA reader finds in a file: the validation state, the signer, the digital source type."""

    model_config = ConfigDict(frozen=True)

    state: Literal["none", "Invalid", "Valid", "Trusted"]  # Valid: intact, signer not on the trust list
    signer: str | None = None
    digital_source_type: str | None = None  # the IPTC term of the ``c2pa.created`` action
    problems: list[str] = []  # validation failures ("code: explanation"), the untrusted signer left out


def _sniff(data: bytes) -> str:
    if data.startswith(b"\xff\xd8"):
        return "image/jpeg"
    if data.startswith(b"\x89PNG"):
        return "image/png"
    return ""  # c2pa detects the rest


def _created_term(manifest: dict[str, Any]) -> str | None:
    for assertion in manifest.get("assertions", []):
        if assertion.get("label", "").startswith("c2pa.actions"):
            for action in assertion.get("data", {}).get("actions", []):
                if action.get("action") == "c2pa.created" and action.get("digitalSourceType"):
                    return str(action["digitalSourceType"]).removeprefix(IPTC_TERMS)
    return None


def read_credentials(data: bytes, trust_anchors: bytes | None = None) -> Credentials:
    """Read and validate the C2PA manifest in a file's bytes; ``trust_anchors`` (PEM) are the CAs trusted."""
    settings = {"trust": {"trust_anchors": trust_anchors.decode()}} if trust_anchors else {}
    try:
        with c2pa.Context.from_dict(settings) as context:
            reader = c2pa.Reader.try_create(_sniff(data), io.BytesIO(data), None, context)
            if reader is None:
                return Credentials(state="none")
            with reader:
                state = reader.get_validation_state() or "Invalid"
                results = reader.get_validation_results() or {}
                manifest = reader.get_active_manifest() or {}
    except c2pa.C2paError as exc:
        return Credentials(state="Invalid", problems=[str(exc)])
    failures = results.get("activeManifest", {}).get("failure", [])
    problems = [
        f"{f.get('code')}: {f.get('explanation', '')}"
        for f in failures
        if f.get("code") != "signingCredential.untrusted"
    ]
    info = manifest.get("signature_info", {})
    signer = info.get("common_name")
    if signer and info.get("issuer"):
        signer = f"{signer} ({info['issuer']})"
    return Credentials(
        state=state if state in ("Invalid", "Valid", "Trusted") else "Invalid",
        signer=signer,
        digital_source_type=_created_term(manifest),
        problems=problems,
    )
