"""Each bad input gets one line naming the file and the problem, from training and from check."""

import shutil
import subprocess
import sys

import h5py
import numpy as np
import pytest

from mrirecon.data.check import check_dataset, format_report
from mrirecon.lightning.datamodule import ReconDataModule
from mrirecon.errors import UserError


def _copy_dataset(src, dst):
    shutil.copytree(src, dst)
    return dst


def _first_train_file(root):
    return sorted((root / "singlecoil_train").glob("*.h5"))[0]


def _rewrite(path, **datasets):
    with h5py.File(path, "r+") as hf:
        for key, value in datasets.items():
            if key in hf:
                del hf[key]
            if value is not None:
                hf.create_dataset(key, data=value)


def _truncate(path):
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 3])


def _garbage(path):
    path.write_bytes(b"this is not an HDF5 file\n" * 10)


def _nan(path):
    with h5py.File(path, "r+") as hf:
        k = hf["kspace"][()]
        k[1, 3, 4] = np.nan
        hf["kspace"][...] = k


CASES = {
    "unreadable": (_garbage, "not a readable HDF5 file"),
    "truncated": (_truncate, "HDF5"),
    "missing kspace": (lambda p: _rewrite(p, kspace=None), "no 'kspace' dataset"),
    "wrong ndim": (lambda p: _rewrite(p, kspace=np.zeros((2, 3, 64, 40, 1), np.complex64)), "expected 3 for singlecoil"),
    "wrong dtype": (lambda p: _rewrite(p, kspace=np.zeros((4, 64, 40), np.float32)), "expected complex64"),
    "nan": (_nan, "NaN or Inf"),
    "target taller than the k-space image": (
        lambda p: _rewrite(p, reconstruction_esc=np.ones((4, 96, 30), np.float32)),
        "larger than the k-space image",
    ),
    "target with other slice count": (
        lambda p: _rewrite(p, reconstruction_esc=np.ones((3, 32, 32), np.float32)),
        "to match kspace",
    ),
    "nan target": (lambda p: _nan_target(p), "reconstruction_esc contains NaN or Inf"),
    "zero target": (
        lambda p: _rewrite(p, reconstruction_esc=np.zeros((4, 32, 32), np.float32)),
        "zero everywhere it is scored",
    ),
    "empty mask": (lambda p: _rewrite(p, mask=np.zeros(38, np.float32)), "mask samples no column"),
}


def _nan_target(path):
    with h5py.File(path, "r+") as hf:
        t = hf["reconstruction_esc"][()]
        t[2, 5, 5] = np.inf
        hf["reconstruction_esc"][...] = t


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_file_fails_before_training_with_one_line(case, tiny_singlecoil, tmp_path):
    root = _copy_dataset(tiny_singlecoil, tmp_path / "data")
    bad = _first_train_file(root)
    damage, message = CASES[case]
    damage(bad)
    dm = ReconDataModule(str(root), num_workers=0)
    with pytest.raises(UserError) as err:
        dm.setup("fit")
    text = str(err.value)
    assert str(bad) in text and message in text and "\n" not in text

    reports = check_dataset(root)
    rows = [(p, why) for r in reports for p, why in r.bad]
    assert len(rows) == 1 and rows[0][0] == bad and message in rows[0][1]
    assert f"{bad}: " in format_report(reports)


def test_missing_and_empty_folders(tmp_path):
    with pytest.raises(UserError, match=f"{tmp_path / 'nope'}: no such data folder"):
        ReconDataModule(str(tmp_path / "nope")).setup("fit")
    (tmp_path / "empty" / "singlecoil_train").mkdir(parents=True)
    with pytest.raises(UserError, match="no .h5 volumes in this folder"):
        ReconDataModule(str(tmp_path / "empty")).setup("fit")
    with pytest.raises(UserError, match="singlecoil_val: no such folder"):
        ReconDataModule(str(tmp_path / "empty")).volumes("val")
    (tmp_path / "bare").mkdir()
    with pytest.raises(UserError, match="bare: empty"):
        check_dataset(tmp_path / "bare")


def _cli(*args):
    return subprocess.run([sys.executable, "-m", "mrirecon", *args], capture_output=True, text=True)


def test_check_cli_lists_bad_files_and_exits_non_zero(tiny_singlecoil, tmp_path):
    root = _copy_dataset(tiny_singlecoil, tmp_path / "data")
    bad = _first_train_file(root)
    _nan(bad)
    result = _cli("data", "check", str(root))
    assert result.returncode == 1
    assert "singlecoil_train" in result.stdout and f"{bad}: kspace contains NaN or Inf values" in result.stdout
    assert "Traceback" not in result.stderr

    missing = _cli("data", "check", str(tmp_path / "missing"))
    assert missing.returncode == 2
    assert missing.stderr.strip() == f"mrirecon: error: {tmp_path / 'missing'}: no such folder"


def test_check_cli_prints_summary(tiny_multicoil):
    result = _cli("data", "check", str(tiny_multicoil))
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].split()[:3] == ["folder", "volumes", "slices"]
    assert [line.split()[0] for line in lines[2:5]] == ["multicoil_train", "multicoil_val", "multicoil_test"]
    assert "reconstruction_rss" in result.stdout
