"""Review: what the seller sees and decides.

Owns the review pages (``pages``: Jinja2, autoescape on, relative links so they open from the bucket;
``templates/``), the contact sheet, presigned shared copies whose buttons write decisions (``links``) and the
seller's decisions themselves (``decisions``: one object per card, read together, the latest write holding).

May import: the foundations, the cards' records and the manifest (what a run published). Publishing and the
marketplace sit above it.
"""
