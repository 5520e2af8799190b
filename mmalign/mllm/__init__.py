"""Scores for VLMs and video LLMs: batching, log-probs, video IO, temporal perturbations, curricula."""
