import json
import subprocess
import sys

import h5py
import numpy as np
import pytest
import yaml

from cli_helpers import run_baseline
from mrirecon.methods import CSTVSettings
from mrirecon.errors import UserError


def summary_of(out):
    return json.loads((out / "summary.json").read_text())


def _config(tmp_path, root, challenge="singlecoil", cs_tv=None):
    config = {
        "data": {"data_path": str(root), "challenge": challenge, "center_fractions": [0.08, 0.04],
                 "accelerations": [4, 8], "batch_size": 4, "num_workers": 0},
        "cs_tv": cs_tv or {"iterations": 60, "lam": {4: 0.003, 8: 0.003}},
    }
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def test_zero_filled_baseline_writes_submission_files_and_metrics(tiny_singlecoil, tmp_path):
    out = run_baseline("zero-filled", _config(tmp_path, tiny_singlecoil), tmp_path / "zf", progress=False)
    summary = summary_of(out)
    assert set(summary["methods"]) == {"zero-filled"} and set(summary["methods"]["zero-filled"]) == {"4x", "8x"}
    files = sorted((out / "reconstructions" / "4x").glob("*.h5"))
    assert [f.name for f in files] == sorted(p.name for p in (tiny_singlecoil / "singlecoil_test").glob("*.h5"))
    with h5py.File(files[0]) as hf, h5py.File(tiny_singlecoil / "singlecoil_test" / files[0].name) as ref:
        assert hf["reconstruction"].shape == ref["reconstruction_esc"].shape
        assert hf["reconstruction"].dtype == np.float32
    assert (out / "metrics.csv").read_text().count("\n") == 1 + 2 * len(files)


@pytest.mark.parametrize("challenge", ["singlecoil", "multicoil"])
def test_cs_tv_beats_zero_filled_on_the_same_masks(challenge, request, tmp_path):
    root = request.getfixturevalue(f"tiny_{challenge}")
    config = _config(tmp_path, root, challenge)
    zf = summary_of(run_baseline("zero-filled", config, tmp_path / "zf", progress=False))["methods"]["zero-filled"]
    cs_summary = summary_of(run_baseline("cs-tv", config, tmp_path / "cs", progress=False))["methods"]
    cs = cs_summary["cs-tv"]
    # The zero-filled row beside it comes from the same masks.
    assert cs_summary["zero-filled"] == zf
    assert cs["4x"]["nmse"]["mean"] < zf["4x"]["nmse"]["mean"]
    assert cs["4x"]["ssim"]["mean"] > zf["4x"]["ssim"]["mean"]
    if challenge == "singlecoil":
        # Multi-coil 8x keeps round(38 * 0.04) = 2 centre columns of these 32-pixel images: too
        # few to estimate coil maps from, so only single-coil is held to 8x here.
        assert cs["8x"]["nmse"]["mean"] < zf["8x"]["nmse"]["mean"]


def test_lambda_keys_from_printed_configs_are_accepted():
    settings = CSTVSettings(lam={"4": 0.002, "8.0": 0.004})
    assert settings.lam_for(4.0) == 0.002 and settings.lam_for(8) == 0.004
    assert settings.lam_for(6) == settings.lam_default


def test_bad_baseline_inputs_are_one_line_errors(tiny_singlecoil, tmp_path):
    with pytest.raises(UserError, match="missing.yaml"):
        run_baseline("zero-filled", tmp_path / "missing.yaml", tmp_path / "o")
    bad = _config(tmp_path, tiny_singlecoil, cs_tv={"iterationz": 3})
    with pytest.raises(UserError, match="iterationz"):
        run_baseline("cs-tv", bad, tmp_path / "o")
    with pytest.raises(UserError, match="cs_tv.iterations: must be at least 1"):
        run_baseline("cs-tv", _config(tmp_path, tiny_singlecoil), tmp_path / "o", ["--cs_tv.iterations", "0"])
    result = subprocess.run(
        [sys.executable, "-m", "mrirecon", "baseline", "--method", "cs-tv", "--config", str(tmp_path / "nope.yaml")],
        capture_output=True, text=True,
    )
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
    assert result.stderr.startswith("mrirecon: error:") and "nope.yaml" in result.stderr and result.stderr.count("\n") == 1


def test_overrides_reach_the_data_section(tiny_singlecoil, tiny_multicoil, tmp_path):
    # The one config parser: --data.* works for baselines as for fit.
    config = _config(tmp_path, tmp_path / "does-not-exist")
    out = run_baseline("zero-filled", config, tmp_path / "zf", ["--data.data_path", str(tiny_multicoil),
                                                                 "--data.challenge", "multicoil"], progress=False)
    assert sorted(p.name for p in (out / "reconstructions" / "4x").iterdir()) == sorted(
        p.name for p in (tiny_multicoil / "multicoil_test").iterdir())


def test_a_split_mixing_files_with_and_without_targets_is_refused(tiny_singlecoil, tmp_path):
    import shutil

    from fastmri_like import write_volume

    data = tmp_path / "data"
    shutil.copytree(tiny_singlecoil, data)
    write_volume(data / "singlecoil_test" / "no_target.h5", slices=2, coils=1, shape=(32, 32), target=None,
                 challenge="singlecoil", mask=(0.08, 4), recon=(32, 32))
    with pytest.raises(UserError, match="no_target.h5: has no target while other files"):
        run_baseline("zero-filled", _config(tmp_path, data), tmp_path / "zf", progress=False)
    assert not (tmp_path / "zf" / "metrics.csv").exists()


def test_a_baseline_stopped_half_way_leaves_the_previous_output_as_it_was(tiny_singlecoil, tmp_path):
    from cli_helpers import run_baselines

    config = _config(tmp_path, tiny_singlecoil)
    out = tmp_path / "zf"
    run_baselines("zero-filled", config, out, splits=["test", "val"])
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    # The test split is reconstructed again (at 4x only) before the second split is refused.
    only_4x = ["--data.accelerations", "[4]", "--data.center_fractions", "[0.08]"]
    with pytest.raises(UserError, match="nope"):
        run_baselines("zero-filled", config, out, only_4x, splits=["test", "nope"])
    assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file()} == before
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".zf")] == []
    # A run that completes replaces the output whole.
    run_baselines("zero-filled", config, out, only_4x, splits=["test", "val"])
    assert "8x" in before[out / "test" / "metrics.csv"].decode() and "8x" not in (out / "test" / "metrics.csv").read_text()
