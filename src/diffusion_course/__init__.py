"""Shared, tested helpers for the diffusion-models course (see notebooks/)."""
from .settings import chapter_settings, pick_device, resolve_profile

__all__ = ["chapter_settings", "pick_device", "resolve_profile"]
__version__ = "0.1.0"
