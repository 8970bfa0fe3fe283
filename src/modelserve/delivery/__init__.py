"""Continuous delivery of models by `git push`: a gated, atomic, reversible bare repository."""
