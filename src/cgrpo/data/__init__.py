"""Floor 3 (components): pair sources (reference, prompt): the protocol and the embedded
pairs, DreamBench / JSONL files, reference batches.
"""
