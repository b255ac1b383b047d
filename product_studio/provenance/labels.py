"""The IPTC label every card file carries in its XMP packet: how the image was made, by what, for which SKU.

Marketplaces and search engines read ``Iptc4xmpExt:DigitalSourceType`` (Google Merchant Center requires
``trainedAlgorithmicMedia`` on AI-generated product images; the EU AI Act, Art. 50, asks for machine-readable
marking). The term is the IPTC NewsCodes URI ``http://cv.iptc.org/newscodes/digitalsourcetype/<term>``:

- ``cutout`` (the main image): ``algorithmicallyEnhanced`` -- the seller's own capture, its background removed
  by a segmentation model that generates no pixels (docs/provenance.md says why this term);
- ``composite``: ``compositeWithTrainedAlgorithmicMedia`` -- the real product, generated surroundings;
- ``generate``: ``trainedAlgorithmicMedia`` -- rendered whole by the product's fine-tuned model.

The packet is built with ``xml.etree`` and written by Pillow's own XMP support when the card is saved
(:func:`save_options`); :func:`read_label` reads it back from a file's bytes.
"""

from __future__ import annotations

import io
import xml.etree.ElementTree as ET
from importlib import metadata
from typing import Any

from PIL import Image, PngImagePlugin
from pydantic import BaseModel, ConfigDict

from product_studio.records import CardOrigin

IPTC_TERMS = "http://cv.iptc.org/newscodes/digitalsourcetype/"

# A card's render mode -> the IPTC digital source type of the image.
TERM_FOR_MODE = {
    "cutout": "algorithmicallyEnhanced",
    "composite": "compositeWithTrainedAlgorithmicMedia",
    "generate": "trainedAlgorithmicMedia",
}

_NS = {
    "x": "adobe:ns:meta/",
    "rdf": "http://www.w3.org/1999/02/22-rdf-syntax-ns#",
    "xmp": "http://ns.adobe.com/xap/1.0/",
    "Iptc4xmpExt": "http://iptc.org/std/Iptc4xmpExt/2008-02-29/",
    "pstudio": "urn:product-studio:xmp:1.0/",
}
for _prefix, _uri in _NS.items():
    ET.register_namespace(_prefix, _uri)

# CardLabel field -> XMP property (Iptc4xmpExt:AISystemUsed and ...VersionUsed: IPTC Photo Metadata 2025.1).
_PROPERTIES = {
    "digital_source_type": ("Iptc4xmpExt", "DigitalSourceType"),
    "generator": ("xmp", "CreatorTool"),
    "ai_system": ("Iptc4xmpExt", "AISystemUsed"),
    "ai_system_version": ("Iptc4xmpExt", "AISystemVersionUsed"),
    "base_model": ("pstudio", "BaseModel"),
    "manifest": ("pstudio", "Manifest"),
}


class CardLabel(BaseModel):
    """What a card's XMP packet says (``digital_source_type`` is the IPTC term, not its URI)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    digital_source_type: str
    generator: str | None = None  # "product-studio <version>"
    ai_system: str | None = None  # the model that generated pixels (scene cards): the base model's id
    ai_system_version: str | None = None  # its revision
    base_model: str | None = None  # the SKU's base model, on every card
    manifest: str | None = None  # the SKU's manifest key, <catalogue>/<sku>/manifest.json

    @property
    def uri(self) -> str:
        return IPTC_TERMS + self.digital_source_type


def generator() -> str:
    """``product-studio <version>``: the tool that made the card."""
    try:
        return f"product-studio {metadata.version('product-studio')}"
    except metadata.PackageNotFoundError:
        return "product-studio"


def term_for(mode: str) -> str:
    """The IPTC digital source type of a card made in ``mode`` (a ValueError names an unknown mode)."""
    if mode not in TERM_FOR_MODE:
        raise ValueError(f"render mode {mode!r} has no digital source type; known: {sorted(TERM_FOR_MODE)}")
    return TERM_FOR_MODE[mode]


def label_for(mode: str, origin: CardOrigin | None = None) -> CardLabel:
    """The label of a card made in ``mode``; ``origin`` adds the base model and the SKU's manifest key."""
    generated = origin if mode != "cutout" else None  # the main image has no generated pixels
    return CardLabel(
        digital_source_type=term_for(mode),
        generator=generator(),
        ai_system=generated.base_model if generated else None,
        ai_system_version=(generated.base_model_revision or None) if generated else None,
        base_model=origin.base_model if origin else None,
        manifest=origin.manifest if origin else None,
    )


def xmp_packet(label: CardLabel) -> bytes:
    """The XMP packet (UTF-8) holding ``label``: one ``rdf:Description`` with a property per set field."""
    root = ET.Element(f"{{{_NS['x']}}}xmpmeta")
    rdf = ET.SubElement(root, f"{{{_NS['rdf']}}}RDF")
    description = ET.SubElement(rdf, f"{{{_NS['rdf']}}}Description", {f"{{{_NS['rdf']}}}about": ""})
    for field, (prefix, name) in _PROPERTIES.items():
        value = label.uri if field == "digital_source_type" else getattr(label, field)
        if value:
            ET.SubElement(description, f"{{{_NS[prefix]}}}{name}").text = value
    begin = ET.ProcessingInstruction("xpacket", 'begin="\ufeff" id="W5M0MpCehiHzreSzNTczkc9d"')
    end = ET.ProcessingInstruction("xpacket", 'end="w"')
    return "".join(ET.tostring(part, encoding="unicode") for part in (begin, root, end)).encode("utf-8")


def save_options(file_type: str, label: CardLabel) -> dict[str, Any]:
    """Keyword arguments for ``Image.save`` that write ``label`` in a JPEG's or PNG's XMP."""
    packet = xmp_packet(label)
    if file_type == "JPEG":
        return {"xmp": packet}
    if file_type == "PNG":
        info = PngImagePlugin.PngInfo()
        info.add_itxt("XML:com.adobe.xmp", packet.decode("utf-8"))
        return {"pnginfo": info}
    raise ValueError(f"file type {file_type!r} cannot carry a label here; use JPEG or PNG")


def read_xmp(data: bytes) -> bytes | None:
    """The XMP packet of an image file's bytes, or None when it has none (Pillow finds the segment)."""
    try:
        with Image.open(io.BytesIO(data)) as image:
            packet = image.info.get("xmp") or image.info.get("XML:com.adobe.xmp")
    except (OSError, ValueError):
        return None
    if isinstance(packet, str):
        packet = packet.encode("utf-8")
    return packet or None


def read_label(data: bytes) -> CardLabel | None:
    """The label in an image file's XMP, or None when there is no ``DigitalSourceType`` (or no XMP)."""
    packet = read_xmp(data)
    if packet is None:
        return None
    try:
        root = ET.fromstring(packet.strip(b"\x00 \t\r\n"))
    except ET.ParseError:
        return None
    found: dict[str, str] = {}
    for description in root.iter(f"{{{_NS['rdf']}}}Description"):
        for field, (prefix, name) in _PROPERTIES.items():
            tag = f"{{{_NS[prefix]}}}{name}"
            child = description.find(tag)
            value = description.get(tag) or (child.text if child is not None else None)
            if value and field not in found:
                found[field] = value.strip()
    uri = found.pop("digital_source_type", "")
    if not uri:
        return None
    term = uri.removeprefix(IPTC_TERMS) if uri.startswith(IPTC_TERMS) else uri
    return CardLabel(digital_source_type=term, **found)


def label_problem(data: bytes, mode: str) -> str | None:
    """Why a card file made in ``mode`` is not labelled as it must be, or None when it is."""
    label = read_label(data)
    expected = term_for(mode)
    if label is None:
        return f"no IPTC digital source type in its XMP (want {IPTC_TERMS}{expected}): the label was stripped"
    if label.digital_source_type != expected:
        return f"labelled {label.digital_source_type!r}, but a {mode} card is {expected!r}"
    return None
