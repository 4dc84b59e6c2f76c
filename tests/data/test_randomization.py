"""Domain randomisation and the out-of-distribution split of the simulator."""

import json
from dataclasses import replace
from pathlib import Path

import h5py
import numpy as np
import pytest

from mrirecon.core.operator import ifft2c_numpy
from mrirecon.data.simulation import presets, synthesis
from mrirecon.data import tissues
from mrirecon.data.anatomy import COLIN27_PATH, default_sources
from mrirecon.data.simulate import PRESETS, Preset, simulate_dataset
from mrirecon.errors import UserError

R = 32
RANDOM = Preset(recon_size=R, volumes=(8, 1, 1), slices=3, coils=(4, 4), snr=(20.0, 40.0), randomized=("train",))
OOD = replace(PRESETS["ood"], recon_size=R, volumes=(2,), slices=3)


@pytest.fixture(scope="module")
def randomized(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("random") / "data"
    simulate_dataset(root, preset=RANDOM, seed=5, progress=False)
    return root


def _volumes(root: Path, split: str = "train", challenge: str = "singlecoil") -> list[tuple[dict, np.ndarray, np.ndarray]]:
    out = []
    for path in sorted((root / f"{challenge}_{split}").glob("*.h5")):
        with h5py.File(path) as hf:
            out.append((dict(hf.attrs), hf["kspace"][()], hf["reconstruction_esc"][()]))
    return out


def test_randomisation_is_deterministic_for_a_seed(randomized, tmp_path):
    again = tmp_path / "again"
    simulate_dataset(again, preset=RANDOM, seed=5, progress=False)
    other = tmp_path / "other"
    simulate_dataset(other, preset=RANDOM, seed=6, progress=False)
    for path in sorted((randomized / "singlecoil_train").glob("*.h5")):
        assert path.read_bytes() == (again / "singlecoil_train" / path.name).read_bytes()
        with h5py.File(path) as a, h5py.File(other / "singlecoil_train" / path.name) as b:
            assert a.attrs["snr"] != b.attrs["snr"]
            assert not np.array_equal(a["reconstruction_esc"][()], b["reconstruction_esc"][()])


def test_every_factor_is_recorded_and_varies(randomized):
    attrs = [a for a, _, _ in _volumes(randomized)]
    assert {a["contrast"] for a in attrs} == {"random"} and {a["acquisition"] for a in attrs} == {"AXRANDOM"}
    ranges = RANDOM.randomization
    for key, bounds in [("snr", ranges.snr), ("fov_margin", ranges.fov_margin), ("phase_std", ranges.phase_std),
                        ("texture", ranges.texture), ("bias_std", ranges.bias_std)]:
        values = [float(a[key]) for a in attrs]
        assert all(bounds[0] <= v <= bounds[1] for v in values), key
        assert np.ptp(values) > 0.25 * (bounds[1] - bounds[0]), key
    # Log-uniform over two decades: eight draws span well over a factor of three.
    assert max(a["snr"] for a in attrs) / min(a["snr"] for a in attrs) > 3
    # The order of the tissues' intensities (which is the contrast) differs between volumes.
    orders = {tuple(np.argsort([a[f"intensity_{t}"] for t in ("csf", "gm", "wm")])) for a in attrs}
    assert len(orders) >= 3
    assert any(a["intensity_csf"] > a["intensity_wm"] for a in attrs)
    assert any(a["intensity_csf"] < a["intensity_wm"] for a in attrs)


def test_snr_and_field_of_view_show_in_the_data(randomized):
    volumes = _volumes(randomized)
    measured, fractions = [], []
    for attrs, kspace, target in volumes:
        # The readout oversampling's rows above and below the object hold only noise (of std
        # sigma per real component, in the image as in k-space: the FFT is orthonormal).
        image = ifft2c_numpy(kspace)
        empty = np.concatenate([image[:, : R // 4].ravel(), image[:, -R // 4:].ravel()])
        sigma = np.sqrt(np.mean(np.abs(empty) ** 2) / 2)
        inside = target > 0.1 * target.max()
        measured.append(target[inside].mean() / sigma)
        fractions.append(inside.mean() * attrs["fov_margin"] ** 2)
        assert kspace.shape[-1] == presets.phase_encode_columns(R, attrs["pe_oversampling"])
    stated = np.array([a["snr"] for a, _, _ in volumes])
    # The SNR each file states is the one its noise has (rank order and rough scale).
    assert np.corrcoef(np.log(measured), np.log(stated))[0, 1] > 0.9
    assert np.all(np.abs(np.log(np.array(measured) / stated)) < np.log(2.0))
    # A larger field of view makes the head smaller: the head's area times the margin squared
    # varies far less than the area alone.
    areas = np.array([f / a["fov_margin"] ** 2 for f, (a, _, _) in zip(fractions, volumes)])
    assert np.std(np.log(fractions)) < np.std(np.log(areas))
    assert len({k.shape[-1] for _, k, _ in volumes}) >= 2  # several phase-encode oversamplings


def test_inverting_the_tissue_intensities_inverts_the_image():
    head = synthesis.prepare_head(default_sources()[0])
    base = presets.Draw("random", snr=100.0, pe_oversampling=1.0, fov_margin=1.2,
                                 intensities=(0.1, 0.4, 0.9, 0.0, 0.0), texture=0.0, bias_std=0.0)
    inverted = replace(base, intensities=(0.9, 0.4, 0.1, 0.0, 0.0))
    images = [synthesis.synthesize_subject(head, R, 3, 1.2 * head.extent_mm, np.random.default_rng(0), d)
              for d in (base, inverted)]
    brain = (images[0] > 0.05) & (images[1] > 0.05)
    assert np.corrcoef(images[0][brain], images[1][brain])[0, 1] < -0.5


def test_ood_split_is_added_beside_the_others(tmp_path, capsys):
    root = tmp_path / "data"
    simulate_dataset(root, preset=replace(RANDOM, volumes=(1, 1, 1), randomized=()), progress=False)
    with pytest.raises(UserError, match="--source"):
        simulate_dataset(root, preset=OOD, progress=False)
    # The default head stands in for Colin27 here (which only Debian's mricron-data ships).
    simulate_dataset(root, preset=OOD, sources=["mni152"], progress=False)
    assert sorted(p.name for p in root.iterdir()) == [
        "simulation.json", "singlecoil_ood", "singlecoil_test", "singlecoil_train", "singlecoil_val"]
    volumes = _volumes(root, "ood")
    assert [a["contrast"] for a, _, _ in volumes] == ["t1", "pd"]
    assert [a["acquisition"] for a, _, _ in volumes] == ["AXT1", "AXPD"]
    for attrs, kspace, _ in volumes:
        assert attrs["snr"] >= 200 and kspace.shape[-1] == R  # no phase-encode oversampling
    manifest = json.loads((root / "simulation.json").read_text())
    assert sorted(manifest["splits"]) == ["singlecoil_ood", "singlecoil_test", "singlecoil_train", "singlecoil_val"]
    # Its volumes are subjects of their own, not the train split's.
    assert volumes[0][0]["patient_id"] not in {a["patient_id"] for a, _, _ in _volumes(root, "train")}


def test_proton_density_contrast_has_csf_brightest_and_grey_above_white():
    assert tissues.PD_LIKE["csf"] > tissues.PD_LIKE["gm"] > tissues.PD_LIKE["wm"] > tissues.PD_LIKE["bone"]


@pytest.mark.skipif(not COLIN27_PATH.is_file(), reason="Debian's mricron-data (Colin27) is not installed")
def test_colin27_tissue_maps_order_csf_grey_white_by_t1_intensity():
    head = synthesis.prepare_head(COLIN27_PATH)
    maps, _, _ = head.tissue_data()
    assert maps.shape[0] == len(tissues.TISSUES)
    means = [float((head.volume * m).sum() / m.sum()) for m in maps[:3]]
    assert means[0] < means[1] < means[2]  # T1: CSF darkest, white matter brightest
    assert maps[3].sum() > 0 and maps[4].sum() > 0  # scalp and skull outside the brain


def test_demo_mixed_randomises_half_its_training_volumes_and_keeps_the_demo_test_split(tmp_path):
    small = {"recon_size": R, "slices": 2}
    simulate_dataset(tmp_path / "mixed", preset=replace(PRESETS["demo-mixed"], **small), seed=0, progress=False)
    simulate_dataset(tmp_path / "demo", preset=replace(PRESETS["demo"], **small), seed=0, progress=False)
    for split in ("train", "val"):  # seed 0: 6 of 16 and 2 of 4 drawn as the standard demo
        contrasts = [a["contrast"] for a, _, _ in _volumes(tmp_path / "mixed", split)]
        assert set(contrasts) == {"source", "random"}, split
    # The test split (in distribution, scored by the demo's report) is the standard demo's.
    for (a, kspace, target), (b, kspace_demo, target_demo) in zip(_volumes(tmp_path / "mixed", "test"),
                                                                  _volumes(tmp_path / "demo", "test")):
        assert not a["randomized"] and np.array_equal(kspace, kspace_demo) and np.array_equal(target, target_demo)
