"""Provenance: what a card file says about how it was made.

Owns the IPTC digital-source-type label in each card's XMP (``labels``), the signed C2PA manifest
(``content_credentials``, with ``c2pa-python``), and writing both with a card file and reading them back from
any copy of it (``labelling``: ``Labelling``, ``read_card``; docs/provenance.md).

May import: the foundations (records). Below the cards that carry the labels and the rules that check them.
"""
