"""fit, test and predict on files with the real download's shapes, scored as fastmri.evaluate does.

The layout of :mod:`fastmri_like` (knee 640x368/372 with 15 coils, brain 640x320 and 768x396
with 16 and 20 coils, a FLAIR_203-like 640x264 file, a non-square target, test files with their
own masks) at a quarter of the size in the default suite, at full size in the slow one.
"""

from __future__ import annotations

import types
from pathlib import Path

import h5py
import numpy as np
import pytest
import yaml
from fastmri import evaluate as fastmri_evaluate

from cli_helpers import fastmri_scores, metrics_csv
from fastmri_like import write_download
from mrirecon.commands.main import main

SCALES = [4, pytest.param(1, marks=pytest.mark.slow)]


# One torch thread for the whole module (module-scoped, in conftest.py).
pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module", params=SCALES, ids=lambda s: f"scale{s}")
def download(request, tmp_path_factory):
    root = tmp_path_factory.mktemp(f"download{request.param}")
    return write_download(root, scale=request.param), request.param


def _config(path: Path, data: Path, runs: Path, batch_size: int, scale: int) -> Path:
    config = {
        "seed_everything": 0,
        "trainer": {
            "accelerator": "cpu", "devices": 1, "max_epochs": 1, "log_every_n_steps": 1,
            "enable_progress_bar": False, "enable_model_summary": False,
            "logger": {"class_path": "pytorch_lightning.loggers.TensorBoardLogger",
                       "init_args": {"save_dir": str(runs), "name": data.name, "default_hp_metric": False}},
        },
        "model": {"net": {"class_path": "mrirecon.models.Unet", "init_args": {"chans": 2, "num_pool_layers": 2}},
                  "num_log_images": 8},
        "data": {"data_path": str(data), "challenge": "multicoil", "mask_type": "equispaced_fraction",
                 "center_fractions": [0.08, 0.04], "accelerations": [4, 8], "batch_size": batch_size,
                 "num_workers": 0, "test_split": "val"},
    }
    path.write_text(yaml.safe_dump(config))
    return path


@pytest.mark.parametrize("anatomy", ["knee", "brain"])
def test_fit_test_predict_on_real_shapes(anatomy, download, tmp_path):
    roots, scale = download
    data = roots[anatomy]
    runs = tmp_path / "runs"
    config = _config(tmp_path / "b2.yaml", data, runs, batch_size=2, scale=scale)
    main(["fit", "--config", str(config)])
    run_dir = runs / data.name / "version_0"
    ckpt = run_dir / "checkpoints" / "last.ckpt"
    assert ckpt.is_file()

    results = {}
    for batch_size in (1, 2):
        cfg = _config(tmp_path / f"b{batch_size}.yaml", data, runs, batch_size, scale)
        main(["test", "--config", str(cfg), "--ckpt_path", str(ckpt), "--output_dir", str(tmp_path / f"test{batch_size}")])
        results[batch_size] = metrics_csv(tmp_path / f"test{batch_size}" / "metrics.csv")
    assert results[1].keys() == results[2].keys()
    # float32 convolutions pick their kernels (and summation order) by batch size: a barely
    # trained net's SSIM moved by 1.4e-6 relative on CI's CPU, so batch sizes agree to 1e-5.
    for key, values in results[1].items():
        for metric, value in values.items():
            assert results[2][key][metric] == pytest.approx(value, rel=1e-5, abs=1e-9), (key, metric)

    # test's per-volume numbers are fastMRI's, volume by volume.
    predictions = tmp_path / "predict_val"
    main(["predict", "--config", str(config), "--ckpt_path", str(ckpt), "--output_dir", str(predictions)])
    ours = results[2]
    val = data / "multicoil_val"
    for acc in ("4x", "8x"):
        for target_file in sorted(val.glob("*.h5")):
            with h5py.File(target_file) as hf:
                target = hf["reconstruction_rss"][()]
            reference = fastmri_scores(target, predictions / acc / target_file.name)
            for metric in ("ssim", "psnr", "nmse"):
                assert ours[("unet", acc, target_file.name)][metric] == pytest.approx(reference[metric], abs=1e-4), (
                    target_file.name, acc, metric)

    # ... and through fastMRI's own evaluation loop for the volumes it can score (it fails on
    # FLAIR_203-like files, whose reconstructions are smaller than their targets).
    scorable = tmp_path / "scorable"
    scorable.mkdir()
    for target_file in val.glob("*.h5"):
        if "FLAIR_203" not in target_file.name:
            (scorable / target_file.name).symlink_to(target_file)
    for acc in ("4x", "8x"):
        args = types.SimpleNamespace(target_path=scorable, predictions_path=predictions / acc, acquisition=None, acceleration=None)
        means = fastmri_evaluate.evaluate(args, "reconstruction_rss").means()
        names = [p.name for p in scorable.iterdir()]
        for metric, key in (("ssim", "SSIM"), ("psnr", "PSNR"), ("nmse", "NMSE")):
            assert np.mean([ours[("unet", acc, n)][metric] for n in names]) == pytest.approx(means[key], abs=1e-4)

    # Test files carry their own masks: predict uses them (flat folder, as the leaderboard wants).
    test_out = tmp_path / "predict_test"
    main(["predict", "--config", str(config), "--ckpt_path", str(ckpt), "--data.test_split", "test",
          "--output_dir", str(test_out)])
    test_files = sorted(p.name for p in (data / "multicoil_test").glob("*.h5"))
    assert sorted(p.name for p in test_out.iterdir()) == test_files
    for name in test_files:
        with h5py.File(data / "multicoil_test" / name) as src, h5py.File(test_out / name) as out:
            assert out.attrs["acceleration"] == src.attrs["acceleration"]
            width = src["kspace"].shape[-1]
            side = min(320 // scale, width)
            assert out["reconstruction"].shape == (src["kspace"].shape[0], side, side)
            assert np.isfinite(out["reconstruction"][()]).all()
    # No evaluation command opened a run of its own.
    assert sorted(p.name for p in run_dir.parent.iterdir()) == ["version_0"]


def test_masking_test_files_again_is_refused(download, tmp_path):
    roots, scale = download
    config = _config(tmp_path / "c.yaml", roots["knee"], tmp_path / "runs", 1, scale)
    main(["fit", "--config", str(config), "--trainer.max_steps", "1"])
    ckpt = tmp_path / "runs" / "knee" / "version_0" / "checkpoints" / "last.ckpt"
    with pytest.raises(SystemExit) as err:
        main(["predict", "--config", str(config), "--ckpt_path", str(ckpt), "--data.test_split", "test",
              "--data.use_file_masks", "false"])
    assert err.value.code == 2
