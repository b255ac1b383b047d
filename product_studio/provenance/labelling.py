"""A card file's provenance: written with the file (the IPTC label, and a signed C2PA manifest when a
certificate is set), and read back from any copy of it, as a marketplace would (``product-studio verify``)."""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, UnidentifiedImageError
from pydantic import BaseModel, ConfigDict

from product_studio.ingest import describe_content
from product_studio.provenance import labels
from product_studio.provenance.content_credentials import Credentials, SigningKey, read_credentials, sign_card
from product_studio.provenance.labels import CardLabel
from product_studio.records import CardOrigin, Provenance


@dataclass(frozen=True)
class Labelling:
    """How a run labels its cards: what they are made from (``origin``) and who signs them (``signing``)."""

    origin: CardOrigin | None = None
    signing: SigningKey | None = None  # None: no certificate set, XMP labels only

    def showing(self, photo: str) -> Labelling:
        """This labelling for cards that show the seller's ``photo`` (the main image, composite scenes)."""
        if self.origin is None:
            return self
        return Labelling(self.origin.model_copy(update={"placed": photo}), self.signing)

    def save(self, image: Image.Image, path: Path, file_type: str, mode: str) -> Provenance:
        """Write ``image`` to ``path`` with the label of a card made in ``mode``, then sign it (if set)."""
        label = labels.label_for(mode, self.origin)
        image.save(path, format=file_type, quality=95, **labels.save_options(file_type, label))
        if self.signing is not None:
            sign_card(path, self.signing, mode, label, self.origin)
        return Provenance(
            digital_source_type=label.digital_source_type,
            c2pa=self.signing is not None,
            signer=self.signing.signer if self.signing else None,
        )


class CardReading(BaseModel):
    """What a card file says about itself: its XMP label and its C2PA credentials."""

    model_config = ConfigDict(frozen=True)

    label: CardLabel | None
    credentials: Credentials

    @property
    def problems(self) -> list[str]:
        """Why a marketplace would not take the file's word for how it was made (empty: it would)."""
        found = [] if self.label else ["no IPTC digital source type in the file's XMP"]
        c2pa = self.credentials
        if c2pa.state == "Invalid":
            found.append(
                "the C2PA manifest does not validate: " + "; ".join(c2pa.problems or ["(no detail)"])
            )
        elif self.label and c2pa.digital_source_type not in (None, term := self.label.digital_source_type):
            found.append(f"the C2PA manifest says {c2pa.digital_source_type!r}, the XMP {term!r}")
        return found


class NotACard(ValueError):
    """A file that is not a whole image: nothing it says about itself can be trusted."""


def read_card(data: bytes, trust_anchors: bytes | None = None, where: str = "the file") -> CardReading:
    """Read a card file's label and C2PA credentials (validated against ``trust_anchors``, PEM, if given).

    A file that does not decode whole (cut short in a copy, corrupt) raises :class:`NotACard`, naming
    ``where``: its label may still read, but it is not the card that was labelled."""
    check_whole_image(data, where)
    return CardReading(label=labels.read_label(data), credentials=read_credentials(data, trust_anchors))


def check_whole_image(data: bytes, where: str) -> None:
    """Decode every pixel of ``data`` with Pillow (truncated data is an error, never padded with grey)."""
    try:
        with Image.open(io.BytesIO(data)) as image:
            image.load()
    except Image.DecompressionBombError as exc:
        raise NotACard(f"{where} is too large to decode safely ({exc})") from None
    except (OSError, SyntaxError, ValueError) as exc:
        what = describe_content(data) if isinstance(exc, UnidentifiedImageError) else f"({exc})"
        raise NotACard(
            f"{where} is not a whole image {what}: copy the card again from its source and verify the copy"
        ) from None
