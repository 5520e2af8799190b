"""The shared core of VLMs and video LLMs: loading (model), scoring forwards, log-probs, chat content, export;
family packages :mod:`mmalign.mllm.vlm` and :mod:`mmalign.mllm.video` build on it."""
