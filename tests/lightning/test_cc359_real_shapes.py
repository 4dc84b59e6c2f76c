"""Calgary-Campinas files with the real download's shapes: planes of 218 x 170, 174 and 180,
12 coils as 24 interleaved float32 channels, the challenge's mask files for each size; fit, test,
predict and baseline from the shipped config, scored as fastmri.evaluate's functions score them.

Both run in the slow suite (the default one runs the same chain on quarter-size planes,
:mod:`test_cc359_pipeline`): volumes of 2 slices, and a whole 256-slice volume, scored as the
challenge scored it (its outer 50 slices at each end dropped)."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pytest

from cc359_like import challenge_scores, cpu_config
from cli_helpers import assert_ok, fastmri_scores, metrics_csv, run_cli
from mrirecon.core.plane_masks import poisson_disc_mask
from mrirecon.data.anatomy import default_sources, resolve_source
from mrirecon.data.cc359 import PLANE_SIZES, convert_scans
from mrirecon.data.simulation.cc359 import scan_kspace
from mrirecon.data.simulation.synthesis import prepare_head

pytestmark = pytest.mark.usefixtures("one_thread")


def _download(root: Path, test_slices: int, sizes=PLANE_SIZES, masks: bool = True) -> Path:
    """train/ (one 2-slice scan per size, and one more), val/ (one ``test_slices`` scan per
    size) and, with ``masks``, poisson_sampling/R{5,10}_218xW.npy of one mask each."""
    head = prepare_head(resolve_source(default_sources()[0]))
    plan = [("train", size, 2) for size in sizes] + [("train", sizes[0], 2)]
    plan += [("val", size, test_slices) for size in sizes]
    for index, (folder, size, slices) in enumerate(plan):
        path = root / "12-channel" / folder / f"e{14000 + index}s3_P{50000 + index}.7.h5"
        path.parent.mkdir(parents=True, exist_ok=True)
        with h5py.File(path, "w") as hf:
            hf.create_dataset("kspace", data=scan_kspace(head, size, slices, np.random.default_rng(index)))
    if masks:
        (root / "poisson_sampling").mkdir()
        for size in sizes:
            for acc in (5, 10):
                bank = np.stack([poisson_disc_mask(size, acc, 18.0, 0.15, seed=[acc, i]) for i in range(1)])
                np.save(root / "poisson_sampling" / f"R{acc}_{size[0]}x{size[1]}.npy", bank)
    return root


def _config(tmp_path: Path, data: Path) -> Path:
    return cpu_config(tmp_path, data, {"chans": 2, "num_pool_layers": 2, "norm_groups": 2}, batch_size=1)


def _check_zero_filled(config: Path, data: Path, split: str, out: Path) -> dict:
    """Zero-filled through `baseline` on ``split``: every volume scored as fastmri.evaluate scores it."""
    result = run_cli("baseline", "--method", "zero-filled", "--config", str(config), "--split", split,
                     "--output_dir", str(out), "--no_progress")
    assert_ok(result)
    scores = metrics_csv(out / "metrics.csv")
    for (_, acc, name), values in scores.items():
        with h5py.File(data / f"multicoil_{split}" / name, "r") as hf:
            target = hf["reconstruction_rss"][()]
        recon = out / "reconstructions" / acc / name
        reference = fastmri_scores(target, recon if recon.exists() else out / "reconstructions" / name)
        for metric in ("ssim", "psnr", "nmse"):
            assert values[metric] == pytest.approx(reference[metric], rel=1e-4), (name, acc, metric)
    return scores


@pytest.mark.slow
def test_fit_test_and_baseline_on_the_real_planes(tmp_path):
    download = _download(tmp_path / "download", test_slices=2)
    data = tmp_path / "data"
    counts = convert_scans(download, data, val_fraction=0.25)
    assert counts == {"multicoil_train": 3, "multicoil_val": 1, "multicoil_test": 3, "multicoil_test_acc05": 3,
                      "multicoil_test_acc10": 3}
    config = _config(tmp_path, data)
    fit = run_cli("fit", "--config", str(config), "--trainer.max_steps", "2")
    assert_ok(fit)
    assert "poisson2d masks 5x (calibration radius 18), 10x (calibration radius 18)" in fit.out
    ckpt = sorted((tmp_path / "runs").rglob("last.ckpt"))[0]
    result = run_cli("test", "--config", str(config), "--ckpt_path", str(ckpt), "--output_dir", str(tmp_path / "t"))
    assert_ok(result)
    rows = metrics_csv(tmp_path / "t" / "metrics.csv")
    assert {acc for _, acc, _ in rows} == {"5x", "10x"}
    assert {name for _, _, name in rows} == {p.name for p in (data / "multicoil_test").glob("*.h5")}
    result = run_cli("predict", "--config", str(config), "--ckpt_path", str(ckpt), "--data.test_split", "test_acc10",
                     "--output_dir", str(tmp_path / "p"))
    assert_ok(result)
    for path in (data / "multicoil_test_acc10").glob("*.h5"):  # flat: each file has its own mask
        with h5py.File(tmp_path / "p" / path.name, "r") as hf, h5py.File(path, "r") as source:
            assert hf["reconstruction"].shape == source["reconstruction_rss"].shape
            assert float(hf.attrs["acceleration"]) == 10
    drawn = _check_zero_filled(config, data, "test", tmp_path / "zf")
    assert {acc for _, acc, _ in drawn} == {"5x", "10x"}
    published = _check_zero_filled(config, data, "test_acc10", tmp_path / "zf10")
    assert {acc for _, acc, _ in published} == {"10x"} and len(published) == 3


@pytest.mark.slow
def test_a_whole_volume_is_scored_as_the_challenge_scored_it(tmp_path):
    download = _download(tmp_path / "download", test_slices=256, sizes=PLANE_SIZES[:1], masks=False)
    data = tmp_path / "data"
    convert_scans(download, data, val_fraction=0.5)
    config = _config(tmp_path, data)
    out = tmp_path / "zf"
    _check_zero_filled(config, data, "test", out)
    report = tmp_path / "report"
    result = run_cli("report", "--config", str(config), "--method", f"zero-filled={out}", "--protocol", "cc359",
                     "--out", str(report), "--no_progress")
    assert_ok(result)
    (name,) = [p.name for p in (data / "multicoil_test").glob("*.h5")]
    with h5py.File(data / "multicoil_test" / name, "r") as hf:
        target = hf["reconstruction_rss"][()].astype(np.float64)
    for (method, acc, fname), values in metrics_csv(report / "metrics.csv").items():
        with h5py.File(out / "reconstructions" / acc / fname, "r") as hf:
            recon = hf["reconstruction"][()].astype(np.float64)
        theirs = challenge_scores(target, recon)  # DIRECT's slice(50, -50)
        assert values["ssim"] == pytest.approx(theirs["ssim"], rel=1e-4)
        assert values["psnr"] == pytest.approx(theirs["psnr"], rel=1e-4)
