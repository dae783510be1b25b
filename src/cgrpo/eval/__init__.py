"""Floor 8: held-out evaluation (the one evaluator used by training and ``cgrpo eval``), the
``cgrpo eval`` protocol, summaries and paired changes, ``cgrpo compare``, ``cgrpo sample``,
``cgrpo export`` (a FLUX run's LoRA file and its model card).
"""
