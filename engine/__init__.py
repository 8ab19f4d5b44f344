"""Runtime: inference backends, the batched pipeline, sources and sinks, the `run` CLI.

Imports only the generator and `cyclemask.imaging` from the core; never imports training code.
"""
