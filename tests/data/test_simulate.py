"""Tests of the simulated fastMRI-format datasets, read back with fastMRI's own code."""

import json
import resource
import signal
import subprocess
import sys
from pathlib import Path

import fastmri
import h5py
import nibabel as nib
import numpy as np
import pytest
import torch
from fastmri.data import SliceDataset
from fastmri.data.transforms import complex_center_crop, to_tensor

from mrirecon.data.simulation import writer as simulation_writer
from mrirecon.data.anatomy import COLIN27_PATH as COLIN27
from mrirecon.data.anatomy import default_sources, load_anatomy, resolve_source, source_digest
from mrirecon.data.simulate import SPLITS, Preset, simulate_dataset
from mrirecon.errors import UserError
from mrirecon.evaluation.provenance import dataset_record

TINY = Preset(recon_size=32, volumes=(2, 1, 1), slices=3, coils=(3, 5), snr=(20.0, 40.0))
R = TINY.recon_size
HEIGHT, WIDTH = 2 * R, 38  # 2 * ceil(1.15 * 32 / 2)
TARGET_KEY = {"singlecoil": "reconstruction_esc", "multicoil": "reconstruction_rss"}


@pytest.fixture(scope="module")
def datasets(tmp_path_factory) -> dict[str, Path]:
    """One tiny dataset per challenge, made from the real default templates."""
    root = tmp_path_factory.mktemp("sim")
    return {
        challenge: _simulate(root / challenge, challenge=challenge)
        for challenge in ("singlecoil", "multicoil")
    }


def _simulate(out: Path, **kwargs) -> Path:
    simulate_dataset(out, **{"preset": TINY, "progress": False, **kwargs})
    return out


def _files(root: Path) -> list[Path]:
    return sorted(root.glob("*_*/*.h5"))


def _read(path: Path, key: str) -> np.ndarray:
    with h5py.File(path, "r") as hf:
        return hf[key][()]


@pytest.mark.parametrize("challenge", ["singlecoil", "multicoil"])
def test_fastmri_slice_dataset_reads_every_split(datasets, challenge):
    for split, volumes in zip(SPLITS, TINY.volumes):
        dataset = SliceDataset(root=datasets[challenge] / f"{challenge}_{split}",
                               challenge=challenge, transform=None)
        assert len(dataset) == volumes * TINY.slices
        kspace, mask, target, attrs, fname, dataslice = dataset[len(dataset) - 1]
        assert mask is None and dataslice == TINY.slices - 1
        assert fname == f"sim_{split}_{volumes - 1:04d}.h5"
        assert kspace.dtype == np.complex64 and target.dtype == np.float32
        assert kspace.shape[-2:] == (HEIGHT, WIDTH) and target.shape == (R, R)
        if challenge == "multicoil":
            assert kspace.ndim == 3 and TINY.coils[0] <= kspace.shape[0] <= TINY.coils[1]
        else:
            assert kspace.ndim == 2
        assert attrs["padding_left"] == 0 and attrs["padding_right"] == WIDTH
        assert attrs["encoding_size"] == (HEIGHT, WIDTH, 1)
        assert attrs["recon_size"] == (R, R, 1)
        assert attrs["acquisition"] == "AXT1" and attrs["simulated"]
        assert attrs["patient_id"] and attrs["source"].endswith((".nii", ".nii.gz"))
        assert TINY.snr[0] <= attrs["snr"] <= TINY.snr[1]


@pytest.mark.parametrize("challenge", ["singlecoil", "multicoil"])
def test_target_is_fastmri_reconstruction_of_the_kspace(datasets, challenge):
    for path in _files(datasets[challenge]):
        kspace = to_tensor(_read(path, "kspace"))
        target = torch.from_numpy(_read(path, TARGET_KEY[challenge]))
        images = fastmri.complex_abs(complex_center_crop(fastmri.ifft2c(kspace), (R, R)))
        expected = fastmri.rss(images, dim=1) if challenge == "multicoil" else images
        torch.testing.assert_close(target, expected, rtol=1e-5, atol=1e-6 * float(target.max()))


@pytest.mark.parametrize("challenge", ["singlecoil", "multicoil"])
def test_dtypes_attributes_and_scale(datasets, challenge):
    for path in _files(datasets[challenge]):
        with h5py.File(path, "r") as hf:
            target = hf[TARGET_KEY[challenge]][()]
            assert hf["kspace"].dtype == np.complex64 and target.dtype == np.float32
            assert hf.attrs["max"] == target.max()
            assert hf.attrs["norm"] == pytest.approx(np.linalg.norm(target.astype(np.float64)))
            # fastMRI-like magnitudes, so that scale bugs downstream show up.
            assert 1e-5 < hf.attrs["max"] < 1e-2


def test_object_fills_the_crop_and_only_noise_lies_outside(datasets):
    path = datasets["singlecoil"] / "singlecoil_train" / "sim_train_0000.h5"
    image = np.abs(fastmri.ifft2c(to_tensor(_read(path, "kspace"))).numpy()[..., 0])
    top, left = (HEIGHT - R) // 2, (WIDTH - R) // 2
    inside = image[:, top:top + R, left:left + R]
    outside = np.concatenate([image[:, :top].ravel(), image[:, top + R:].ravel()])
    assert outside.mean() < 0.2 * inside.mean()


def test_splits_hold_distinct_volumes(datasets):
    for challenge, root in datasets.items():
        files = _files(root)
        patients = set()
        for path in files:
            with h5py.File(path, "r") as hf:
                patients.add(hf.attrs["patient_id"])
        assert len(files) == sum(TINY.volumes) and len(patients) == len(files)
        targets = [_read(path, TARGET_KEY[challenge]) for path in files]
        for i in range(len(targets)):
            for j in range(i):
                assert not np.allclose(targets[i], targets[j])


def test_same_seed_gives_identical_data_and_another_seed_differs(datasets, tmp_path):
    reference = _files(datasets["singlecoil"])
    again = _files(_simulate(tmp_path / "again"))
    other = _files(_simulate(tmp_path / "other", seed=1))
    for first, second, third in zip(reference, again, other, strict=True):
        for key in ("kspace", "reconstruction_esc"):
            assert np.array_equal(_read(first, key), _read(second, key))
            assert not np.array_equal(_read(first, key), _read(third, key))
        assert first.read_bytes() == second.read_bytes()


def test_refuses_a_non_empty_folder_unless_overwrite(tmp_path):
    out = tmp_path / "data"
    out.mkdir()
    (out / "notes.txt").write_text("keep me")
    with pytest.raises(UserError, match=str(out)):
        simulate_dataset(out, preset=TINY, progress=False)
    # Overwrite only replaces a previous simulation, never foreign files.
    with pytest.raises(UserError, match="notes.txt"):
        simulate_dataset(out, preset=TINY, progress=False, overwrite=True)
    assert (out / "notes.txt").read_text() == "keep me"


def test_splits_are_added_beside_others_and_replaced_only_with_overwrite(tmp_path):
    out = _simulate(tmp_path / "data", challenge="multicoil")
    _simulate(out)  # the single-coil splits join the multi-coil ones
    folders = [f"{c}_{s}" for c in ("multicoil", "singlecoil") for s in SPLITS]
    assert sorted(p.name for p in out.iterdir()) == sorted(["simulation.json", *folders])
    before = (out / "singlecoil_val" / "sim_val_0000.h5").read_bytes()
    with pytest.raises(UserError, match="singlecoil_train exists already"):
        _simulate(out, seed=3)
    assert (out / "singlecoil_val" / "sim_val_0000.h5").read_bytes() == before
    _simulate(out, seed=3, overwrite=True)
    assert (out / "singlecoil_val" / "sim_val_0000.h5").read_bytes() != before
    manifest = json.loads((out / "simulation.json").read_text())
    assert sorted(manifest["splits"]) == sorted(folders)
    assert manifest["splits"]["singlecoil_val"]["seed"] == 3 and manifest["splits"]["multicoil_val"]["seed"] == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data"]
    # A report cites the simulation of its own split, not that of the last run into the folder.
    multicoil = dataset_record(out, out / "multicoil_val", [])["simulation"]
    singlecoil = dataset_record(out, out / "singlecoil_val", [])["simulation"]
    assert (multicoil["challenge"], multicoil["seed"]) == ("multicoil", 0)
    assert (singlecoil["challenge"], singlecoil["seed"]) == ("singlecoil", 3)
    assert "files" not in singlecoil and singlecoil["preset"]["recon_size"] == TINY.recon_size


def test_a_failed_replacement_puts_the_old_split_back(tmp_path, monkeypatch):
    out = _simulate(tmp_path / "data")
    before = (out / "singlecoil_val" / "sim_val_0000.h5").read_bytes()
    real_rename = Path.rename

    def failing_rename(self, target):
        if ".partial-" in str(self) and Path(target).name == "singlecoil_val":
            raise OSError(28, "No space left on device")
        return real_rename(self, target)

    monkeypatch.setattr(Path, "rename", failing_rename)
    with pytest.raises(UserError, match="cannot write the dataset"):
        _simulate(out, seed=3, overwrite=True)
    monkeypatch.undo()
    assert (out / "singlecoil_val" / "sim_val_0000.h5").read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data"]


def test_failure_leaves_nothing_behind(tmp_path, monkeypatch):
    calls = []

    def write_then_fail(*args):
        calls.append(args)
        if len(calls) == 2:
            raise KeyboardInterrupt
        real_write(*args)

    real_write = simulation_writer.write_volume
    monkeypatch.setattr(simulation_writer, "write_volume", write_then_fail)
    with pytest.raises(KeyboardInterrupt):
        simulate_dataset(tmp_path / "data", preset=TINY, progress=False)
    assert list(tmp_path.iterdir()) == []


def test_recon_size_overrides_the_preset(tmp_path):
    summary = simulate_dataset(tmp_path / "data", preset=TINY, recon_size=40, progress=False)
    assert summary["recon_size"] == [40, 40] and summary["kspace_size"] == [80, 46]
    assert summary["splits"]["train"]["slices"] == TINY.volumes[0] * TINY.slices
    assert summary["splits"]["train"]["files"]["sim_train_0000.h5"]["kspace_size"] == [80, 46]
    path = tmp_path / "data" / "singlecoil_val" / "sim_val_0000.h5"
    assert _read(path, "kspace").shape == (TINY.slices, 80, 46)


@pytest.mark.parametrize("content", [None, b"not an image"])
def test_bad_source_is_a_user_error_naming_it(tmp_path, content):
    source = tmp_path / "head.nii.gz"
    if content is not None:
        source.write_bytes(content)
    with pytest.raises(UserError, match="head.nii.gz"):
        simulate_dataset(tmp_path / "data", preset=TINY, sources=[source], progress=False)
    assert not (tmp_path / "data").exists()


def test_load_anatomy_is_canonical_unit_range_and_isotropic(tmp_path):
    # A 2 mm, LPS-oriented volume with a trailing singleton axis.
    data = np.zeros((20, 24, 22, 1), dtype=np.int16)
    data[2:18, 2:22, 2:20] = 300
    data[2:6, 2:6, 2:20] = 100  # a dim corner near the voxel origin, to check the flips
    data[10, 12, 10] = 30000  # one hot voxel must not set the scale
    path = tmp_path / "lps.nii.gz"
    nib.save(nib.Nifti1Image(data, np.diag([-2.0, -2.0, 2.0, 1.0])), path)
    volume = load_anatomy(path)
    assert volume.dtype == np.float32 and volume.shape == (40, 48, 44)
    assert volume.min() == 0.0 and volume.max() == 1.0
    assert volume[20, 24, 20] == pytest.approx(1.0)
    # RAS: the corner at the lowest LPS indices lies at the highest x and y indices.
    assert volume[34, 42, 20] == pytest.approx(1 / 3)
    assert volume[5, 5, 20] == pytest.approx(1.0)

    flat = tmp_path / "flat.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros((20, 20), dtype=np.int16), np.eye(4)), flat)
    with pytest.raises(UserError, match="flat.nii.gz"):
        load_anatomy(flat)


def test_the_default_source_is_the_bundled_mni_template_alone():
    # Whatever else is installed (Debian's Colin27), the default dataset is the same everywhere.
    (source,) = default_sources()
    assert source.name == "mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz" and source.is_file()


def test_sources_are_recorded_in_every_file_and_the_manifest(datasets):
    root = datasets["singlecoil"]
    manifest = json.loads((root / "simulation.json").read_text())
    (source,) = manifest["sources"]
    assert source["name"] == default_sources()[0].name and source["sha256"] == source_digest(default_sources()[0])
    for split in SPLITS:
        files = manifest["splits"][f"singlecoil_{split}"]["files"]
        assert sorted(files) == sorted(p.name for p in (root / f"singlecoil_{split}").glob("*.h5"))
        for name, entry in files.items():
            with h5py.File(root / f"singlecoil_{split}" / name) as hf:
                assert hf.attrs["source"] == entry["source"] == source["name"]
                assert hf.attrs["source_sha256"] == source["sha256"]
                assert hf.attrs["contrast"] == entry["contrast"] == "source"
                assert list(hf["kspace"].shape[-2:]) == entry["kspace_size"]


def test_named_and_unknown_sources(tmp_path):
    assert resolve_source("mni152") == default_sources()[0]
    if COLIN27.is_file():
        assert resolve_source("colin27") == COLIN27
    else:
        with pytest.raises(UserError, match="mricron-data"):
            resolve_source("colin27")
    with pytest.raises(UserError, match="nowhere.nii"):
        simulate_dataset(tmp_path / "d", preset=TINY, sources=["nowhere.nii"], progress=False)


def test_simulate_command_prints_its_sources(tmp_path):
    result = subprocess.run([sys.executable, "-m", "mrirecon", "data", "simulate", "--out", str(tmp_path / "d"),
                             "--preset", "demo", "--recon_size", "16", "--no_progress"], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert "sources: mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz (sha256 " in result.stdout


def _file_size_limit(limit: int):
    def apply() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # then writes past the limit fail with EFBIG
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    return apply


def test_a_full_disk_is_one_line_and_leaves_nothing(tmp_path):
    # Before: HDF5's failed write raised again while the file closed, then the interpreter
    # crashed at exit (a traceback, then a segmentation fault, exit 139).
    result = subprocess.run([sys.executable, "-m", "mrirecon", "data", "simulate", "--out", str(tmp_path / "d"),
                             "--preset", "demo", "--recon_size", "32", "--no_progress"], capture_output=True,
                            text=True, preexec_fn=_file_size_limit(100_000), timeout=300)
    assert result.returncode == 2, result.stderr
    assert result.stderr.strip().splitlines() == [f"mrirecon: error: {tmp_path / 'd'}: cannot write the dataset "
                                                  "(disk full: file too large)"]
    assert list(tmp_path.iterdir()) == []
