"""Checkpoints saved by mrirecon 0.1 keep loading: they pickle only ``mrirecon.models.unet.Unet``."""

import importlib
import json
from pathlib import Path

import pytest
import torch

from mrirecon.commands.main import main
from mrirecon.lightning.module import ReconModule

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "legacy_checkpoint"


@pytest.mark.parametrize(
    "path",
    [
        "mrirecon.models.Unet",
        "mrirecon.models.unet.Unet",
    ],
)
def test_class_paths_pickled_by_0_1_checkpoints_import(path):
    module, name = path.rsplit(".", 1)
    assert callable(getattr(importlib.import_module(module), name))


def test_checkpoint_saved_by_version_0_1_loads_and_evaluates(tiny_singlecoil, tmp_path, capsys):
    """tests/fixtures/legacy_checkpoint/last.ckpt was written by mrirecon 0.1 (commit in COMMIT)."""
    ckpt = FIXTURE / "last.ckpt"
    model = ReconModule.load_from_checkpoint(ckpt, map_location="cpu")
    assert model.hparams["net"]["class_path"] == "mrirecon.models.unet.Unet"
    weights = torch.load(ckpt, weights_only=True)["state_dict"]
    assert torch.equal(model.state_dict()["net.conv.layers.0.weight"], weights["net.conv.layers.0.weight"])
    main(["test", "--config", str(FIXTURE / "config.yaml"), "--data.data_path", str(tiny_singlecoil),
          "--ckpt_path", str(ckpt), "--output_dir", str(tmp_path / "test"), "--trainer.enable_progress_bar", "false"])
    summary = json.loads((tmp_path / "test" / "summary.json").read_text())
    assert set(summary["methods"]) == {"unet", "zero-filled"}
    assert -1 <= summary["methods"]["unet"]["4x"]["ssim"]["mean"] <= 1
    assert summary["checkpoint"] == str(ckpt)
