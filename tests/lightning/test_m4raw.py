"""fit, test, predict, baseline and report on files with M4Raw's real shapes, keys and header,
from configs/m4raw_multicoil_unet.yaml, scored as fastmri.evaluate scores them; and the
repetition targets (``data.repetitions``) against an independent average.

M4Raw's shapes (18 slices, 4 coils, 256 x 256, its header's phase-encode limits) at a quarter
of the size in the default suite, at full size in the slow one."""

from __future__ import annotations

import csv
import shutil
from collections import defaultdict
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
import yaml

from cli_helpers import REPO, assert_ok, assert_user_error, fastmri_scores, metrics_csv, run_baseline, run_cli
from fastmri_like import write_m4raw, write_volume
from mrirecon.data.simulate import simulate_dataset

# Files with M4Raw's real shapes at a quarter and (slow) at full size, and a small dataset of
# `mrirecon data simulate --format m4raw` (32 x 32, 18 slices, 4 coils).
SOURCES = ["scale4", pytest.param("scale1", marks=pytest.mark.slow), "simulated"]
ACCELERATIONS = ("2x", "3x")


# One torch thread for the whole module (module-scoped, in conftest.py).
pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module", params=SOURCES)
def m4raw(request, tmp_path_factory):
    root = tmp_path_factory.mktemp(request.param) / "m4raw"
    if request.param == "simulated":
        simulate_dataset(root, format="m4raw", recon_size=32, progress=False)
        return root
    return write_m4raw(root, scale=int(request.param[len("scale"):]))


def _first_subject(root: Path, split: str) -> str:
    return sorted(p.name.split("_")[0] for p in (root / f"multicoil_{split}").glob("*.h5"))[0]


def _config(path: Path, data: Path, runs: Path, repetitions: str = "separate") -> Path:
    """The shipped M4Raw config, made small enough for a CPU test."""
    config = yaml.safe_load((REPO / "configs" / "m4raw_multicoil_unet.yaml").read_text())
    config["trainer"].update(accelerator="cpu", precision="32", benchmark=False, max_epochs=1, limit_train_batches=4,
                             log_every_n_steps=1, enable_progress_bar=False, enable_model_summary=False)
    config["trainer"]["logger"]["init_args"]["save_dir"] = str(runs)
    config["model"]["net"]["init_args"].update(chans=4, num_pool_layers=2, norm_groups=2)
    config["model"]["num_log_images"] = 2
    config["data"].update(data_path=str(data), num_workers=0, transform_on_device=False, batch_size=2,
                          repetitions=repetitions)
    path.write_text(yaml.safe_dump(config))
    return path


def _targets(split: Path, average: bool) -> dict[str, np.ndarray]:
    """Each file's reference, computed here from the files alone: its own RSS, or the mean of its
    subject's RSS images of that contrast (M4Raw's tutorial averages them the same way)."""
    own = {}
    for path in sorted(split.glob("*.h5")):
        with h5py.File(path) as hf:
            own[path.name] = hf["reconstruction_rss"][()].astype(np.float64)
    if not average:
        return own
    groups = defaultdict(list)
    for name in own:
        groups[name[:-len("01.h5")]].append(name)
    return {name: np.mean([own[n] for n in groups[name[:-len("01.h5")]]], axis=0).astype(np.float32) for name in own}


def _assert_fastmri_scores(metrics: dict, method: str, reconstructions: Path, targets: dict[str, np.ndarray]) -> None:
    for acc in ACCELERATIONS:
        for name, target in targets.items():
            reference = fastmri_scores(target, reconstructions / acc / name)
            for metric in ("ssim", "psnr", "nmse"):
                assert metrics[(method, acc, name)][metric] == pytest.approx(reference[metric], abs=1e-4), (
                    method, name, acc, metric)


# Each target rule once per source in the default suite (the default suite's 5 minutes); every
# pairing in slow.
@pytest.mark.parametrize("m4raw,repetitions", [
    ("scale4", "separate"), ("simulated", "average"),
    pytest.param("scale4", "average", marks=pytest.mark.slow), pytest.param("simulated", "separate", marks=pytest.mark.slow),
    pytest.param("scale1", "separate", marks=pytest.mark.slow), pytest.param("scale1", "average", marks=pytest.mark.slow),
], indirect=["m4raw"])
def test_fit_test_predict_baseline_report_on_m4raw_shapes(m4raw, repetitions, tmp_path):
    config = _config(tmp_path / "m4raw.yaml", m4raw, tmp_path / "runs", repetitions)
    assert_ok(run_cli("fit", "--config", config))
    ckpt = tmp_path / "runs" / "m4raw_multicoil_unet" / "version_0" / "checkpoints" / "last.ckpt"
    assert ckpt.is_file()

    test_out, predictions = tmp_path / "test", tmp_path / "predict"
    assert_ok(run_cli("test", "--config", config, "--ckpt_path", ckpt, "--output_dir", test_out))
    assert_ok(run_cli("predict", "--config", config, "--ckpt_path", ckpt, "--output_dir", predictions))
    targets = _targets(m4raw / "multicoil_test", average=repetitions == "average")
    ours = metrics_csv(test_out / "metrics.csv")
    assert {(acc, name) for _, acc, name in ours} == {(acc, name) for acc in ACCELERATIONS for name in targets}
    _assert_fastmri_scores(ours, "unet", predictions, targets)
    if repetitions == "average":
        # The averaged reference is not each file's own: scored against its own, the volumes of
        # a group score otherwise, by far more than the tolerance (so the comparison can fail).
        own = _targets(m4raw / "multicoil_test", average=False)
        name = f"{_first_subject(m4raw, 'test')}_T201.h5"
        against_own = fastmri_scores(own[name], predictions / "2x" / name)
        assert max(abs(against_own[m] - ours[("unet", "2x", name)][m]) for m in ("ssim", "psnr")) > 1e-3

    # The zero-filled baseline on the same files and settings, scored the same way.
    baseline = run_baseline("zero-filled", config, tmp_path / "zf")
    zero_filled = metrics_csv(baseline / "metrics.csv")
    _assert_fastmri_scores(zero_filled, "zero-filled", baseline / "reconstructions", targets)

    # report scores the folders against the same references as test.
    out = tmp_path / "report"
    assert_ok(run_cli("report", "--config", config, "--method", f"unet={predictions}", "--method", f"zf={baseline}",
                      "--out", out, "--no-progress"))
    rows = {(r["method"], r["acceleration"]): r for r in csv.DictReader(open(out / "report.csv"))}
    for name, method, metrics in (("unet", "unet", ours), ("zf", "zero-filled", zero_filled)):
        for acc in ACCELERATIONS:
            ssims = [v["ssim"] for (m, a, _), v in metrics.items() if (m, a) == (method, acc)]
            assert float(rows[(name, acc)]["ssim_mean"]) == pytest.approx(np.mean(ssims), abs=1e-5)


def test_training_on_pairs_of_repetitions(m4raw, tmp_path):
    # Noise2Noise: every training file's target is another repetition's; val keeps its own.
    from mrirecon.lightning.datamodule import ReconDataModule

    dm = ReconDataModule(str(m4raw), challenge="multicoil", repetitions="pairs", num_workers=0, use_cache=False,
                         mask_type="equispaced_fraction", center_fractions=[0.1171875], accelerations=[2])
    subject, folder = _first_subject(m4raw, "train"), m4raw / "multicoil_train"
    train = {info.path.name: info for info in dm.volumes("train")}
    assert train[f"{subject}_T101.h5"].target_files == (folder / f"{subject}_T102.h5",)
    assert train[f"{subject}_T103.h5"].target_files == (folder / f"{subject}_T101.h5",)
    assert train[f"{subject}_FLAIR02.h5"].target_files == (folder / f"{subject}_FLAIR01.h5",)
    assert all(not info.target_files for info in dm.volumes("val"))
    dataset = dm.dataset("train", train=True)
    index = next(i for i, (v, s, _) in enumerate(dataset.items) if dataset.volumes[v].path.name == f"{subject}_T101.h5" and s == 5)
    sample = dataset[index]
    with h5py.File(folder / f"{subject}_T102.h5") as hf:
        partner = torch.from_numpy(hf["reconstruction_rss"][5])
    assert torch.equal(sample.target, partner)
    assert sample.max_value == pytest.approx(train[f"{subject}_T101.h5"].target_max[f"{partner.shape[0]}x{partner.shape[1]}"])

    config = _config(tmp_path / "pairs.yaml", m4raw, tmp_path / "runs", "pairs")
    assert_ok(run_cli("fit", "--config", config))


def test_a_subject_in_two_splits_is_refused(m4raw, tmp_path):
    data = tmp_path / "leak"
    shutil.copytree(m4raw, data)
    # Another scan (its own content) of a training subject, in the test split.
    subject = _first_subject(m4raw, "train")
    write_volume(data / "multicoil_test" / f"{subject}_T104.h5", slices=18, coils=4, shape=(64, 64), target=(64, 64),
                 seed=999, amplitude=1.0)
    config = _config(tmp_path / "c.yaml", data, tmp_path / "runs")
    assert_user_error(run_cli("fit", "--config", config), f"{subject}_T104.h5",
                      f"subject {subject} is in the test split and in the train split")
    check = run_cli("data", "check", data)
    assert check.code == 1 and f"{subject}_T104.h5: subject {subject} is in the multicoil_test split" in check.out


def test_repetition_targets_need_m4raw_names(m4raw, tmp_path):
    data = tmp_path / "renamed"
    shutil.copytree(m4raw, data)
    (data / "multicoil_val" / f"{_first_subject(m4raw, 'val')}_T101.h5").rename(data / "multicoil_val" / "scan.h5")
    config = _config(tmp_path / "c.yaml", data, tmp_path / "runs", "average")
    assert_user_error(run_cli("fit", "--config", config), "scan.h5: not named like M4Raw's repetitions")
    assert_user_error(run_cli("fit", "--config", config, "--data.repetitions", "mean"), "data.repetitions")


def test_bad_m4raw_files_are_one_line(m4raw, tmp_path):
    # The same checks as fastMRI's files get: a truncated file, a repetition without its target
    # in a training split, an unreadable header.
    cases = {
        "truncated": lambda p: p.write_bytes(p.read_bytes()[: p.stat().st_size // 3]),
        "no target": lambda p: _without(p, "reconstruction_rss"),
        "bad header": lambda p: _replace(p, "ismrmrd_header", b"<ns0:ismrmrdHeader"),
    }
    for case, damage in cases.items():
        data = tmp_path / case.replace(" ", "_")
        shutil.copytree(m4raw, data)
        victim = data / "multicoil_train" / f"{_first_subject(m4raw, 'train')}_T102.h5"
        damage(victim)
        config = _config(tmp_path / f"{victim.stem}.yaml", data, tmp_path / "runs", "average")
        line = assert_user_error(run_cli("fit", "--config", config, "--data.use_cache", "false"), str(victim))
        assert {"truncated": "HDF5", "no target": "no multicoil target", "bad header": "unreadable ismrmrd_header"}[case] in line
        assert not (tmp_path / "runs").exists()


def _without(path: Path, key: str) -> None:
    with h5py.File(path, "a") as hf:
        del hf[key]


def _replace(path: Path, key: str, value: bytes) -> None:
    with h5py.File(path, "a") as hf:
        del hf[key]
        hf.create_dataset(key, data=value)
