"""A tiny regression problem run through the shared loop (:func:`mmalign.training.loop.train`).

Imported by the tests in this folder (through ``conftest.py``) and run as a script by the
subprocess tests (kill during a checkpoint write; two processes under ``torchrun``)::

    python tests/core/tiny_run.py OUTPUT_DIR '{"max_steps": 6, "batch_size": 2}' [--noise] [--dropout] \
        [--then-resume-from=K] [--announce]

``--announce`` prints ``micro <n>`` before each micro-batch (and sleeps 50 ms), so a test can signal the run
mid-training. ``--validate-sleep=S``: a final validation that prints ``validating`` and takes S seconds.
``--export``: ``final.safetensors`` is written as a recipe's export (through
:func:`mmalign.safe_export.export_or_keep_checkpoint`); ``--export-sleep=S`` prints ``exporting`` and waits S
seconds first, ``--export-pad=BYTES`` also writes ``export_pad.bin`` of that size (a merged model is larger than
the LoRA). ``--recipe-entry``: run under :func:`mmalign.recipe_entry.run_recipe` (explained faults: one line, exit 1).

Writes ``OUTPUT_DIR/final.safetensors`` (the trained weights, main process only) next to the loop's
own ``summary.json``. With ``MMALIGN_TEST_KILL_AT_CHECKPOINT=k`` the process SIGKILLs itself in the
middle of writing checkpoint ``k`` (after half of the trainable-weights file is on disk), which is
what a pre-emption or an OOM kill looks like to the checkpoint code.
"""

from __future__ import annotations

import faulthandler
import json
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file
from torch.utils.data import Dataset

from mmalign import checkpoint as ckpt
from mmalign.train_config import TrainConfig
from mmalign.training.distributed import make_accelerator
from mmalign.training.loop import train

IN_FEATURES = 4


class TinyRegression(Dataset):
    """``n`` fixed (x, y) pairs with y a noisy linear function of x; each item carries its index."""

    def __init__(self, n: int = 24, seed: int = 123) -> None:
        g = torch.Generator().manual_seed(seed)
        self.x = torch.randn(n, IN_FEATURES, generator=g)
        self.y = self.x @ torch.randn(IN_FEATURES, 1, generator=g) + 0.1 * torch.randn(n, 1, generator=g)

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {"x": self.x[i], "y": self.y[i], "index": torch.tensor(i)}


def make_model(seed: int = 7, dropout: float = 0.0) -> torch.nn.Module:
    torch.manual_seed(seed)
    layers: list[torch.nn.Module] = [torch.nn.Linear(IN_FEATURES, 8), torch.nn.Tanh()]
    if dropout:
        layers.append(torch.nn.Dropout(dropout))
    layers.append(torch.nn.Linear(8, 1))
    return torch.nn.Sequential(*layers)


def make_step_fn(noise: bool = False, nan_at_calls: set[int] | None = None, announce: bool = False):
    """``step_fn(model, batch) -> (mean squared error, metrics)``.

    ``noise``: perturb the inputs with noise drawn from the *global* torch RNG inside the step, as a
    diffusion step draws timesteps and noise. ``nan_at_calls``: 1-based micro-batch calls whose loss is
    multiplied by NaN (the loss and its gradients become non-finite).
    """
    calls = {"n": 0}

    def step_fn(model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, Any]]:
        calls["n"] += 1
        if announce:  # the interrupt test waits for a line, then signals the process mid-run
            print(f"micro {calls['n']}", flush=True)
            time.sleep(0.05)
        x = batch["x"]
        if noise:
            x = x + 0.3 * torch.randn_like(x)
        loss = torch.nn.functional.mse_loss(model(x), batch["y"])
        if nan_at_calls and calls["n"] in nan_at_calls:
            loss = loss * float("nan")
        return loss, {"first_index": batch["index"][0].float()}

    step_fn.calls = calls  # type: ignore[attr-defined]
    return step_fn


def weights(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def install_kill_hook(kill_at_step: int) -> None:
    """SIGKILL this process halfway through writing the trainable weights of checkpoint ``kill_at_step``."""
    original = ckpt.save_trainable

    def save_then_die(model: torch.nn.Module, folder: str | os.PathLike) -> None:
        if Path(folder).name == ckpt.temp_path(".", kill_at_step).name:
            path = Path(folder) / ckpt.TRAINABLE_FILE
            original(model, folder)
            data = path.read_bytes()
            path.write_bytes(data[: len(data) // 2])
            os.kill(os.getpid(), signal.SIGKILL)
        original(model, folder)

    ckpt.save_trainable = save_then_die


def main(argv: list[str]) -> int:
    output_dir, overrides = Path(argv[0]), json.loads(argv[1])
    flags = set(argv[2:])
    if os.environ.get("MMALIGN_TEST_KILL_AT_CHECKPOINT"):
        install_kill_hook(int(os.environ["MMALIGN_TEST_KILL_AT_CHECKPOINT"]))
    torch.set_num_threads(1)
    faulthandler.dump_traceback_later(200, exit=True)  # a hang fails the test with every thread's stack
    run_once(output_dir, {"progress_bar": False, **overrides}, flags)
    for flag in sorted(flags):
        if flag.startswith("--then-resume-from="):
            # A second train() in the same processes, as curriculum stages do (and it saves a launch): resume
            # from checkpoint-k of the first run into OUTPUT_DIR/resumed.
            resume = str(ckpt.final_path(output_dir, int(flag.split("=", 1)[1])))
            run_once(output_dir / "resumed", {"progress_bar": False, **overrides, "resume": resume}, flags)
    from accelerate import PartialState

    PartialState().destroy_process_group()  # what a recipe's final accelerator.end_training() does
    return 0


def _flag_value(flags: set[str], name: str) -> float | None:
    found = [f.split("=", 1)[1] for f in flags if f.startswith(f"{name}=")]
    return float(found[0]) if found else None


def run_once(output_dir: Path, overrides: dict[str, Any], flags: set[str]) -> None:
    model = make_model(seed=7 if "resume" not in overrides else 999, dropout=0.25 if "--dropout" in flags else 0.0)
    validate_fn = None
    if (validate_sleep := _flag_value(flags, "--validate-sleep")) is not None:
        def validate_fn(step: int) -> dict[str, Any]:
            print("validating", flush=True)
            time.sleep(validate_sleep)
            return {"done": 1.0}
    cfg = TrainConfig(**overrides)
    accelerator = make_accelerator(cfg, output_dir)
    summary = train(cfg, output_dir=output_dir, model=model, dataset=TinyRegression(), accelerator=accelerator,
                    step_fn=make_step_fn(noise="--noise" in flags, announce="--announce" in flags),
                    validate_fn=validate_fn)
    if int(os.environ.get("RANK", "0")) != 0:
        return
    if "--export" not in flags:
        save_file(weights(model), str(output_dir / "final.safetensors"))
        return
    from mmalign.safe_export import export_or_keep_checkpoint

    def export() -> Path:
        if (export_sleep := _flag_value(flags, "--export-sleep")) is not None:
            print("exporting", flush=True)
            time.sleep(export_sleep)
        if pad := int(_flag_value(flags, "--export-pad") or 0):
            with open(output_dir / "export_pad.bin", "wb") as fh:
                for _ in range(pad // 2**16):
                    fh.write(b"\0" * 2**16)
        save_file(weights(model), str(output_dir / "final.safetensors"))
        return output_dir / "final.safetensors"

    export_or_keep_checkpoint(export, accelerator, cfg, output_dir, summary)
    if torch.distributed.is_initialized():
        torch.distributed.barrier()  # rank 0 has written final.safetensors before anyone goes on or exits


if __name__ == "__main__":
    if "--recipe-entry" in sys.argv:
        from mmalign.recipe_entry import run_recipe

        raise SystemExit(run_recipe(main, sys.argv[1:]))
    raise SystemExit(main(sys.argv[1:]))
