"""Each bad input gets one line naming the file and the problem, from training and from check."""

import os
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
    # Files of the formats `data convert` reads, put where converted volumes belong.
    "Calgary-Campinas scan": (lambda p: _rewrite(p, kspace=np.zeros((4, 64, 40, 24), np.float32)),
                              "is a Calgary-Campinas scan (real and imaginary parts on the last axis), not a volume of "
                              "fastMRI's layout; convert its download first: mrirecon data convert DIR --format cc359"),
    "CMRxRecon cine file": (lambda p: _rewrite(p, kspace=None, kspace_full=np.zeros((2, 2, 10, 64, 40), np.float32)),
                            "a CMRxRecon cine file (kspace_full), not a volume of fastMRI's layout; convert its download first: "
                            "mrirecon data convert DIR --format cmrxrecon"),
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
    # Values, not only shapes: each of these was once read as something else and scored.
    "mask of text": (lambda p: _rewrite(p, mask=np.array(["1"] * 38, dtype="S1")), "mask holds text, expected 0/1 or boolean values"),
    "mask of one string": (lambda p: _rewrite(p, mask="1" * 38), "mask holds text, expected 0/1 or boolean values"),
    "mask of one value": (lambda p: _rewrite(p, mask=1), "mask is a single value, expected one per k-space column, shape (38,)"),
    "mask of fractions": (lambda p: _rewrite(p, mask=np.full(38, 0.5, np.float32)), "mask holds 0.5, expected only 0/1"),
    "mask of twos": (lambda p: _rewrite(p, mask=np.full(38, 2, np.int64)), "mask holds 2, expected only 0/1"),
    "mask of other length": (lambda p: _rewrite(p, mask=np.ones(12, bool)), "mask has 12 values, kspace has 38 columns"),
    "mask of two rows": (lambda p: _rewrite(p, mask=np.ones((2, 19), bool)), "mask has shape (2, 19), expected one value per k-space column, shape (38,)"),
    "mask as a row": (lambda p: _rewrite(p, mask=np.ones((1, 38), bool)), "mask has shape (1, 38)"),
    "mask as a column": (lambda p: _rewrite(p, mask=np.ones((38, 1), bool)), "mask has shape (38, 1)"),
    "negative target": (
        lambda p: _rewrite(p, reconstruction_esc=-np.ones((4, 32, 32), np.float32)),
        "reconstruction_esc: its maximum where it is scored is -1, not positive",
    ),
    "partly negative target": (
        lambda p: _rewrite(p, reconstruction_esc=np.concatenate([-np.ones((2, 32, 32)), np.ones((2, 32, 32))]).astype(np.float32)),
        "reconstruction_esc holds negative values (minimum -1): a magnitude image is expected",
    ),
    "mask as a group": (lambda p: _group(p, "mask"), "'mask' is an HDF5 group, expected a dataset"),
    "kspace as a group": (lambda p: _group(p, "kspace"), "'kspace' is an HDF5 group, expected a dataset"),
    "target as a group": (lambda p: _group(p, "reconstruction_esc"), "'reconstruction_esc' is an HDF5 group"),
    "uint8 target": (lambda p: _retype_target(p, np.uint8), "reconstruction_esc has dtype uint8, expected floating-point"),
    "complex target": (lambda p: _retype_target(p, np.complex64), "has dtype complex64, expected floating-point"),
    "text target": (lambda p: _retype_target(p, "S4"), "has dtype |S4, expected floating-point"),
    # A label its own mask contradicts (results are grouped and named by it).
    "full mask labelled 4x": (lambda p: _masked(p, np.ones(38, bool), 4), "acceleration attribute 4 contradicts its mask, which samples"),
    "mask labelled 1e9x": (lambda p: _masked(p, np.arange(38) % 4 == 0, 1e9), "acceleration attribute 1e+09 contradicts its mask"),
    "mask labelled 1x": (lambda p: _masked(p, np.arange(38) % 4 == 0, 1), "acceleration attribute 1 contradicts its mask"),
    "full mask labelled 2x": (lambda p: _masked(p, np.ones(38, bool), 2), "acceleration attribute 2 contradicts its mask"),
    "negative acceleration": (lambda p: _attr(p, acceleration=-4), "acceleration attribute is -4, expected one finite"),
    "nan acceleration": (lambda p: _attr(p, acceleration=np.nan), "acceleration attribute is nan"),
    "acceleration below 1": (lambda p: _attr(p, acceleration=0.5), "acceleration attribute is 0.5"),
    "array acceleration": (lambda p: _attr(p, acceleration=np.array([4, 8])), "acceleration attribute is an array of shape (2,)"),
    "text acceleration": (lambda p: _attr(p, acceleration="4x"), "acceleration attribute is '4x'"),
}


def _group(path, key):
    with h5py.File(path, "r+") as hf:
        if key in hf:
            del hf[key]
        hf.create_group(key).create_dataset("data", data=np.zeros(3))


def _retype_target(path, dtype):
    with h5py.File(path, "r+") as hf:
        target = hf["reconstruction_esc"][()]
        del hf["reconstruction_esc"]
        hf.create_dataset("reconstruction_esc", data=(target * 100).astype(dtype))


def _masked(path, mask, acceleration):
    _rewrite(path, mask=mask)
    _attr(path, acceleration=acceleration)


def _attr(path, **attrs):
    with h5py.File(path, "r+") as hf:
        hf.attrs.update(attrs)


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


# --- what a split holds ---------------------------------------------------------------------------


def test_a_split_listing_one_file_twice_a_broken_link_or_a_non_volume_is_refused(tiny_singlecoil, tmp_path):
    root = _copy_dataset(tiny_singlecoil, tmp_path / "data")
    first = _first_train_file(root)
    twin = first.parent / "zz_twin.h5"
    twin.symlink_to(first)  # another name: scored twice, with a mask seeded by each name
    with pytest.raises(UserError, match=f"{twin}: the same file as {first.name}"):
        ReconDataModule(str(root), num_workers=0).setup("fit")
    twin.unlink()
    os.link(first, twin)  # a hard link is the same file too
    with pytest.raises(UserError, match="the same file as"):
        ReconDataModule(str(root), num_workers=0).setup("fit")
    twin.unlink()
    broken = first.parent / "gone.h5"
    broken.symlink_to(tmp_path / "nowhere.h5")
    with pytest.raises(UserError, match=f"{broken}: broken link"):
        ReconDataModule(str(root), num_workers=0).setup("fit")
    rows = [(p, why) for r in check_dataset(root) for p, why in r.bad]
    assert rows == [(broken, f"broken link (to {tmp_path / 'nowhere.h5'})")]
    broken.unlink()
    folder = first.parent / "unpacked.h5"
    folder.mkdir()  # skipped before: the split was scored without it
    with pytest.raises(UserError, match=f"{folder}: a folder, not a volume file"):
        ReconDataModule(str(root), num_workers=0).setup("fit")
    assert [(p, why) for r in check_dataset(root) for p, why in r.bad] == [
        (folder, "a folder, not a volume file (an HDF5 file is expected under this name)")]
    folder.rmdir()
    pipe = first.parent / "stream.h5"
    os.mkfifo(pipe)  # skipped before, as the folder was
    with pytest.raises(UserError, match=f"{pipe}: not a regular file"):
        ReconDataModule(str(root), num_workers=0).setup("fit")
    pipe.unlink()
    upper = first.rename(first.with_suffix(".H5"))
    with pytest.raises(UserError, match=f"{upper}: volumes are read as '\\*.h5'; rename it to {first.name}"):
        ReconDataModule(str(root), num_workers=0).setup("fit")
    assert [p for r in check_dataset(root) for p, _ in r.bad] == [upper]


@pytest.mark.parametrize("other", ["val", "test"])
def test_a_training_file_in_another_split_is_refused(tiny_singlecoil, tmp_path, other):
    root = _copy_dataset(tiny_singlecoil, tmp_path / "data")
    train = _first_train_file(root)
    shared = root / f"singlecoil_{other}" / "copy_of_train.h5"
    shared.symlink_to(os.path.relpath(train, shared.parent))
    stage = "fit" if other == "val" else "test"
    with pytest.raises(UserError) as err:
        ReconDataModule(str(root), num_workers=0).setup(stage)
    assert "hold the same file" in str(err.value) and "train" in str(err.value) and other in str(err.value)
    rows = [why for r in check_dataset(root) for _, why in r.bad]
    assert len(rows) == 1 and "hold the same file" in rows[0]
    shared.unlink()
    # Testing on the val folder itself is one split named twice, not an overlap.
    ReconDataModule(str(root), num_workers=0, test_split="val").setup("test")


def test_a_copy_of_a_volume_is_the_same_volume_within_a_split_and_across_splits(tiny_singlecoil, tmp_path):
    # Byte-identical copies, not links: found by their k-space, not their inode.
    root = _copy_dataset(tiny_singlecoil, tmp_path / "data")
    train = _first_train_file(root)
    twin = train.parent / "zz_copy.h5"
    shutil.copy(train, twin)
    with pytest.raises(UserError, match=f"{twin}: the same volume as {train.name} \\(identical k-space shape and middle line, a copy\\)"):
        ReconDataModule(str(root), num_workers=0).setup("fit")
    assert [(p, why.split(" (")[0]) for r in check_dataset(root) for p, why in r.bad] == [(twin, f"the same volume as {train.name}")]
    twin.unlink()
    in_val = root / "singlecoil_val" / "copy_of_train.h5"
    shutil.copy(train, in_val)
    with pytest.raises(UserError) as err:
        ReconDataModule(str(root), num_workers=0).setup("fit")
    assert str(err.value).startswith(f"{in_val}: the val split and the train split ({train}) hold the same volume "
                                     "(identical k-space shape and middle line, a copy)"), err.value
    rows = [why for r in check_dataset(root) for _, why in r.bad]
    assert len(rows) == 1 and "hold the same volume (identical k-space shape and middle line, a copy)" in rows[0]
    in_val.unlink()
    # test reads only its split but compares it with train and val by content too (their
    # fingerprints from the scan cache, or one small read per file without one).
    in_test = root / "singlecoil_test" / "copy_of_train.h5"
    shutil.copy(train, in_test)
    for use_cache in (True, False):
        with pytest.raises(UserError) as err:
            ReconDataModule(str(root), num_workers=0, use_cache=use_cache).setup("test")
        assert str(err.value).startswith(f"{in_test}: the test split and the train split ({train}) hold the same "
                                         "volume (identical k-space shape and middle line, a copy)"), err.value
    in_test.unlink()
    # Another scan of the same shape (one k-space sample changed) is another volume.
    _rewrite(shutil.copy(train, in_val), kspace=_changed_kspace(train))
    ReconDataModule(str(root), num_workers=0).setup("fit")
    assert [r.bad for r in check_dataset(root)] == [[] for _ in check_dataset(root)]


def _changed_kspace(path):
    with h5py.File(path, "r") as hf:
        kspace = hf["kspace"][()]
    kspace[kspace.shape[0] // 2, kspace.shape[1] // 2, 0] += 1e-3
    return kspace


def test_data_check_refuses_the_train_files_fit_refuses(tiny_singlecoil, tmp_path):
    root = _copy_dataset(tiny_singlecoil, tmp_path / "data")
    bad = _first_train_file(root)
    _rewrite(bad, reconstruction_esc=None)  # the header still gives a recon size: a readable file
    with pytest.raises(UserError, match="no singlecoil target, needed to train"):
        ReconDataModule(str(root), num_workers=0).setup("fit")
    rows = [(p, why) for r in check_dataset(root) for p, why in r.bad]
    # The words fit uses; a file without a target is training data only with its own mask.
    assert rows == [(bad, "no singlecoil target, needed to train or validate (or a 'mask', to train self-supervised)")]


def test_an_empty_reconstruction_size_in_a_target_less_header_is_refused(tiny_singlecoil, tmp_path):
    from xml.etree import ElementTree

    root = _copy_dataset(tiny_singlecoil, tmp_path / "data")
    test_file = sorted((root / "singlecoil_test").glob("*.h5"))[0]
    with h5py.File(test_file, "r+") as hf:
        header = ElementTree.fromstring(hf["ismrmrd_header"][()])
        for node in header.iter():
            if node.tag.endswith("reconSpace"):
                for size in node.find("{*}matrixSize"):
                    size.text = "0"
        del hf["reconstruction_esc"]
        del hf["ismrmrd_header"]
        hf["ismrmrd_header"] = ElementTree.tostring(header)
    with pytest.raises(UserError, match=f"{test_file}: reconstruction size 0x0 from the ismrmrd_header .* set data.crop_size"):
        ReconDataModule(str(root), num_workers=0).setup("test")
    ReconDataModule(str(root), num_workers=0, crop_size=(32, 32)).setup("test")  # the way out it names


def test_a_crop_size_wider_than_the_kspace_is_named_as_asked(tiny_singlecoil):
    """Wider than the k-space, the size is narrowed to its square (fastMRI's rule for narrow
    images); the refusal names what the user set as well as what it became."""
    with pytest.raises(UserError, match=r"reconstruction size 38x38 \(data.crop_size 8x4000, narrowed to the "
                                        r"k-space's 38 columns\) is larger than the target 32x32"):
        ReconDataModule(str(tiny_singlecoil), num_workers=0, crop_size=(8, 4000)).setup("fit")


def test_masks_that_could_sample_nothing_are_refused_before_training(tiny_singlecoil):
    dm = ReconDataModule(str(tiny_singlecoil), num_workers=0, accelerations=[64], center_fractions=[0.01])
    with pytest.raises(UserError, match=r"data\.center_fractions: 0\.01 at 64x keeps no centre column of 38"):
        dm.setup("fit")
