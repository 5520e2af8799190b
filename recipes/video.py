"""Video LLM preference training: RRPO, TEMPLE (DPO curriculum + SFT), VDPO, and plain SFT.

    accelerate launch recipes/video.py --config recipes/configs/video/qwen25vl_temple.yaml [key=value ...]

One run, or with ``stages`` a curriculum of LoRA stages. The steps (the same in every family):
:mod:`mmalign.recipe`; what differs here: :class:`mmalign.families.video.Video`; the methods:
:mod:`mmalign.mllm.video.build`.
"""

from mmalign.families.video import Video
from mmalign.recipe import main_of, run_recipe

main = main_of(Video())

if __name__ == "__main__":
    raise SystemExit(run_recipe(main))
