"""CMRxRecon 2023 cine: the reader and the converter, against the organisers' own conventions
(:func:`cmrxrecon_like.organisers_images`, their ``Evaluation/loadFun.py`` written out)."""

from __future__ import annotations

import shutil

import h5py
import numpy as np
import pytest

from cmrxrecon_like import organisers_images, write_cine_tree, write_mat
from mrirecon.data.cmrxrecon import convert_cine, find_cine_files, read_cine_kspace, read_cine_mask, split_patients
from mrirecon.data.volumes import read_volume_info
from mrirecon.errors import UserError

SMALL = {"cine_sax": (128, 62, 4), "cine_lax": (112, 52, 3)}  # a quarter of the tests' full sizes


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    return write_cine_tree(tmp_path_factory.mktemp("cmrx") / "download", patients=3, sizes=SMALL, accelerations=(4, 8))


@pytest.mark.parametrize("challenge", ["multicoil", "singlecoil"])
def test_converted_volumes_equal_the_organisers_images_slice_by_slice(tmp_path, challenge):
    root = write_cine_tree(tmp_path / "download", patients=3, sizes=SMALL, challenge=challenge, validation_patients=1,
                           accelerations=(4,))
    counts = convert_cine(root, tmp_path / "data", challenge, val_fraction=0.34, test_fraction=0.34, seed=0)
    assert counts == {f"{challenge}_train": 2, f"{challenge}_val": 2, f"{challenge}_test": 2,
                      f"{challenge}_test_acc04": 2, f"{challenge}_validation_acc04": 2}
    key = "reconstruction_rss" if challenge == "multicoil" else "reconstruction_esc"
    full_key = "kspace_full" if challenge == "multicoil" else "kspace_single_full"
    for volume in sorted((tmp_path / "data").glob(f"{challenge}_t*/*.h5")):
        patient, view = volume.stem.split("_", 1)
        source = root / ("MultiCoil" if challenge == "multicoil" else "SingleCoil") / "Cine" / "TrainingSet" / "FullSample" / patient / f"{view}.mat"
        expected = organisers_images(source, full_key, challenge)
        with h5py.File(volume) as hf:
            target = hf[key][()]
            slices, frames = int(hf.attrs["cine_slices"]), int(hf.attrs["cine_frames"])
            assert hf.attrs["acquisition"] == view
            kspace_shape = hf["kspace"].shape
        assert (slices, frames) == (SMALL[view][2], 12)
        kx, ky = SMALL[view][:2]
        assert kspace_shape == ((slices * frames, 10, kx, ky) if challenge == "multicoil" else (slices * frames, kx, ky))
        for z in range(slices):
            for t in range(frames):
                np.testing.assert_allclose(target[z * frames + t], expected[:, :, z, t], rtol=0,
                                           atol=1e-4 * expected.max())
        info = read_volume_info(volume, challenge)
        assert info.target_shape == (kx, ky) and info.padding == (0, ky)
        if "acc04" in volume.parent.name:
            assert info.fixed_mask is not None and info.acceleration == 4
            mask = np.asarray(info.fixed_mask)
            assert mask[ky // 2 - 12: ky // 2 + 12].all() and mask[::4].all()
            assert mask.sum() == len(set(range(0, ky, 4)) | set(range(ky // 2 - 12, ky // 2 + 12)))


def test_validation_files_have_masks_and_no_target(tree, tmp_path):
    convert_cine(tree, tmp_path / "data", val_fraction=0.34, test_fraction=0.34)
    files = sorted((tmp_path / "data" / "multicoil_validation_acc08").glob("*.h5"))
    assert [f.name for f in files] == ["P001_cine_lax.h5", "P001_cine_sax.h5"]
    for f in files:
        info = read_volume_info(f, "multicoil")
        assert info.target_key is None and info.acceleration == 8 and info.target_shape == SMALL[f.stem.split("_", 1)[1]][:2]
        with h5py.File(f) as hf:
            kspace = hf["kspace"][()]
        assert not kspace[..., ~np.asarray(info.fixed_mask)].any()


def test_patients_are_split_whole_and_seeded():
    patients = [f"P{i:03d}" for i in range(1, 21)]
    first = split_patients(patients, 0.1, 0.2, seed=0)
    assert first == split_patients(patients, 0.1, 0.2, seed=0) != split_patients(patients, 0.1, 0.2, seed=1)
    assert sorted(first.values()).count("val") == 2 and sorted(first.values()).count("test") == 4
    with pytest.raises(UserError, match="leave no training patient"):
        split_patients(patients, 0.5, 0.5, 0)
    with pytest.raises(UserError, match="--val_fraction: must lie in"):
        split_patients(patients, -0.1, 0.1, 0)


def test_bad_cmrxrecon_files_are_one_line(tree, tmp_path):
    with pytest.raises(UserError, match="no CMRxRecon cine files"):
        find_cine_files(tmp_path, "multicoil")
    path = tmp_path / "x.mat"
    write_mat(path, {"kspace_full": np.zeros((4, 4, 2, 1), dtype=np.complex64)})
    with pytest.raises(UserError, match=r"'kspace_full' has 4 dimensions, expected 5 \(kx, ky, coils, slices, frames\)"):
        read_cine_kspace(path, "kspace_full", "multicoil")
    with pytest.raises(UserError, match=r"no 'kspace_sub04' variable \(it holds kspace_full\)"):
        read_cine_kspace(path, "kspace_sub04", "multicoil")
    write_mat(path, {"kspace_full": np.ones((4, 4, 2, 1, 1))})
    with pytest.raises(UserError, match="expected complex values"):
        read_cine_kspace(path, "kspace_full", "multicoil")
    bad = np.full((4, 4, 2, 1, 1), np.nan, dtype=np.complex64)
    write_mat(path, {"kspace_full": bad})
    with pytest.raises(UserError, match="contains NaN or Inf"):
        read_cine_kspace(path, "kspace_full", "multicoil")
    path.write_text("not a mat file")
    with pytest.raises(UserError, match="not a MATLAB v7.3 .HDF5. file"):
        read_cine_kspace(path, "kspace_full", "multicoil")
    mask = tmp_path / "m.mat"
    uneven = np.ones((6, 8))
    uneven[0, 1] = 0
    write_mat(mask, {"mask04": uneven})
    with pytest.raises(UserError, match="differs along kx"):
        read_cine_mask(mask, 4, 6, 8)
    with pytest.raises(UserError, match=r"has shape \(6, 8\) \(kx, ky\), the k-space \(8, 8\)"):
        read_cine_mask(mask, 4, 8, 8)
    write_mat(mask, {"mask04": np.full((6, 8), 0.5)})
    with pytest.raises(UserError, match="values other than 0 and 1"):
        read_cine_mask(mask, 4, 6, 8)
    with pytest.raises(UserError, match="no such mask file"):
        read_cine_mask(tmp_path / "none.mat", 4, 6, 8)


def test_data_check_reports_a_download_and_data_convert_writes_the_dataset(tree, tmp_path):
    from cli_helpers import assert_ok, assert_user_error, run_cli

    result = run_cli("data", "check", tree)
    assert_ok(result)
    rows = {line.split()[0]: line.split() for line in result.out.splitlines() if line.startswith("MultiCoil/")}
    assert rows["MultiCoil/Cine/TrainingSet/FullSample"][1:4] == ["6", "3", "112x52,"]
    assert rows["MultiCoil/Cine/ValidationSet/AccFactor08"][1:3] == ["2", "1"]
    assert "mrirecon data convert" in result.out

    out = tmp_path / "data"
    result = run_cli("data", "convert", tree, "--format", "cmrxrecon", "--out", out, "--val_fraction", 0.34,
                     "--test_fraction", 0.34)
    assert_ok(result)
    assert "multicoil_train 2, multicoil_val 2" in result.out
    assert_ok(run_cli("data", "check", out))
    assert_user_error(run_cli("data", "convert", tree, "--format", "cmrxrecon", "--out", tree / "inside"),
                      "inside the download")
    assert_user_error(run_cli("data", "convert", tmp_path / "nowhere", "--format", "cmrxrecon", "--out", tmp_path / "o"),
                      "nowhere: no such folder")
    assert not (tmp_path / "o").exists()

    # A damaged file is named by check, and convert stops on it leaving nothing.
    broken = tmp_path / "broken"
    shutil.copytree(tree, broken)
    victim = broken / "MultiCoil" / "Cine" / "ValidationSet" / "AccFactor04" / "P001" / "cine_sax_mask.mat"
    write_mat(victim, {"mask04": np.full((128, 62), 0.5)})
    result = run_cli("data", "check", broken)
    assert result.code == 1 and "values other than 0 and 1" in result.out
    assert_user_error(run_cli("data", "convert", broken, "--format", "cmrxrecon", "--out", tmp_path / "o2"),
                      "cine_sax_mask.mat", "values other than 0 and 1")
    assert not (tmp_path / "o2").exists() and not list(tmp_path.glob(".o2*"))


def test_a_simulated_download_has_the_tree_files_and_masks_of_the_real_one(tmp_path):
    from cli_helpers import assert_user_error, run_cli
    from mrirecon.data.cmrxrecon import check_cine_tree, read_cine_kspace, read_cine_mask
    from mrirecon.data.simulation.cine import simulate_cine_download

    download = tmp_path / "download"
    simulate_cine_download(download, recon_size=16, patients=2, validation_patients=1, progress=False)
    rows, bad = check_cine_tree(download, "multicoil")
    assert not bad and len(rows) == 7  # TrainingSet: FullSample and 3 accelerations; ValidationSet: 3
    full, slices, frames = read_cine_kspace(download / "MultiCoil/Cine/TrainingSet/FullSample/P002/cine_sax.mat",
                                            "kspace_full", "multicoil")
    assert full.shape == (4 * 12, 10, 32, 16) and (slices, frames) == (4, 12)
    sub, _, _ = read_cine_kspace(download / "MultiCoil/Cine/TrainingSet/AccFactor08/P002/cine_sax.mat",
                                 "kspace_sub08", "multicoil")
    mask = read_cine_mask(download / "MultiCoil/Cine/TrainingSet/AccFactor08/P002/cine_sax_mask.mat", 8, 32, 16)
    lines = np.asarray(mask).reshape(-1, 16)[0].astype(bool)
    assert 2 <= lines.sum() <= 16 / 8 + 2 and lines[7] and lines[8]  # every 8th line and the central band
    np.testing.assert_array_equal(sub, full * lines)
    # Seeded: the same call writes the same k-space.
    again = tmp_path / "again"
    simulate_cine_download(again, recon_size=16, patients=2, validation_patients=1, progress=False)
    np.testing.assert_array_equal(read_cine_kspace(again / "MultiCoil/Cine/TrainingSet/FullSample/P002/cine_sax.mat",
                                                   "kspace_full", "multicoil")[0], full)
    assert_user_error(run_cli("data", "simulate", "--format", "cmrxrecon", "--out", download), f"{download}: exists already")
    assert_user_error(run_cli("data", "simulate", "--format", "cmrxrecon", "--out", tmp_path / "n", "--preset", "demo"),
                      "--preset: not for --format cmrxrecon")
    assert_user_error(run_cli("data", "simulate", "--format", "cmrxrecon", "--out", tmp_path / "n", "--recon_size", "17"),
                      "recon_size 17: even")
    assert not (tmp_path / "n").exists()


def test_masks_are_read_by_their_spacing_and_logical_masks_are_accepted(tree, tmp_path):
    """Fourth battery (2026-12-05): an 8x mask filed as AccFactor04 converted as 4x; a logical
    (bool) mask was refused as not 0/1."""
    from cmrxrecon_like import uniform_mask

    path = tmp_path / "m.mat"
    write_mat(path, {"mask04": uniform_mask(16, 62, 8), "mask08": uniform_mask(16, 62, 8)})
    with pytest.raises(UserError, match=r"'mask04' samples every 8th line outside its central ones: a mask for 8x, "
                                        r"filed as AccFactor04"):
        read_cine_mask(path, 4, 16, 62)
    assert read_cine_mask(path, 8, 16, 62).sum() == uniform_mask(16, 62, 8)[0].sum()
    with h5py.File(path, "w") as hf:
        hf["mask10"] = uniform_mask(16, 62, 10).T.astype(bool)
    assert np.array_equal(read_cine_mask(path, 10, 16, 62), uniform_mask(16, 62, 10)[0] == 1)


def test_values_are_checked_before_anything_is_written(tree, tmp_path):
    from cli_helpers import assert_user_error, run_cli

    path = tmp_path / "x.mat"
    inf = np.ones((4, 4, 2, 1, 1), dtype=np.complex64)
    inf[0, 0, 0, 0, 0] = np.inf
    write_mat(path, {"kspace_full": inf})
    with np.errstate(all="raise"), pytest.raises(UserError, match="contains NaN or Inf"):
        read_cine_kspace(path, "kspace_full", "multicoil")  # no numpy warning on the way
    copy = tmp_path / "zeros"
    shutil.copytree(tree, copy)
    full = copy / "MultiCoil/Cine/TrainingSet/FullSample"
    with h5py.File(full / "P002/cine_lax.mat", "r+") as hf:
        hf["kspace_full"][...] = np.zeros(hf["kspace_full"].shape, hf["kspace_full"].dtype)
    result = run_cli("data", "check", copy)
    assert result.code == 1 and "cine_lax.mat: 'kspace_full' is all zeros" in result.out
    assert run_cli("data", "check", copy, "--skip_finite").code == 0  # metadata only
    assert_user_error(run_cli("data", "convert", copy, "--format", "cmrxrecon", "--out", tmp_path / "o"),
                      "P002/cine_lax.mat", "is all zeros")
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("how", ["copied file", "linked patient"])
def test_a_scan_in_two_patient_folders_is_refused(tree, tmp_path, how):
    from cli_helpers import assert_user_error, run_cli

    copy = tmp_path / "tree"
    shutil.copytree(tree, copy)
    full = copy / "MultiCoil/Cine/TrainingSet/FullSample"
    if how == "copied file":
        shutil.copy(full / "P001/cine_sax.mat", full / "P002/cine_sax.mat")
        expected = "a copy of the same scan"
    else:
        (full / "P004").symlink_to(full / "P001", target_is_directory=True)
        expected = "the same file as"
    assert_user_error(run_cli("data", "convert", copy, "--format", "cmrxrecon", "--out", tmp_path / "o"),
                      ".mat: ", expected, "a scan may be converted once")
    assert not (tmp_path / "o").exists()
