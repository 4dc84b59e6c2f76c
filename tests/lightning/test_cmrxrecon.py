"""fit, test, predict and baseline on a converted CMRxRecon cine download with its real layout,
keys and types, from configs/cmrxrecon_multicoil_unet.yaml, scored as fastmri.evaluate scores
them against references computed as the organisers' loadFun.py computes them; and the test
patients with the organisers' own masks (``test_split test_acc04``).

The download's shapes (10 coils, 12 frames, 24 calibration lines; 512 x 246 short axis, 448 x 204
long axis, 3 long-axis views) at a quarter of the image size in the default suite, at full size
in slow (with 2 short-axis slices, not 10, to keep its disk use near 3 GB)."""

from __future__ import annotations

import h5py
import pytest
import yaml

from cli_helpers import REPO, assert_ok, fastmri_scores, metrics_csv, run_baseline, run_cli
from cmrxrecon_like import organisers_calmetric, organisers_images, organisers_ranking_images, write_cine_tree
from mrirecon.data.cmrxrecon import convert_cine

pytestmark = pytest.mark.usefixtures("one_thread")

SIZES = {"scale4": {"cine_sax": (128, 62, 4), "cine_lax": (112, 52, 3)},
         "scale1": {"cine_sax": (512, 246, 2), "cine_lax": (448, 204, 3)}}


@pytest.fixture(scope="module", params=["scale4", pytest.param("scale1", marks=pytest.mark.slow), "simulated"])
def converted(request, tmp_path_factory):
    root = tmp_path_factory.mktemp(request.param)
    if request.param == "simulated":
        # What a newcomer runs offline: mrirecon data simulate --format cmrxrecon, then convert.
        download = root / "download"
        assert_ok(run_cli("data", "simulate", "--format", "cmrxrecon", "--out", download, "--no_progress"))
        assert_ok(run_cli("data", "convert", download, "--format", "cmrxrecon", "--out", root / "data",
                          "--val_fraction", "0.25", "--test_fraction", "0.25"))
        return download, root / "data"
    download = write_cine_tree(root / "download", patients=3, sizes=SIZES[request.param], accelerations=(4,),
                               validation_patients=1)
    convert_cine(download, root / "data", "multicoil", val_fraction=0.34, test_fraction=0.34, seed=0)
    return download, root / "data"


def _config(path, data, runs):
    config = yaml.safe_load((REPO / "configs" / "cmrxrecon_multicoil_unet.yaml").read_text())
    config["trainer"].update(accelerator="cpu", precision="32", benchmark=False, max_epochs=1, limit_train_batches=3,
                             limit_val_batches=2, log_every_n_steps=1, enable_progress_bar=False, enable_model_summary=False)
    config["trainer"]["logger"]["init_args"]["save_dir"] = str(runs)
    config["model"]["net"]["init_args"].update(chans=4, num_pool_layers=2, norm_groups=2)
    config["model"]["num_log_images"] = 1
    config["data"].update(data_path=str(data), num_workers=0, transform_on_device=False, batch_size=4)
    path.write_text(yaml.safe_dump(config))
    return path


def _references(download, split_folder):
    """Each test volume's reference as the organisers compute it, stacked slice z * frames + t."""
    import numpy as np

    references = {}
    for volume in sorted(split_folder.glob("*.h5")):
        patient, view = volume.stem.split("_", 1)
        images = organisers_images(download / "MultiCoil" / "Cine" / "TrainingSet" / "FullSample" / patient / f"{view}.mat",
                                   "kspace_full")
        references[volume.name] = np.ascontiguousarray(images.transpose(2, 3, 0, 1).reshape(-1, *images.shape[:2]))
    return references


def _as_matlab(stack, slices):
    """A converted volume's images (slice z * frames + t) as MATLAB's (kx, ky, slices, frames)."""
    return stack.reshape(slices, -1, *stack.shape[1:]).transpose(2, 3, 0, 1)


def test_fit_test_predict_baseline_on_cmrxrecon(converted, tmp_path):
    download, data = converted
    config = _config(tmp_path / "cmrx.yaml", data, tmp_path / "runs")
    assert_ok(run_cli("fit", "--config", config))
    ckpt = tmp_path / "runs" / "cmrxrecon_multicoil_unet" / "version_0" / "checkpoints" / "last.ckpt"
    references = _references(download, data / "multicoil_test")
    for split, accelerations in (("test", ("4x", "8x", "10x")), ("test_acc04", ("4x",))):
        test_out, predictions = tmp_path / f"test_{split}", tmp_path / f"predict_{split}"
        assert_ok(run_cli("test", "--config", config, "--ckpt_path", ckpt, "--output_dir", test_out, "--data.test_split", split))
        assert_ok(run_cli("predict", "--config", config, "--ckpt_path", ckpt, "--output_dir", predictions,
                          "--data.test_split", split))
        ours = {key: v for key, v in metrics_csv(test_out / "metrics.csv").items() if key[0] == "unet"}
        assert {(acc, name) for _, acc, name in ours} == {(acc, name) for acc in accelerations for name in references}
        for (_, acc, name), values in ours.items():
            # Files with their own masks (the organisers') are written flat, as fastMRI's leaderboard wants them.
            recon = predictions / name if split == "test_acc04" else predictions / acc / name
            reference = fastmri_scores(references[name], recon)
            for metric in ("ssim", "psnr", "nmse"):
                assert values[metric] == pytest.approx(reference[metric], abs=1e-4), (split, name, acc, metric)

    # The challenge's own ranking of the same predictions: report --protocol cmrxrecon equals the
    # organisers' run4Ranking.m + Evaluation.py on the reconstructions as MATLAB arrays.
    report = tmp_path / "ranking"
    assert_ok(run_cli("report", "--config", config, "--method", f"unet={tmp_path / 'predict_test_acc04'}",
                      "--split", "test_acc04", "--protocol", "cmrxrecon", "--out", report, "--no_progress"))
    ranked = metrics_csv(report / "metrics.csv")
    assert {name for _, _, name in ranked} == set(references)
    for (_, acc, name), values in ranked.items():
        with h5py.File(tmp_path / "predict_test_acc04" / name) as hf:
            recon = hf["reconstruction"][()]
        with h5py.File(data / "multicoil_test_acc04" / name) as hf:
            slices = int(hf.attrs["cine_slices"])
        psnr, ssim, nmse = organisers_calmetric(organisers_ranking_images(_as_matlab(recon, slices)),
                                                organisers_ranking_images(_as_matlab(references[name], slices)))
        assert (values["ssim"], values["psnr"], values["nmse"]) == pytest.approx((ssim, psnr, nmse), rel=1e-4), name
    assert "CMRxRecon 2023 leaderboard" in (report / "report.md").read_text()
    cropped = run_cli("report", "--config", config, "--method", f"unet={tmp_path / 'predict_test_acc04'}",
                      "--split", "test_acc04", "--protocol", "cmrxrecon", "--out", tmp_path / "cropped",
                      "--data.crop_size", "[64, 32]")
    assert cropped.code == 2 and "--protocol cmrxrecon: scores the whole image itself" in cropped.err

    baseline = run_baseline("zero-filled", config, tmp_path / "zf")
    zero_filled = metrics_csv(baseline / "metrics.csv")
    assert {(m, a) for m, a, _ in zero_filled} == {("zero-filled", a) for a in ("4x", "8x", "10x")}
    for (_, acc, name), values in zero_filled.items():
        reference = fastmri_scores(references[name], baseline / "reconstructions" / acc / name)
        assert values["ssim"] == pytest.approx(reference["ssim"], abs=1e-4)
        assert values["psnr"] == pytest.approx(reference["psnr"], abs=1e-4)

    # The validation set (no references): predicted with its own masks, flat, nothing scored.
    out = tmp_path / "validation"
    assert_ok(run_cli("predict", "--config", config, "--ckpt_path", ckpt, "--output_dir", out,
                      "--data.test_split", "validation_acc04"))
    assert sorted(p.name for p in out.iterdir()) == ["P001_cine_lax.h5", "P001_cine_sax.h5"]
