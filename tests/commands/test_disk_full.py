"""A full disk during the commands that write files: one line, exit 2, and nothing half-written.

The disk "fills" at a file size limit (``RLIMIT_FSIZE``; Python ignores SIGXFSZ, so writes past
it fail with EFBIG, which mrirecon reports as a full disk). Before these fixes, HDF5 wrote a
reconstruction with holes past the limit, renamed it into place and crashed at exit (SIGSEGV);
``torch.jit.save`` aborted the interpreter; a test left a folder with metrics.csv and no summary.
"""

from __future__ import annotations

import contextlib
import resource
import shutil

import h5py
import numpy as np
import pytest
import torch

from cli_helpers import assert_ok, assert_user_error, run_cli, write_config
from mrirecon.core.checkpoint_files import read_checkpoint
from mrirecon.methods import network_from_checkpoint


@pytest.fixture(scope="module")
def trained(tiny_singlecoil, tmp_path_factory):
    root = tmp_path_factory.mktemp("full")
    config = write_config(root / "c.yaml", tiny_singlecoil, root / "runs")
    assert_ok(run_cli("fit", "--config", config))
    return config, root / "runs" / "tiny" / "version_0" / "checkpoints" / "last.ckpt"


@contextlib.contextmanager
def file_size_limit(limit: int):
    """No file this process writes may grow past ``limit`` bytes (the soft limit, restored after)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))


def tree(folder):
    """Every path under ``folder`` (hidden ones too) with its bytes."""
    return {p.relative_to(folder): p.read_bytes() if p.is_file() else None for p in sorted(folder.rglob("*"))}


def test_predict_and_test_onto_a_full_disk_keep_the_previous_output(trained, tmp_path):
    config, ckpt = trained
    for command in ("predict", "test"):
        out = tmp_path / command / "out"
        with file_size_limit(4096):  # below one reconstructed volume (4 slices of 32x32 float32)
            result = run_cli(command, "--config", config, "--ckpt_path", ckpt, "--output_dir", out)
        assert_user_error(result, str(out), "cannot write", "disk full")
        assert not (tmp_path / command).exists()  # no folder, no staging folder, no partial file

        assert_ok(run_cli(command, "--config", config, "--ckpt_path", ckpt, "--output_dir", out))
        before = tree(tmp_path / command)
        assert before
        with file_size_limit(4096):
            assert_user_error(run_cli(command, "--config", config, "--ckpt_path", ckpt, "--output_dir", out,
                                      "--data.accelerations", "[4]", "--data.center_fractions", "[0.08]"), "disk full")
        assert tree(tmp_path / command) == before

    # Test's two files: the disk fills between metrics.csv and summary.json; neither changes.
    out = tmp_path / "test" / "out"
    small, large = sorted(((out / n).stat().st_size, n) for n in ("metrics.csv", "summary.json"))
    assert small[0] < large[0] // 2
    before = tree(out)
    with file_size_limit((small[0] + large[0]) // 2):
        result = run_cli("test", "--config", config, "--ckpt_path", ckpt, "--output_dir", out, "--model.method_name", "renamed")
    assert_user_error(result, large[1], "disk full")
    assert tree(out) == before


def test_reconstruct_onto_a_full_disk_leaves_no_folder(trained, tiny_singlecoil, tmp_path):
    _, ckpt = trained
    scan = sorted((tiny_singlecoil / "singlecoil_test").glob("*.h5"))[0]
    with file_size_limit(4096):
        result = run_cli("reconstruct", "--ckpt_path", ckpt, scan, "--out", tmp_path / "a" / "b", "--acceleration", 4)
    assert_user_error(result, "b/" + scan.name, "cannot write", "disk full")
    assert not (tmp_path / "a").exists()
    # A file refused before any reconstruction leaves no folder either.
    result = run_cli("reconstruct", "--ckpt_path", ckpt, scan, "--out", tmp_path / "a" / "b", "--acceleration", 3)
    assert_user_error(result, scan.name, "choose --acceleration from [4, 8]")
    assert not (tmp_path / "a").exists()
    assert_ok(run_cli("reconstruct", "--ckpt_path", ckpt, scan, "--out", tmp_path / "a" / "b", "--acceleration", 4))
    with h5py.File(tmp_path / "a" / "b" / scan.name) as hf:
        assert np.isfinite(hf["reconstruction"][()]).all()


@pytest.mark.parametrize("fmt", ["torchscript", pytest.param("onnx", marks=pytest.mark.slow)])
def test_export_onto_a_full_disk_leaves_nothing(trained, tmp_path, fmt):
    _, ckpt = trained
    out = tmp_path / "export" / "net.bin"
    with file_size_limit(4096):  # the tiny U-Net's weights are about 30 kB
        result = run_cli("export", "--ckpt_path", ckpt, "--format", fmt, "--out", out, "--image_size", 32, 32)
    assert_user_error(result, str(out), "cannot write", "disk full")
    assert not out.parent.exists() or not list(out.parent.iterdir())


@pytest.mark.slow  # ONNX export takes about 12 s
def test_onnx_export_serves_every_image_size_and_travels_alone(trained, tmp_path):
    import onnxruntime

    _, ckpt = trained
    net = network_from_checkpoint(read_checkpoint(ckpt)).eval()
    sizes = [(9, 9), (10, 10), (33, 33), (8, 4), (4, 8), (64, 38), (32, 32)]
    for traced_at in [(9, 9), (32, 32)]:
        out = tmp_path / f"{traced_at[0]}" / "unet.onnx"
        assert_ok(run_cli("export", "--ckpt_path", ckpt, "--format", "onnx", "--out", out, "--image_size", *traced_at))
        assert [p.name for p in out.parent.iterdir()] == ["unet.onnx"]  # weights inside, no side file
        moved = tmp_path / "elsewhere" / "model.onnx"
        moved.parent.mkdir(exist_ok=True)
        shutil.move(out, moved)
        session = onnxruntime.InferenceSession(str(moved))
        for size in sizes:
            x = torch.randn(2, 1, *size, generator=torch.Generator().manual_seed(sum(size)))
            with torch.no_grad():
                expected = net(x).numpy()
            got = session.run(None, {"image": x.numpy()})[0]
            assert got.shape == expected.shape
            np.testing.assert_allclose(got, expected, rtol=0, atol=1e-4 * np.abs(expected).max(), err_msg=str(size))
