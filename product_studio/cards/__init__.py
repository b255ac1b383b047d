"""Cards: which cards an SKU gets and how they are made, checked and judged.

Owns the marketplace card formats and their rules (``formats``: ``check_card``), the plan of an SKU's cards
(``planning``: formats and scene templates from ``product.json`` or the defaults), making the whole card set
(``making``: compose, render, label, score, rank and gate), pixel measures (``quality``) and the DINO/CLIP
identity and prompt scores with the gate (``scoring``).

May import: the foundations, ingest (the product spec), cleaning, rendering and provenance. Never the
settings: callers hand it the values it uses (``Settings.plan_defaults``, the flows' ``make_cards`` task).
"""
