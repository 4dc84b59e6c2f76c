"""Calgary-Campinas (CC359) multi-channel: the reader and the converter, against the dataset's
own reconstruction and the challenge's metric code (:mod:`cc359_like`, written out from DIRECT)."""

from __future__ import annotations

import h5py
import numpy as np
import pytest

from cc359_like import challenge_scores, dataset_images, write_raw
from cli_helpers import assert_user_error, run_cli
from mrirecon.core.plane_masks import acquired_columns
from mrirecon.data.cc359 import convert_scans, find_scan_files, to_centred_kspace
from mrirecon.data.simulation.cc359 import simulate_cc359_download
from mrirecon.data.volumes import read_volume_info, scan_volumes
from mrirecon.errors import UserError
from mrirecon.evaluation.cc359 import challenge_metrics, scored_slices


@pytest.fixture(scope="module")
def download(tmp_path_factory):
    root = tmp_path_factory.mktemp("cc359") / "download"
    simulate_cc359_download(root, width=42, slices=4, train=3, val=2, test=1, progress=False)
    return root


@pytest.fixture(scope="module")
def converted(download, tmp_path_factory):
    out = tmp_path_factory.mktemp("cc359_data") / "data"
    counts = convert_scans(download, out, val_fraction=0.34, seed=0)
    return out, counts


def _raw(path):
    with h5py.File(path, "r") as hf:
        raw = hf["kspace"][()]
    return raw[..., 0::2] + 1j * raw[..., 1::2]


def test_converted_volumes_hold_the_dataset_reconstruction_and_its_samples(download, converted):
    out, counts = converted
    assert counts == {"multicoil_train": 2, "multicoil_val": 1, "multicoil_test": 2, "multicoil_test_acc05": 2,
                      "multicoil_test_acc10": 2, "multicoil_testset_acc05": 1, "multicoil_testset_acc10": 1}
    sources = {f.path.name: f for f in find_scan_files(download)}
    banks = {acc: np.load(next(download.rglob(f"R{acc}_54x42.npy"))) for acc in (5, 10)}
    acquired = acquired_columns(42, 0.15)
    assert acquired == 36
    for volume in sorted(out.glob("multicoil_*/*.h5")):
        source = sources[volume.name]
        info = read_volume_info(volume, "multicoil")
        assert info.kspace_shape == (4, 12, 54, 42) and info.padding == (0, acquired)
        assert info.target_shape == (54, 42) and info.acquisition == "CC359_T1_3D"
        with h5py.File(volume, "r") as hf:
            kspace = hf["kspace"][()]
            target = hf["reconstruction_rss"][()] if "reconstruction_rss" in hf else None
        raw = np.moveaxis(_raw(source.path), -1, 1)
        raw[..., acquired:] = 0
        split = volume.parent.name
        if split.startswith("multicoil_test_acc") or split.startswith("multicoil_testset_acc"):
            acc = int(split[-2:])
            mask = np.asarray(info.fixed_mask)
            assert mask.shape == (54, 42) and info.acceleration == acc
            assert any((mask == m).all() for m in banks[acc]), "not one of the published masks"
            assert (kspace[..., ~mask] == 0).all()
            raw = raw * mask
        # Every sample where it was (one sign each), unsampled ones exactly zero.
        np.testing.assert_allclose(np.abs(kspace), np.abs(raw), rtol=1e-6)
        assert ((kspace == 0) == (raw == 0)).all()
        if split == "multicoil_testset_acc05" or split == "multicoil_testset_acc10":
            assert target is None and info.target_key is None
        else:
            expected = dataset_images(source.path)
            np.testing.assert_allclose(target, expected, rtol=0, atol=1e-5 * expected.max())


@pytest.mark.parametrize("plane", [(218, 170), (218, 174), (218, 180)])
def test_the_centred_kspace_has_the_magnitude_of_the_datasets_own_image(plane):
    rng = np.random.default_rng(0)
    raw = rng.standard_normal((1, *plane, 24)).astype(np.float32)
    ours = to_centred_kspace(raw)
    from mrirecon.core.operator import ifft2c_numpy

    theirs = np.fft.ifft2(raw[..., 0::2] + 1j * raw[..., 1::2], axes=(1, 2), norm="ortho")
    # DIRECT zeroes the partial-Fourier columns of the k-space first.
    cut = raw.copy()
    cut[:, :, acquired_columns(plane[1], 0.15):] = 0
    theirs = np.fft.ifft2(cut[..., 0::2] + 1j * cut[..., 1::2], axes=(1, 2), norm="ortho")
    np.testing.assert_allclose(np.abs(ifft2c_numpy(ours)), np.moveaxis(np.abs(theirs), -1, 1), rtol=0, atol=1e-5)


def test_two_dimensional_file_masks_survive_the_metadata_cache(converted, tmp_path, monkeypatch):
    out, _ = converted
    monkeypatch.setenv("MRIRECON_CACHE_DIR", str(tmp_path / "cache"))
    first = scan_volumes(out / "multicoil_test_acc05", "multicoil")
    again = scan_volumes(out / "multicoil_test_acc05", "multicoil")
    assert [v.fixed_mask for v in first] == [v.fixed_mask for v in again]
    assert all(isinstance(v.fixed_mask[0], tuple) for v in again)
    assert all(v.fixed_num_low_frequencies >= 6 for v in again)  # the disc of radius 4.45 holds a 6x6 square


@pytest.mark.parametrize("case, fragment", [
    ("rank", "expected 4 dimensions (slices, ky, kz, 2 x coils)"),
    ("odd_channels", "an even number, 24 for 12 coils"),
    ("integers", "expected real floats"),
    ("nan", "NaN or Inf"),
    ("corner", "not near the middle"),
    ("odd_plane", "odd sizes are not Calgary-Campinas'"),
    ("no_kspace", "no 'kspace' dataset"),
])
def test_bad_files_are_refused_in_one_line_naming_them(download, tmp_path, case, fragment):
    good = next((download / "Raw-data/Multi-channel/12-channel/train").glob("*.h5"))
    with h5py.File(good, "r") as hf:
        raw = hf["kspace"][()]
    bad = {
        "rank": raw[0],
        "odd_channels": raw[..., :23],
        "integers": raw.astype(np.int32),
        "nan": np.where(np.arange(raw.shape[1])[None, :, None, None] == 3, np.nan, raw).astype(np.float32),
        "corner": np.fft.ifftshift(raw, axes=(1, 2)),
        "odd_plane": raw[:, :53],
        "no_kspace": None,
    }[case]
    path = write_raw(tmp_path / "dl" / "train" / "e1_P1.7.h5", bad, **({"other": np.zeros(2)} if bad is None else {}))
    result = run_cli("data", "convert", str(tmp_path / "dl"), "--format", "cc359", "--out", str(tmp_path / "out"))
    line = assert_user_error(result, str(path), fragment)
    assert line
    assert not (tmp_path / "out").exists()


def test_bad_mask_files_and_arguments_are_refused(download, tmp_path):
    masks = tmp_path / "masks"
    masks.mkdir()
    np.save(masks / "R5_54x42.npy", np.full((2, 54, 42), 2))
    result = run_cli("data", "convert", str(download), "--format", "cc359", "--out", str(tmp_path / "o1"),
                     "--masks", str(masks))
    assert_user_error(result, "R5_54x42.npy", "values other than 0 and 1")
    np.save(masks / "R5_54x42.npy", np.ones((2, 54, 40), dtype=bool))
    result = run_cli("data", "convert", str(download), "--format", "cc359", "--out", str(tmp_path / "o1"),
                     "--masks", str(masks))
    assert_user_error(result, "R5_54x42.npy", "expected (masks, 54, 42)")
    for args, fragment in [
        (["--masks", str(tmp_path / "none")], "no such folder"),
        (["--test_fraction", "0.2"], "--test_fraction: not for --format cc359"),
        (["--challenge", "singlecoil"], "12-channel (multicoil)"),
    ]:
        assert_user_error(run_cli("data", "convert", str(download), "--format", "cc359", "--out",
                                  str(tmp_path / "o1"), *args), fragment)
    assert_user_error(run_cli("data", "convert", str(download), "--format", "cc359", "--out", str(download / "x")),
                      "inside the download")
    assert_user_error(run_cli("data", "convert", str(tmp_path / "nothing"), "--format", "cc359", "--out",
                              str(tmp_path / "o1")), "no such folder")
    assert not (tmp_path / "o1").exists()


def test_data_check_reports_a_download_and_its_bad_files(download, tmp_path):
    result = run_cli("data", "check", str(download))
    assert result.code == 0, result.err
    assert "Raw-data/Multi-channel/12-channel/train" in result.out and "54x42" in result.out
    assert "--format cc359" in result.out
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(download, copy)
    bad = write_raw(copy / "Raw-data/Multi-channel/12-channel/val/e9_P9.7.h5", np.zeros((2, 54, 42, 3), np.float32))
    result = run_cli("data", "check", str(copy))
    assert result.code == 1
    assert str(bad) in result.out and "an even number" in result.out
    assert "1 bad file(s)" in result.err


def test_two_dimensional_masks_in_files_are_validated(converted, tmp_path):
    out, _ = converted
    source = next((out / "multicoil_test_acc05").glob("*.h5"))
    for name, mask, attrs, fragment in [
        ("shape", np.ones((54, 40), bool), {}, "expected one value per k-space column, shape (42,), or a 2-D mask"),
        ("values", np.full((54, 42), 0.5), {}, "mask holds 0.5"),
        ("label", np.ones((54, 42), bool), {"acceleration": 5.0}, "contradicts its mask"),
    ]:
        path = tmp_path / f"{name}.h5"
        with h5py.File(source, "r") as src, h5py.File(path, "w") as dst:
            for key in src:
                if key != "mask":
                    src.copy(key, dst)
            dst.attrs.update({**src.attrs, **attrs})
            dst.create_dataset("mask", data=mask)
        with pytest.raises(UserError, match=fragment.replace("(", r"\(").replace(")", r"\)")):
            read_volume_info(path, "multicoil")


def test_the_challenge_metrics_equal_its_published_code():
    rng = np.random.default_rng(0)
    target = rng.random((256, 24, 20)).astype(np.float32) + 0.1
    recon = (target + 0.1 * rng.standard_normal(target.shape)).astype(np.float32)
    ours = challenge_metrics(target, recon)
    theirs = challenge_scores(target.astype(np.float64), recon.astype(np.float64))
    assert ours["ssim"] == pytest.approx(theirs["ssim"], rel=1e-6)
    assert ours["psnr"] == pytest.approx(theirs["psnr"], rel=1e-6)
    assert scored_slices(256) == range(50, 206) and scored_slices(4) == range(1, 3) and scored_slices(1) == range(1)
    zero = target.copy()
    zero[60] = 0
    with pytest.raises(UserError, match="the reference of slice 60 is zero"):
        challenge_metrics(zero, recon)


def test_a_set_folder_given_itself_and_fastmri_files_in_a_train_folder(download, converted, tmp_path):
    train = download / "Raw-data/Multi-channel/12-channel/train"
    assert [f.set_name for f in find_scan_files(train)] == ["train"] * 3
    result = run_cli("data", "check", str(train))
    assert result.code == 0 and "Calgary-Campinas set" in result.out
    # fastMRI-layout volumes in a folder named train/ are checked as a mrirecon dataset, not as scans.
    import shutil

    shutil.copytree(converted[0] / "multicoil_train", tmp_path / "data" / "train")
    assert_user_error(run_cli("data", "check", str(tmp_path / "data")), "no singlecoil_*/multicoil_* split folders")


def test_convert_refuses_what_would_lose_or_mislabel_data(download, tmp_path):
    import shutil

    taken = tmp_path / "taken"
    (taken / "multicoil_train").mkdir(parents=True)
    assert_user_error(run_cli("data", "convert", str(download), "--format", "cc359", "--out", str(taken)),
                      "exists and is not empty")
    assert (taken / "multicoil_train").is_dir()
    masks = tmp_path / "masks"
    masks.mkdir()
    (masks / "R5_54x42.npy").write_bytes(b"")
    assert_user_error(run_cli("data", "convert", str(download), "--format", "cc359", "--out", str(tmp_path / "o"),
                              "--masks", str(masks)), "R5_54x42.npy: not a NumPy mask array")
    bank10 = np.load(next(download.rglob("R10_54x42.npy")))
    np.save(masks / "R5_54x42.npy", bank10)  # 10x masks filed as R5
    assert_user_error(run_cli("data", "convert", str(download), "--format", "cc359", "--out", str(tmp_path / "o"),
                              "--masks", str(masks)), "not the 5x it is filed under")
    np.save(masks / "R5_54x40.npy", bank10[:, :, :40])  # masks of another plane only
    (masks / "R5_54x42.npy").unlink()
    assert_user_error(run_cli("data", "convert", str(download), "--format", "cc359", "--out", str(tmp_path / "o"),
                              "--masks", str(masks)), "no R5_54x42.npy for")
    copy = tmp_path / "copy"
    shutil.copytree(download, copy)
    shutil.copytree(copy / "Raw-data/Multi-channel/12-channel/Test-R=10", copy / "Raw-data/Multi-channel/12-channel/Test-R=7")
    assert_user_error(run_cli("data", "convert", str(copy), "--format", "cc359", "--out", str(tmp_path / "o")),
                      "not the 7x it is filed under")
    shutil.rmtree(copy / "Raw-data/Multi-channel/12-channel/Test-R=7")
    shutil.copytree(copy / "Raw-data/Multi-channel/12-channel", copy / "Raw-data/Multi-channel/32-channel")
    assert_user_error(run_cli("data", "convert", str(copy), "--format", "cc359", "--out", str(tmp_path / "o")),
                      "two Test-R=10/ folders")  # the first of its sets met twice
    assert not (tmp_path / "o").exists()


def test_data_check_reads_the_values_as_convert_does(download, tmp_path):
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(download, copy)
    scan = next((copy / "Raw-data/Multi-channel/12-channel/train").glob("*.h5"))
    with h5py.File(scan, "r+") as hf:
        hf["kspace"][...] = np.fft.ifftshift(hf["kspace"][()], axes=(1, 2))
    result = run_cli("data", "check", str(copy))
    assert result.code == 1 and "not near the middle" in result.out
    assert run_cli("data", "check", str(copy), "--skip_finite").code == 0  # metadata only


def test_convert_refuses_a_scan_twice_and_files_it_would_skip(download, tmp_path):
    """Fourth battery (2026-12-05): a ``*.H5`` was skipped silently, and a val scan copied or
    linked into train/ was converted into the training split and the test split alike."""
    import shutil

    sets = "Raw-data/Multi-channel/12-channel"
    for how in ("copy", "link"):
        copy = tmp_path / how
        shutil.copytree(download, copy)
        val_scan = sorted((copy / sets / "val").glob("*.h5"))[0]
        twin = copy / sets / "train" / "twin.h5"
        shutil.copy(val_scan, twin) if how == "copy" else twin.symlink_to(val_scan)
        expected = "a copy of the same scan" if how == "copy" else "the same file as"
        assert_user_error(run_cli("data", "convert", str(copy), "--format", "cc359", "--out", str(tmp_path / "o")),
                          "twin.h5", expected, "a scan may be converted once")
        assert not (tmp_path / "o").exists()
    upper = tmp_path / "upper"
    shutil.copytree(download, upper)
    scan = sorted((upper / sets / "train").glob("*.h5"))[0]
    scan.rename(scan.with_suffix(".H5"))
    for command in (["data", "convert", str(upper), "--format", "cc359", "--out", str(tmp_path / "o")],
                    ["data", "check", str(upper)]):
        assert_user_error(run_cli(*command), f"{scan.stem}.H5: volumes are read as '*.h5'; rename it to {scan.stem}.h5")
    assert not (tmp_path / "o").exists()


def test_published_masks_lose_the_partial_fourier_band_the_scans_never_hold(download, tmp_path):
    masks = tmp_path / "masks"
    masks.mkdir()
    bank = np.load(next(download.rglob("R5_54x42.npy"))).astype(bool)
    band = acquired_columns(42, 0.15)
    assert not bank[..., band:].any()  # the simulated download's masks, as the challenge's
    bank[:, ::5, band:] = True  # a mask sampling kz the scans never acquired
    np.save(masks / "R5_54x42.npy", bank)
    np.save(masks / "R10_54x42.npy", np.load(next(download.rglob("R10_54x42.npy"))))
    out = tmp_path / "o"
    convert_scans(download, out, val_fraction=0.34, seed=0, masks=masks)
    for path in (out / "multicoil_test_acc05").glob("*.h5"):
        with h5py.File(path, "r") as hf:
            mask = hf["mask"][()]
            assert not mask[:, band:].any()
            assert not (hf["kspace"][()][..., band:]).any()
