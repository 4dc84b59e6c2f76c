"""The CMRxRecon 2023 ranking scores a volume as the organisers' run4Ranking.m and Evaluation.py
score its .mat file: same images (central slices, first frames, MATLAB's rounding and crop), same
per-image normalisation, scikit-image's metrics, to 1e-5."""

from __future__ import annotations

import h5py
import numpy as np
import pytest

from cmrxrecon_like import organisers_calmetric, organisers_ranking_images
from mrirecon.data.cmrxrecon import cine_grid
from mrirecon.errors import UserError
from mrirecon.evaluation.cmrxrecon import matlab_round, ranking_crop, ranking_grid, ranking_metrics, ranking_slices


def _ours(matlab):
    """MATLAB's (sx, sy, sz, t) as a converted volume: image z * frames + t."""
    sx, sy, sz, t = matlab.shape
    return np.ascontiguousarray(matlab.transpose(2, 3, 0, 1).reshape(sz * t, sx, sy))


def _pair(rng, shape):
    gt = rng.gamma(2.0, 1.0, size=shape).astype(np.float32)
    # Smooth structure plus noise, and a scale the per-image normalisation must remove.
    pred = (0.7 * gt + 0.3 * rng.gamma(2.0, 1.0, size=shape) * 3.0).astype(np.float32)
    return gt, pred


@pytest.mark.parametrize("shape", [(64, 32, 10, 12), (65, 33, 5, 3), (49, 30, 3, 4), (32, 30, 2, 12),
                                   (37, 31, 1, 5), (512 // 4 + 1, 41, 7, 6)])
def test_ranking_equals_the_organisers_scripts(shape):
    rng = np.random.default_rng(sum(shape))
    gt, pred = _pair(rng, shape)
    psnr, ssim, nmse = organisers_calmetric(organisers_ranking_images(pred), organisers_ranking_images(gt))
    ours = ranking_metrics(_ours(gt), _ours(pred), shape[2], shape[3])
    assert ours["ssim"] == pytest.approx(ssim, abs=1e-5)
    assert ours["psnr"] == pytest.approx(psnr, abs=1e-4)
    assert ours["nmse"] == pytest.approx(nmse, rel=1e-5)


def test_matlab_rounding_and_crop_are_not_pythons():
    assert [matlab_round(x) for x in (0.5, 1.5, 2.5, 2.4999)] == [1, 2, 3, 2]
    # 5 slices: MATLAB's round(2.5) = 3 gives 1-based slices 2:3, 0-based 1 and 2 (Python's
    # round would give 0 and 1).
    assert ranking_slices(5) == [1, 2] and ranking_slices(10) == [3, 4] and ranking_slices(2) == [0, 1]
    # 512 rows: 171 of them from row 171 (crop.m), not 170 (the (m - s) // 2 of a centre crop).
    rows, cols = ranking_crop(512, 246)
    assert (rows.start, rows.stop, cols.start, cols.stop) == (171, 342, 62, 185)


def test_only_the_ranked_images_count():
    rng = np.random.default_rng(1)
    gt, pred = _pair(rng, (60, 40, 6, 12))
    before = ranking_metrics(_ours(gt), _ours(pred), 6, 12)
    spoiled = pred.copy()
    spoiled[:, :, 0] = 0          # a slice that is not central
    spoiled[:, :, :, 3:] = 0      # frames after the third
    spoiled[:5] = 0               # rows outside the crop
    assert ranking_metrics(_ours(gt), _ours(spoiled), 6, 12) == before
    spoiled[30, 20, 2, 0] += 5.0  # a ranked pixel
    assert ranking_metrics(_ours(gt), _ours(spoiled), 6, 12)["ssim"] != before["ssim"]


def test_a_perfect_reconstruction_scores_one_and_infinity():
    gt, _ = _pair(np.random.default_rng(2), (40, 30, 4, 3))
    scores = ranking_metrics(_ours(gt), 2.5 * _ours(gt), 4, 3)  # the scale is divided out
    assert scores["ssim"] == pytest.approx(1.0) and scores["nmse"] == pytest.approx(0.0, abs=1e-12)
    assert scores["psnr"] > 100


def test_refusals_name_the_file():
    gt, pred = _pair(np.random.default_rng(3), (40, 30, 4, 3))
    blank = pred.copy()
    blank[:, :, 1, 2] = 0
    with pytest.raises(UserError, match=r"r\.h5: the reconstruction of slice 1, frame 2 is zero"):
        ranking_metrics(_ours(gt), _ours(blank), 4, 3, "r.h5")
    with pytest.raises(UserError, match="2 frames; the CMRxRecon ranking scores the first 3"):
        ranking_metrics(_ours(gt)[:8], _ours(pred)[:8], 4, 2, "r.h5")


def test_the_grid_comes_from_the_converted_file(tmp_path):
    path = tmp_path / "P001_cine_sax.h5"
    with h5py.File(path, "w") as hf:
        hf.attrs["cine_slices"], hf.attrs["cine_frames"] = 4, 3
    assert cine_grid(path, 12) == (4, 3)
    with pytest.raises(UserError, match="does not give its 10 images"):
        cine_grid(path, 10)
    with h5py.File(path, "a") as hf:
        hf.attrs["cine_frames"] = 2.5
    with pytest.raises(UserError, match="cine_frames 2.5"):
        cine_grid(path, 12)
    other = tmp_path / "file1000.h5"
    h5py.File(other, "w").close()
    with pytest.raises(UserError, match="file1000.h5: no cine_slices/cine_frames attributes"):
        cine_grid(other, 12)


def test_a_volume_of_one_frame_is_refused_by_its_own_name(tmp_path):
    # report names the converted volume (what has too few frames), not a reconstruction of it.
    path = tmp_path / "P001_cine_lax.h5"
    with h5py.File(path, "w") as hf:
        hf.attrs["cine_slices"], hf.attrs["cine_frames"] = 3, 1
    with pytest.raises(UserError) as caught:
        ranking_grid(path, 3)
    assert str(caught.value) == f"{path}: 1 frame per slice; the CMRxRecon ranking scores the first 3"
    with h5py.File(path, "a") as hf:
        hf.attrs["cine_frames"] = 4
    assert ranking_grid(path, 12) == (3, 4)
