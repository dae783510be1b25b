"""Floor 8: held-out evaluation (the one evaluator used by training and ``cgrpo eval``), the
``cgrpo eval`` protocol, summaries and paired changes, ``cgrpo compare``, ``cgrpo sample``.
"""
