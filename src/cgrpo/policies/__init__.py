"""Policies: the one protocol through which a generator enters the trainer
(:mod:`cgrpo.policies.base`), the embedded tiny generator, and the FLUX family.

Importing this package imports nothing: import the names from their modules.
"""
