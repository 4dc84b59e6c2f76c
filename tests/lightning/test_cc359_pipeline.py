"""Calgary-Campinas from its config: fit, test, predict, baseline, report and reconstruct on a
simulated download, converted; scored as fastmri.evaluate's functions and as the challenge's
published metric code score the same reconstructions.

The download's shapes are a quarter of the real planes' (54 x 42 of 218 x 170) in the default
suite; :mod:`test_cc359_real_shapes` runs the real ones."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pytest

from cc359_like import challenge_scores, cpu_config
from cli_helpers import assert_ok, assert_user_error, fastmri_scores, metrics_csv, run_cli
from mrirecon.data.cc359 import convert_scans
from mrirecon.data.simulation.cc359 import calibration_radius_of, simulate_cc359_download

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("cc359")
    simulate_cc359_download(root / "download", width=42, slices=4, train=3, val=2, test=1, progress=False)
    convert_scans(root / "download", root / "data", val_fraction=0.34)
    return root / "data"


def _config(tmp_path: Path, data: Path) -> Path:
    return cpu_config(tmp_path, data, {"chans": 4, "num_pool_layers": 2, "norm_groups": 2}, batch_size=2,
                      calibration_radius=round(calibration_radius_of(42), 2))


def _targets(folder: Path) -> dict[str, np.ndarray]:
    out = {}
    for path in sorted(folder.glob("*.h5")):
        with h5py.File(path, "r") as hf:
            out[path.name] = hf["reconstruction_rss"][()]
    return out


def test_the_config_trains_tests_predicts_and_reports(dataset, tmp_path):
    config = _config(tmp_path, dataset)
    fit = run_cli("fit", "--config", str(config), "--trainer.max_steps", "2")
    assert_ok(fit)
    assert "poisson2d masks 5x (calibration radius 4.45), 10x (calibration radius 4.45)" in fit.out
    ckpt = sorted((tmp_path / "runs").rglob("last.ckpt"))[0]

    # test on the fully sampled test split: the config's own 2-D masks, fixed by file name.
    result = run_cli("test", "--config", str(config), "--ckpt_path", str(ckpt), "--output_dir", str(tmp_path / "t"))
    assert_ok(result)
    rows = metrics_csv(tmp_path / "t" / "metrics.csv")
    assert {acc for _, acc, _ in rows} == {"5x", "10x"}

    # The challenge's masks (stored in the files): scored as fastmri.evaluate and the challenge score them.
    targets = _targets(dataset / "multicoil_test_acc05")
    zero_filled = tmp_path / "zf"
    result = run_cli("baseline", "--method", "zero-filled", "--config", str(config), "--split", "test_acc05",
                     "--output_dir", str(zero_filled), "--no_progress")
    assert_ok(result)
    scores = metrics_csv(zero_filled / "metrics.csv")
    assert {acc for _, acc, _ in scores} == {"5x"} and len(scores) == len(targets)
    for (_, acc, name), values in scores.items():
        reference = fastmri_scores(targets[name], zero_filled / "reconstructions" / name)  # flat: own masks
        for metric in ("ssim", "psnr", "nmse"):
            assert values[metric] == pytest.approx(reference[metric], rel=1e-4), (name, metric)

    report = tmp_path / "report"
    result = run_cli("report", "--config", str(config), "--split", "test_acc05", "--method", f"unet={ckpt}",
                     "--method", f"zero-filled={zero_filled}", "--protocol", "cc359", "--out", str(report),
                     "--no_progress")
    assert_ok(result)
    text = (report / "report.md").read_text()
    assert "Scored as the Calgary-Campinas challenge" in text
    per_volume = metrics_csv(report / "metrics.csv")
    for (method, acc, name), values in per_volume.items():
        if method != "zero-filled":
            continue
        with h5py.File(zero_filled / "reconstructions" / name, "r") as hf:
            recon = hf["reconstruction"][()]
        theirs = challenge_scores(targets[name].astype(np.float64), recon.astype(np.float64), outer=1)
        assert values["ssim"] == pytest.approx(theirs["ssim"], rel=1e-4)
        assert values["psnr"] == pytest.approx(theirs["psnr"], rel=1e-4)

    # The 5x reconstructions are not the 10x split's, though their volumes share names.
    refused = run_cli("report", "--config", str(config), "--split", "test_acc10", "--method", f"zf={zero_filled}",
                      "--out", str(tmp_path / "wrong"), "--no_progress")
    assert_user_error(refused, "at 5x, but its file is undersampled at 10x")

    # The challenge's test sets: predict only, each file with the mask recovered from its zeros.
    result = run_cli("predict", "--config", str(config), "--ckpt_path", str(ckpt), "--data.test_split", "testset_acc10",
                     "--output_dir", str(tmp_path / "p"))
    assert_ok(result)
    (written,) = sorted((tmp_path / "p").rglob("*.h5"))
    with h5py.File(written, "r") as hf:
        assert hf["reconstruction"].shape == (4, 54, 42) and float(hf.attrs["acceleration"]) == 10

    # reconstruct takes a file's own 2-D mask; adaptation (which splits columns) is refused.
    test_file = sorted((dataset / "multicoil_test_acc05").glob("*.h5"))[0]
    result = run_cli("reconstruct", str(test_file), "--ckpt_path", str(ckpt), "--out", str(tmp_path / "r"))
    assert_ok(result)
    with h5py.File(tmp_path / "r" / test_file.name, "r") as hf:
        assert hf["reconstruction"].shape == (4, 54, 42)
    refused = run_cli("reconstruct", str(test_file), "--ckpt_path", str(ckpt), "--out", str(tmp_path / "r2"),
                      "--adapt_steps", "1")
    assert_user_error(refused, "adaptation splits column masks only")
    assert not (tmp_path / "r2").exists()
    # A scan of the download itself (real and imaginary parts on the last axis) points to the converter.
    raw = sorted((dataset.parent / "download").rglob("*.h5"))[0]
    refused = run_cli("reconstruct", str(raw), "--ckpt_path", str(ckpt), "--out", str(tmp_path / "r3"))
    assert_user_error(refused, f"{raw}: kspace", "is a Calgary-Campinas scan", "mrirecon data convert DIR --format cc359")
    assert not (tmp_path / "r3").exists()


def test_the_cc359_protocol_refuses_a_crop(dataset, tmp_path):
    config = _config(tmp_path, dataset)
    result = run_cli("report", "--config", str(config), "--method", f"x={tmp_path}", "--protocol", "cc359",
                     "--data.crop_size", "[32, 32]", "--out", str(tmp_path / "rep"))
    assert_user_error(result, "--protocol cc359: scores the whole image itself")
