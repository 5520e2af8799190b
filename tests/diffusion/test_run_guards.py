"""The diffusion recipe's guards (issue 18): a batch larger than the data set is a ConfigError before the pipeline
loads; an export that fails (disk full) keeps a checkpoint that ``mmalign export`` turns into the LoRA."""

from __future__ import annotations

import errno

import pytest

from mmalign import checkpoint as ckpt
from mmalign.config import ConfigError


def test_batch_larger_than_the_data_set_fails_before_the_pipeline_loads(run_recipe, tiny_model_dirs, data_dirs,
                                                                        monkeypatch):
    import mmalign.diffusion.adapter as adapter

    def must_not_load(*args, **kwargs):
        raise AssertionError("the pipeline was loaded before the batch size was checked")

    monkeypatch.setattr(adapter, "load_parts", must_not_load)
    with pytest.raises(ConfigError, match=r"'train.batch_size': 8 is larger than the data set \(4 examples\)"):
        run_recipe("toy_dpo.yaml", tiny_model_dirs["sd15"], data_dirs["pairs"], "train.batch_size=8")


def test_disk_full_at_export_keeps_a_checkpoint_that_mmalign_export_exports(run_recipe, tiny_model_dirs, data_dirs,
                                                                            tmp_path, monkeypatch):
    import mmalign.diffusion.export as export
    from mmalign.cli import main as cli
    from mmalign.safe_export import ExportFailedError

    def disk_full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(export, "export_trained", disk_full)
    with pytest.raises(ExportFailedError, match="kept in checkpoint .*checkpoint-2") as info:
        run_recipe("toy_dpo.yaml", tiny_model_dirs["sd15"], data_dirs["pairs"], "eval.enabled=false")
    assert "No space left on device" in str(info.value)
    kept = ckpt.final_path(tmp_path / "out", 2)
    assert (kept / ckpt.TRAINABLE_FILE).is_file()
    monkeypatch.undo()
    assert cli(["export", str(kept), "--out", str(tmp_path / "lora")]) == 0
    assert (tmp_path / "lora" / "pytorch_lora_weights.safetensors").is_file()
    assert (tmp_path / "lora" / "mmalign_config.yaml").read_text() == (tmp_path / "out" / "mmalign_config.yaml").read_text()


def test_captions_longer_than_the_text_encoder_are_counted_and_reported(run_recipe, tiny_model_dirs, tmp_path,
                                                                        capsys):
    from mmalign.data import write_pairs_jsonl
    from mmalign.testing.placeholders import square_image

    long_caption = "a red square " + " ".join(["on a very plain gray background"] * 20)
    rows = [{"prompt": long_caption if i == 1 else f"a square number {i}", "chosen": square_image("red", seed=i, size=32),
             "rejected": square_image("blue", seed=10 + i, size=32)} for i in range(4)]
    data = write_pairs_jsonl(rows, tmp_path / "long" / "data.jsonl")
    summary = run_recipe("toy_dpo.yaml", tiny_model_dirs["sd15"], str(data), "eval.enabled=false",
                         "train.max_steps=1")
    assert summary["data"]["captions_truncated"] == 1 and summary["data"]["captions_distinct"] == 4
    assert "warning: 1 of 4 distinct captions are longer than the text encoder's 77 tokens" in capsys.readouterr().out
