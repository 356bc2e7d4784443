"""Vendor knowledge: vendor profiles loaded from ``conf/vendors/*.toml`` and adapter hooks.

Adding a meter model is a profile file; code lives here only where a vendor really behaves
differently from what a file can express.
"""
