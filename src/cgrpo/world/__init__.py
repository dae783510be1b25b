"""The embedded subject world: scenes, the tiny in-context generator, pretraining."""
