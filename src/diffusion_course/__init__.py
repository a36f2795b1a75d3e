"""Shared, tested helpers for the diffusion-models course (see notebooks/ and the README's
"Architecture" section for the layers of this package)."""
__version__ = "0.1.0"
