"""No command writes over a file it reads, whatever the path spelling, and no two outputs share a
name: each is one error line before any work, and the inputs stay as they were."""

from __future__ import annotations

import hashlib
import os
import shutil

import pytest

from cli_helpers import assert_ok, assert_user_error, run_cli, write_config
from fastmri_like import write_volume


def _digest(folder):
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def checkpoint(tiny_singlecoil, tmp_path_factory):
    root = tmp_path_factory.mktemp("overwrite")
    config = write_config(root / "c.yaml", tiny_singlecoil, root / "runs")
    assert_ok(run_cli("fit", "--config", config, "--trainer.max_steps", 2))
    return config, root / "runs" / "tiny" / "version_0" / "checkpoints" / "last.ckpt"


def _scans(tiny_singlecoil, folder):
    folder.mkdir(parents=True, exist_ok=True)
    for f in sorted((tiny_singlecoil / "singlecoil_test").glob("*.h5"))[:2]:
        shutil.copy(f, folder / f.name)
    return sorted(folder.glob("*.h5"))


@pytest.mark.parametrize("spelling", ["same", "dot", "dotdot", "symlink"])
def test_reconstruct_into_the_inputs_folder_is_refused(checkpoint, tiny_singlecoil, tmp_path, monkeypatch, spelling):
    _, ckpt = checkpoint
    scans = _scans(tiny_singlecoil, tmp_path / "scans")
    before = _digest(tmp_path / "scans")
    monkeypatch.chdir(tmp_path)
    out = {"same": tmp_path / "scans", "dot": "./scans", "dotdot": "scans/../scans", "symlink": tmp_path / "link"}[spelling]
    if spelling == "symlink":
        os.symlink(tmp_path / "scans", tmp_path / "link")
    result = run_cli("reconstruct", "--ckpt_path", ckpt, *scans, "--out", out, "--acceleration", 4)
    assert_user_error(result, "would overwrite the input", scans[0].name)
    assert _digest(tmp_path / "scans") == before


def test_reconstruct_of_a_hard_link_target_is_refused(checkpoint, tiny_singlecoil, tmp_path):
    _, ckpt = checkpoint
    (scan, _) = _scans(tiny_singlecoil, tmp_path / "scans")
    (tmp_path / "out").mkdir()
    os.link(scan, tmp_path / "out" / scan.name)
    result = run_cli("reconstruct", "--ckpt_path", ckpt, scan, "--out", tmp_path / "out", "--acceleration", 4)
    assert_user_error(result, "would overwrite the input")


def test_two_inputs_of_one_name_are_refused_before_any_output(checkpoint, tiny_singlecoil, tmp_path):
    _, ckpt = checkpoint
    a = _scans(tiny_singlecoil, tmp_path / "a")[0]
    b = tmp_path / "b" / a.name
    b.parent.mkdir()
    shutil.copy(a, b)
    result = run_cli("reconstruct", "--ckpt_path", ckpt, a, b, "--out", tmp_path / "out", "--acceleration", 4)
    assert_user_error(result, "would both be written here", str(a), str(b))
    assert not (tmp_path / "out").exists()


def test_predict_into_a_split_of_files_with_their_own_masks_is_refused(checkpoint, tmp_path):
    config, ckpt = checkpoint
    split = tmp_path / "data" / "singlecoil_test"
    split.mkdir(parents=True)
    for i in range(2):
        write_volume(split / f"file{i}.h5", slices=2, coils=1, shape=(32, 32), target=None, challenge="singlecoil",
                     mask=(0.08, 4), seed=i, recon=(32, 32))
    before = _digest(split)
    result = run_cli("predict", "--config", config, "--ckpt_path", ckpt, "--data.data_path", tmp_path / "data",
                     "--output_dir", split)
    assert_user_error(result, "would overwrite the input", "file0.h5")
    assert _digest(split) == before
    # Elsewhere it works, flat, one file per volume.
    assert_ok(run_cli("predict", "--config", config, "--ckpt_path", ckpt, "--data.data_path", tmp_path / "data",
                      "--output_dir", tmp_path / "recons"))
    assert sorted(p.name for p in (tmp_path / "recons").glob("*.h5")) == ["file0.h5", "file1.h5"]


def test_export_over_its_checkpoint_is_refused(checkpoint, tmp_path):
    _, ckpt = checkpoint
    copy = tmp_path / "model.ckpt"
    shutil.copy(ckpt, copy)
    before = copy.read_bytes()
    result = run_cli("export", "--ckpt_path", copy, "--format", "torchscript", "--out", tmp_path / "." / "model.ckpt")
    assert_user_error(result, "would overwrite the input")
    assert copy.read_bytes() == before


@pytest.mark.parametrize("args, fragment", [
    (["--batch_size", "0"], "--batch_size/--batch-size: expected a positive integer"),
    (["--batch_size", "-1"], "--batch_size"),
    (["--device", "bogus"], "--device 'bogus': not a device"),
    (["--device", "cuda"], "no CUDA device"),
    (["--device", "mps"], "reconstructs on cpu or cuda"), (["--device", "xpu"], "reconstructs on cpu or cuda"),
    (["--device", "meta"], "reconstructs on cpu or cuda"), (["--device", "ipu"], "reconstructs on cpu or cuda"),
])
def test_reconstruct_settings_are_checked_first(checkpoint, tiny_singlecoil, tmp_path, args, fragment):
    import torch

    if args == ["--device", "cuda"] and torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    _, ckpt = checkpoint
    scan = _scans(tiny_singlecoil, tmp_path / "scans")[0]
    assert_user_error(run_cli("reconstruct", "--ckpt_path", ckpt, scan, "--out", tmp_path / "o", *args), fragment)
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("size, fragment", [
    (["0", "0"], "positive integer"), (["-4", "32"], "positive integer"), (["1", "1"], "at least 8x4 or 4x8"),
    (["3", "7"], "at least 8x4 or 4x8"), (["4", "4"], "got 4x4"), (["5", "4"], "got 5x4"), (["7", "7"], "got 7x7")])
def test_export_sizes_too_small_for_the_network_are_refused(checkpoint, tmp_path, size, fragment):
    # chans 4, 2 pools: the deepest block's group norm needs two pixels, so 8x4 at least
    _, ckpt = checkpoint
    result = run_cli("export", "--ckpt_path", ckpt, "--format", "torchscript", "--out", tmp_path / "m.pt", "--image_size", *size)
    assert_user_error(result, fragment)
    assert not (tmp_path / "m.pt").exists()


@pytest.mark.parametrize("size", [["8", "4"], ["4", "8"], ["8", "5"]])
def test_export_takes_the_smallest_sizes_the_network_takes(checkpoint, tmp_path, size):
    _, ckpt = checkpoint
    result = run_cli("export", "--ckpt_path", ckpt, "--format", "torchscript", "--out", tmp_path / "m.pt", "--image_size", *size)
    assert result.code == 0, result.err
    assert (tmp_path / "m.pt").is_file()


def test_argument_mistakes_are_one_line(tmp_path):
    result = run_cli("baseline", "--config", tmp_path / "c.yaml")
    assert_user_error(result, "mrirecon baseline: the following arguments are required: --method")
    assert "usage:" not in result.err


@pytest.mark.parametrize("command", ["test", "predict", "report", "baseline"])
def test_a_refused_evaluation_leaves_no_output_folder(checkpoint, tiny_singlecoil, tmp_path, command):
    # The split's last volume is found broken only once the run reads it, after the output
    # folder was made: the folders the command created go again, the ones that were there stay.
    config, ckpt = checkpoint
    data = tmp_path / "data"
    shutil.copytree(tiny_singlecoil, data)
    broken = sorted((data / "singlecoil_test").glob("*.h5"))[-1]
    broken.write_bytes(b"not an HDF5 file")
    out = tmp_path / "new" / "deeper" / "out"
    arguments = {
        "test": ["test", "--config", config, "--ckpt_path", ckpt, "--output_dir", out],
        "predict": ["predict", "--config", config, "--ckpt_path", ckpt, "--output_dir", out],
        "report": ["report", "--config", config, "--method", f"unet={ckpt}", "--out", out],
        "baseline": ["baseline", "--config", config, "--method", "zero-filled", "--output_dir", out],
    }[command]
    result = run_cli(*arguments, "--data.data_path", data)
    assert_user_error(result, broken.name)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data"], (result.err, sorted(map(str, tmp_path.rglob("*"))))
