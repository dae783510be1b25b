"""Floor 1 (foundation): the typed-config machinery (YAML, ``key=value`` overrides, strategy
sections with a ``kind``), its reference-docs generator, the one registry of named kinds.
Imports :mod:`cgrpo.io` only; no torch.
"""
