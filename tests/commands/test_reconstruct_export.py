"""A trained model on single files (command and Python), and exported to TorchScript and ONNX."""

from __future__ import annotations

import h5py
import numpy as np
import pytest
import torch

from cli_helpers import assert_ok, assert_user_error, run_cli, write_config
from fastmri_like import write_volume
from mrirecon.core.checkpoint_files import read_checkpoint
from mrirecon.core.masks import ColumnMaskSampler
from mrirecon.methods import TrainedModel, network_from_checkpoint


@pytest.fixture(scope="module")
def trained(tiny_singlecoil, tmp_path_factory):
    root = tmp_path_factory.mktemp("recon")
    config = write_config(root / "c.yaml", tiny_singlecoil, root / "runs")
    assert_ok(run_cli("fit", "--config", config))
    ckpt = root / "runs" / "tiny" / "version_0" / "checkpoints" / "last.ckpt"
    assert_ok(run_cli("predict", "--config", config, "--ckpt_path", ckpt, "--output_dir", root / "predict"))
    return config, ckpt, root / "predict"


def _read(path):
    with h5py.File(path) as hf:
        return hf["reconstruction"][()], dict(hf.attrs)


def test_reconstruct_equals_predict_for_the_same_file_and_mask(trained, tiny_singlecoil, tmp_path):
    config, ckpt, predicted = trained
    files = sorted((tiny_singlecoil / "singlecoil_test").glob("*.h5"))
    for acc in (4, 8):
        out = tmp_path / f"{acc}x"
        result = run_cli("reconstruct", "--ckpt_path", ckpt, *files, "--out", out, "--acceleration", acc)
        assert_ok(result)
        for f in files:
            ours, attrs = _read(out / f.name)
            reference, _ = _read(predicted / f"{acc}x" / f.name)
            np.testing.assert_array_equal(ours, reference)
            assert attrs["acceleration"] == acc
    # The same with the settings from the config (and an override) instead of the checkpoint.
    assert_ok(run_cli("reconstruct", "--ckpt_path", ckpt, files[0], "--out", tmp_path / "c", "--acceleration", 4,
                      "--config", config, "--data.batch_size", 2))
    np.testing.assert_array_equal(_read(tmp_path / "c" / files[0].name)[0], _read(predicted / "4x" / files[0].name)[0])


def test_python_api_equals_predict(trained, tiny_singlecoil):
    _, ckpt, predicted = trained
    model = TrainedModel.from_checkpoint(ckpt, device="cpu")
    path = sorted((tiny_singlecoil / "singlecoil_test").glob("*.h5"))[0]
    with h5py.File(path) as hf:
        kspace = hf["kspace"][()]
    mask, num_low = ColumnMaskSampler("random", [0.08, 0.04], [4, 8]).fixed(path.name, kspace.shape[-1], 1)
    images = model.reconstruct(kspace, mask, (32, 32), num_low)
    np.testing.assert_array_equal(images, _read(predicted / "8x" / path.name)[0])


def test_files_with_their_own_mask_and_bad_inputs(trained, tmp_path):
    _, ckpt, _ = trained
    masked = tmp_path / "file_test.h5"
    write_volume(masked, slices=2, coils=1, shape=(64, 38), target=None, challenge="singlecoil", mask=(0.08, 4),
                 recon=(32, 32))
    assert_ok(run_cli("reconstruct", "--ckpt_path", ckpt, masked, "--out", tmp_path / "o"))
    images, attrs = _read(tmp_path / "o" / masked.name)
    assert images.shape == (2, 32, 32) and attrs["acceleration"] == 4 and np.isfinite(images).all()

    plain = tmp_path / "plain.h5"
    write_volume(plain, slices=1, coils=1, shape=(64, 38), target=(32, 32), challenge="singlecoil")
    assert_user_error(run_cli("reconstruct", "--ckpt_path", ckpt, plain, "--out", tmp_path / "p"),
                      str(plain), "choose --acceleration from [4, 8]")
    assert_user_error(run_cli("reconstruct", "--ckpt_path", ckpt, tmp_path / "nope.h5", "--out", tmp_path / "p",
                              "--acceleration", 4), "nope.h5", "no such file")


# ONNX takes 12 s: slow, so that the default suite stays under 5 minutes on 2 cores.
@pytest.mark.parametrize("fmt", ["torchscript", pytest.param("onnx", marks=pytest.mark.slow)])
def test_export_round_trips(trained, tmp_path, fmt):
    _, ckpt, _ = trained
    out = tmp_path / ("unet.pt" if fmt == "torchscript" else "unet.onnx")
    assert_ok(run_cli("export", "--ckpt_path", ckpt, "--format", fmt, "--out", out, "--image_size", 32, 32))
    net = network_from_checkpoint(read_checkpoint(ckpt)).eval()
    size = (32, 32) if fmt == "torchscript" else (48, 40)  # ONNX keeps the image size dynamic
    x = torch.randn(3, 1, *size, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected = net(x).numpy()
    if fmt == "torchscript":
        got = torch.jit.load(str(out))(x).detach().numpy()
    else:
        import onnxruntime

        session = onnxruntime.InferenceSession(str(out))
        got = session.run(None, {"image": x.numpy()})[0]
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-4 * np.abs(expected).max())
