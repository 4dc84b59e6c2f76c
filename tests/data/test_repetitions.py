"""Repetition groups and their targets (mrirecon.data.repetitions), on small M4Raw-named files."""

from pathlib import Path

import numpy as np
import pytest

from fastmri_like import write_volume
from mrirecon.data.repetitions import describe_repetitions, repetition_of, shared_subjects, with_repetition_targets
from mrirecon.data.volumes import read_target, read_volume_info, scored_maximum
from mrirecon.errors import UserError


@pytest.mark.parametrize("name, parsed", [
    ("2022061003_T101.h5", ("2022061003", "T1", 1)),
    ("2022061003_T203.h5", ("2022061003", "T2", 3)),
    ("2022061003_FLAIR02.h5", ("2022061003", "FLAIR", 2)),
    ("sim00004_GRE01.h5", ("sim00004", "GRE", 1)),
    ("file1000001.h5", None),
    ("file_brain_AXT2_200_2000019.h5", None),
    ("sim_train_0003.h5", None),
    ("2022061003_T101.nii", None),
])
def test_names(name, parsed):
    assert repetition_of(Path(name)) == parsed


def _files(folder: Path, names: dict[str, int], slices: int = 3, size: int = 16) -> list:
    folder.mkdir(parents=True, exist_ok=True)
    for k, (name, seed) in enumerate(names.items()):
        write_volume(folder / name, slices=slices, coils=2, shape=(size, size), target=(size, size), seed=seed,
                     noise_seed=k, amplitude=1.0)
    return [read_volume_info(folder / name, "multicoil") for name in names]


def test_average_targets_and_their_data_range(tmp_path):
    volumes = _files(tmp_path, {"s1_T101.h5": 1, "s1_T102.h5": 1, "s1_T103.h5": 1, "s1_FLAIR01.h5": 2})
    averaged = with_repetition_targets(volumes, "average", None)
    paths = tuple(tmp_path / f"s1_T10{k}.h5" for k in (1, 2, 3))
    mean = np.mean([read_target(v) for v in volumes[:3]], axis=0)
    for info in averaged[:3]:
        assert info.target_files == paths
        np.testing.assert_allclose(read_target(info), mean, rtol=1e-6)
        np.testing.assert_allclose(read_target(info, 1), mean[1], rtol=1e-6)
        assert info.data_range() == pytest.approx(scored_maximum(mean, (16, 16)))
        assert info.data_range() != pytest.approx(volumes[0].data_range())
    # A group of one keeps its own target.
    assert averaged[3] == volumes[3]
    assert with_repetition_targets(volumes, "separate", None) == volumes


def test_pairs_take_the_next_repetition_in_turn(tmp_path):
    volumes = _files(tmp_path, {"s1_T102.h5": 1, "s1_T101.h5": 1, "s1_T103.h5": 1})
    paired = {v.path.name: v for v in with_repetition_targets(volumes, "pairs", None)}
    assert {name: v.target_files[0].name for name, v in paired.items()} == {
        "s1_T101.h5": "s1_T102.h5", "s1_T102.h5": "s1_T103.h5", "s1_T103.h5": "s1_T101.h5"}
    assert paired["s1_T101.h5"].data_range() == pytest.approx(volumes[0].data_range())  # T102's own


def test_repetitions_that_cannot_share_a_target_are_refused(tmp_path):
    volumes = _files(tmp_path / "a", {"s1_T101.h5": 1}) + _files(tmp_path / "a", {"s1_T102.h5": 1}, slices=4)
    with pytest.raises(UserError, match=r"s1_T102.h5: 4 slices of 16x16, unlike s1_T101.h5 \(3 of 16x16\): "
                                        "repetitions of s1 T1 must image the same slices"):
        with_repetition_targets(volumes, "average", None)
    other = _files(tmp_path / "b", {"scan.h5": 1})
    with pytest.raises(UserError, match="scan.h5: not named like M4Raw's repetitions"):
        with_repetition_targets(other, "pairs", None)
    with pytest.raises(UserError, match="data.repetitions: 'mean', expected one of separate, average, pairs"):
        with_repetition_targets(other, "mean", None)


def test_subjects_shared_between_splits_and_the_summary(tmp_path):
    train = _files(tmp_path / "train", {"s1_T101.h5": 1, "s1_T102.h5": 1, "s1_FLAIR01.h5": 2})
    test = _files(tmp_path / "test", {"s2_T101.h5": 3, "s1_T201.h5": 4, "file1000001.h5": 5})
    ((path, problem),) = shared_subjects({"train": train, "test": test})
    assert path.name == "s1_T201.h5" and "subject s1 is in the test split and in the train split (s1_T101.h5)" in problem
    assert describe_repetitions(train).startswith("M4Raw's repetition files: 1 subject(s), repetitions FLAIR x1, T1 x2")
    assert describe_repetitions(test) is None  # not every file is M4Raw-named
