"""VLM preference training: the DPO family, mDPO, rDPO and MM-DPO on any image-text-to-text model.

    accelerate launch recipes/vlm.py --config recipes/configs/vlm/qwen2vl_dpo.yaml [key=value ...]

LoRA or full fine-tuning, vision side frozen by default. The steps (the same in every family):
:mod:`mmalign.recipe`; what differs here: :class:`mmalign.families.vlm.VLM`; the methods:
:mod:`mmalign.mllm.vlm.objective`.
"""

from mmalign.families.vlm import VLM
from mmalign.recipe import main_of, run_recipe

main = main_of(VLM())

if __name__ == "__main__":
    raise SystemExit(run_recipe(main))
