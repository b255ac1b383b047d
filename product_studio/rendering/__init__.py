"""Rendering: the product in a scene at a card's own aspect.

Owns the scene templates (``scenes``: ``templates/*.yaml``, their schema and how well each suits a product),
the two render modes and everything around them (``renderer``: composite and generate, the size a card is
rendered at, the inpainter, the upscaler, the product LoRA loaded for a block) and a warm worker's LoRA slot
(``lora_slot``: one compiled denoiser, each SKU's LoRA hot-swapped in).

May import: the foundations (models, identifiers, records, images). Nothing here knows of marketplaces,
scores or settings: the cards stage asks for renders and judges them.
"""
