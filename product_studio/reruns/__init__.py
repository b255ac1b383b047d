"""Re-runs: doing no work twice.

Owns the content and training keys (``content_key``: a hash of everything a published run depends on),
reusing an earlier run's results (``earlier_runs``: skip an unchanged SKU, reuse its LoRA or cutouts), which
catalogues changed since their last scan (``catalogue_changes``) and batch runs that take a catalogue's SKUs
one at a time under their leases (``batches``). The leases themselves are a foundation (``leases``): the
class-prior stage below takes them too.

May import: the foundations, ingest, the card plan, the settings (the values a key depends on) and the
manifest.
"""
