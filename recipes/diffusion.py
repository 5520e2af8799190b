"""Text-to-image preference training: Diffusion-DPO, SFT, MaPO, SmPO, InPO, DCPO, RankDPO, Diffusion-KTO, PPD.

    accelerate launch recipes/diffusion.py --config recipes/configs/diffusion/sd15_dpo.yaml [key=value ...]

SD1.x, SD2.x, SDXL, SD3/SD3.5, FLUX.1; LoRA or full fine-tuning. The steps (the same in every family):
:mod:`mmalign.recipe`; what differs here: :class:`mmalign.families.diffusion.Diffusion`; the methods:
:mod:`mmalign.diffusion.registry`.
"""

from mmalign.families.diffusion import Diffusion
from mmalign.recipe import main_of, run_recipe

main = main_of(Diffusion())

if __name__ == "__main__":
    raise SystemExit(run_recipe(main))
