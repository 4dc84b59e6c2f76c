"""The simulator's M4Raw layout: M4Raw's names, shapes, header and repetitions, offline."""

from dataclasses import replace
from pathlib import Path
from xml.etree import ElementTree

import h5py
import numpy as np
import pytest
from scipy import ndimage

from cli_helpers import assert_user_error, run_cli
from mrirecon.data.repetitions import repetition_of
from mrirecon.data.simulate import PRESETS, simulate_dataset
from mrirecon.data.volumes import read_volume_info

NS = "{http://www.ismrm.org/ISMRMRD}"
# One subject per split at 32 x 32, 4 slices: the real files' layout in a second.
SMALL = replace(PRESETS["m4raw"], recon_size=32, slices=4)


@pytest.fixture(scope="module")
def m4raw(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("m4raw") / "data"
    simulate_dataset(out, format="m4raw", preset=SMALL, seed=3, progress=False)
    return out


def test_files_are_named_shaped_and_labelled_as_m4raw_files(m4raw):
    assert sorted(p.name for p in m4raw.iterdir()) == ["multicoil_test", "multicoil_train", "multicoil_val",
                                                      "simulation.json"]
    train = sorted(p.name for p in (m4raw / "multicoil_train").iterdir())
    subjects = sorted({name.split("_")[0] for name in train})
    assert len(subjects) == SMALL.volumes[0]
    assert [n for n in train if n.startswith(subjects[0])] == [
        f"{subjects[0]}_{tag}.h5" for tag in ("FLAIR01", "FLAIR02", "T101", "T102", "T103", "T201", "T202", "T203")]
    acquisitions = {"T1": "AXT1", "T2": "AXT2", "FLAIR": "AXFLAIR"}
    for path in sorted(m4raw.glob("multicoil_*/*.h5")):
        subject, contrast, repetition = repetition_of(path)
        with h5py.File(path) as hf:
            assert sorted(hf) == ["ismrmrd_header", "kspace", "reconstruction_rss"]
            assert hf["kspace"].shape == (4, 4, 32, 32) and hf["kspace"].dtype == np.complex64
            assert hf["reconstruction_rss"].shape == (4, 32, 32) and hf["reconstruction_rss"].dtype == np.float32
            assert hf.attrs["acquisition"] == acquisitions[contrast]
            assert hf.attrs["max"] == pytest.approx(float(hf["reconstruction_rss"][()].max()))
            header = ElementTree.fromstring(hf["ismrmrd_header"][()])
        # The header lists the other repetitions of the group, as M4Raw's do.
        info = header.find(f"{NS}repetitionInformation")
        assert info.find(f"{NS}RepetitionGroupID").text == path.stem
        others = [e.find(f"{NS}MeasurementID").text for e in info.findall(f"{NS}repetitionLabel")]
        group = sorted(p.stem for p in path.parent.glob(f"{subject}_{contrast}[0-9][0-9].h5"))
        assert sorted([path.stem, *others]) == group and int(info.find(f"{NS}OtherRepetitions").text) == len(group) - 1
        # No readout oversampling: the whole k-space width is acquired and is the target's.
        volume = read_volume_info(path, "multicoil")
        assert volume.padding == (0, 32) and volume.target_shape == (32, 32)


def test_repetitions_share_anatomy_and_coils_and_differ_in_noise_and_phase(m4raw):
    folder = m4raw / "multicoil_train"
    subject = sorted(folder.iterdir())[0].name.split("_")[0]

    def read(tag):
        with h5py.File(folder / f"{subject}_{tag}.h5") as hf:
            return hf["kspace"][()], hf["reconstruction_rss"][()]

    (k1, t1), (k2, t2), (_, t3) = read("T101"), read("T102"), read("T103")
    assert not np.array_equal(k1, k2)
    # The same image in each: the magnitudes agree but for noise (and much better averaged).
    single = np.corrcoef(t1.ravel(), t2.ravel())[0, 1]
    assert 0.8 < single < 0.999
    assert np.corrcoef(((t1 + t2 + t3) / 3).ravel(), t1.ravel())[0, 1] > single
    # ... while each repetition drifts in phase: the complex coil images do not line up.
    centre = (slice(None), slice(None), 16, 16)
    assert np.abs(np.angle(k1[centre] * np.conj(k2[centre]))).mean() > 0.1
    # The contrasts of one subject are one anatomy: its T1 and FLAIR differ in contrast, not in
    # shape, unlike another subject's FLAIR (the head, smoothed against the noise).
    def head(target):
        return ndimage.uniform_filter(target, (1, 3, 3)) > 0.2 * target.max()

    def overlap(a, b):
        return (head(a) & head(b)).sum() / (head(a) | head(b)).sum()

    with h5py.File(sorted(folder.glob("*_FLAIR01.h5"))[1]) as hf:
        other_flair = hf["reconstruction_rss"][()]
    same = overlap(t1, read("FLAIR01")[1])
    assert same > 0.95 and same > overlap(t1, other_flair) + 0.05


def test_the_same_seed_gives_the_same_files(m4raw, tmp_path):
    again = tmp_path / "again"
    simulate_dataset(again, format="m4raw", preset=replace(SMALL, volumes=(1, 0, 0)), seed=3, progress=False)
    for path in sorted((again / "multicoil_train").iterdir()):
        with h5py.File(path) as a, h5py.File(m4raw / "multicoil_train" / path.name) as b:
            assert np.array_equal(a["kspace"][()], b["kspace"][()])


def test_data_check_reports_the_repetitions(m4raw):
    result = run_cli("data", "check", m4raw)
    assert result.code == 0, result.err
    assert (f"multicoil_train: M4Raw's repetition files: {SMALL.volumes[0]} subject(s), repetitions FLAIR x2, T1 x3, "
            "T2 x3") in result.out


@pytest.mark.parametrize("args, fragments", [
    (["--format", "m4raw", "--challenge", "singlecoil"], ["M4Raw's files are multi-coil only"]),
    (["--format", "m4raw", "--preset", "demo"], ["preset demo: writes the fastmri layout, not m4raw"]),
    (["--format", "fastmri", "--preset", "m4raw"], ["preset m4raw: writes the m4raw layout, not fastmri"]),
])
def test_a_format_and_preset_or_challenge_that_disagree_are_one_line(args, fragments, tmp_path):
    assert_user_error(run_cli("data", "simulate", "--out", tmp_path / "d", "--no_progress", *args), *fragments)
    assert not (tmp_path / "d").exists()
