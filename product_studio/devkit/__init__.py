"""Development kit: what tests, the demo and benchmarks need and production never loads.

- ``tiny_models``: tiny SD / SDXL folders with seeded random weights (``product-studio tiny-model``), and a
  tiny FLUX.2 [klein] (``tiny_flux2``);
- ``samples``: a sample catalogue of products drawn in code;
- ``local_s3``: a real S3 server (SeaweedFS) on 127.0.0.1;
- ``demo`` and ``pool_demo`` (with ``processes``): the drivers of ``make demo`` and ``make pool-demo``, which
  run the flows through the ``product-studio`` and ``prefect`` commands, as a user would;
- ``certificates``: a test CA and C2PA signing certificate.

May import: the whole library (it drives it as a user would); the flows only through their commands.
"""
