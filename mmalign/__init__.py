"""mmalign: preference alignment for text-to-image diffusion models, VLMs and video LLMs."""

__version__ = "0.1.0"
