"""What is measured and refined of a seller's photos beyond the cutout: the cleaner's mask refined at the
photo's own resolution (``matting``), and the photo-set advice for the seller -- blur, the product's share of
the frame, near-duplicate views (``advice``).

May import: the foundations (records, images) and numpy, OpenCV, SciPy; never a model, a stage or a flow.
"""
