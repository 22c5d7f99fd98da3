"""Resumable, sha256-verified model downloads for GPU pods, built on aria2."""

__version__ = "0.1.0"
