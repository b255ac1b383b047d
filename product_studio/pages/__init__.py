"""Jinja2 templates of the review pages (package data, loaded by :mod:`product_studio.review`)."""
