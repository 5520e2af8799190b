"""Video-LLM preference training: video batches and items, the recipe config and build, the method steps,
RRPO phrases, TEMPLE perturbations, pairs and curricula."""
