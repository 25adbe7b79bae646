"""Thin mappings of a Net to other formats, at the edge: the engine never imports them."""
