"""Text-to-image diffusion: per-sample scores, model adapters, reference providers, caching, LoRA export."""
