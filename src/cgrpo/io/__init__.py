"""Floor 0 (foundation): files in and out. Atomic writes, checkpoint folders, RNG capture,
image files, the run log (CSV, trackers, curves, grids). Imports no other cgrpo package.
"""
