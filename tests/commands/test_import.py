"""``mrirecon import``: fastMRI's networks, saved as state dicts, reconstruct in our pipeline as
in fastMRI's own (its data transforms, its models, its inference scripts' steps)."""

from __future__ import annotations

import warnings

import h5py
import numpy as np
import pytest
import torch
import yaml
from fastmri.data import SliceDataset
from fastmri.data.transforms import UnetDataTransform, VarNetDataTransform, center_crop
from fastmri.models import Unet as FastmriUnet
from fastmri.models import VarNet as FastmriVarNet

from cli_helpers import assert_ok, assert_user_error, run_cli
from fastmri_like import write_volume

UNET = {"class_path": "mrirecon.models.Unet", "init_args": {"chans": 4, "num_pool_layers": 2, "norm": "instance"}}
VARNET = {"class_path": "mrirecon.models.VarNet",
          "init_args": {"num_cascades": 2, "chans": 4, "pools": 2, "sens_chans": 4, "sens_pools": 2, "norm": "instance"}}


def _test_split(root, challenge):
    """fastMRI test-set files: undersampled k-space with its mask, no target (one with padding)."""
    folder = root / f"{challenge}_test"
    folder.mkdir(parents=True)
    coils = 1 if challenge == "singlecoil" else 4
    write_volume(folder / "file_a.h5", slices=3, coils=coils, shape=(64, 48), target=None, challenge=challenge,
                 mask=(0.08, 4), recon=(32, 32), seed=1)
    write_volume(folder / "file_b.h5", slices=2, coils=coils, shape=(64, 52), target=None, challenge=challenge,
                 mask=(0.08, 8), recon=(40, 40), padding=(3, 50), seed=2)
    return folder


def _config(tmp_path, root, challenge, net):
    config = {"trainer": {"accelerator": "cpu", "devices": 1, "logger": False, "enable_progress_bar": False},
              "model": {"net": net}, "data": {"data_path": str(root), "challenge": challenge, "num_workers": 0}}
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def _ours(folder, name):
    with h5py.File(folder / name) as hf:
        return hf["reconstruction"][()]


@pytest.mark.parametrize("challenge", ["singlecoil", "multicoil"])
def test_an_imported_fastmri_unet_reconstructs_as_fastmri_does(challenge, tmp_path):
    torch.manual_seed(0)
    reference = FastmriUnet(in_chans=1, out_chans=1, chans=4, num_pool_layers=2, drop_prob=0.0).eval()
    torch.save(reference.state_dict(), tmp_path / "unet_state_dict.pt")
    split = _test_split(tmp_path / "data", challenge)
    config = _config(tmp_path, tmp_path / "data", challenge, UNET)
    assert_ok(run_cli("import", str(tmp_path / "unet_state_dict.pt"), "--config", str(config), "--out", str(tmp_path / "u.ckpt")))
    result = run_cli("predict", "--config", str(config), "--ckpt_path", str(tmp_path / "u.ckpt"),
                     "--output_dir", str(tmp_path / "out"))
    assert_ok(result)
    scored = tmp_path / "scored"
    (scored / f"{challenge}_test").mkdir(parents=True)
    write_volume(scored / f"{challenge}_test" / "file_c.h5", slices=2, coils=1 if challenge == "singlecoil" else 4,
                 shape=(64, 48), target=(32, 32), challenge=challenge, seed=3)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = run_cli("test", "--config", str(config), "--data.data_path", str(scored), "--data.accelerations", "[4]",
                         "--data.center_fractions", "[0.08]", "--ckpt_path", str(tmp_path / "u.ckpt"))
    assert_ok(result)
    # Fourth battery: Lightning's "dirpath has changed from None" warning at exit 0.
    assert not [w for w in caught if "dirpath" in str(w.message)] and "dirpath" not in result.err

    # fastMRI's run_pretrained_unet_inference.py, with its output un-normalised (the script
    # computes `output * std + mean` and then drops it).
    dataset = SliceDataset(split, challenge, transform=UnetDataTransform(challenge))
    expected: dict[str, list] = {}
    with torch.no_grad():
        for sample in dataset:
            output = reference(sample.image[None, None])[0, 0] * sample.std + sample.mean
            expected.setdefault(sample.fname, []).append((sample.slice_num, output.numpy()))
    assert sorted(expected) == ["file_a.h5", "file_b.h5"]
    for fname, slices in expected.items():
        want = np.stack([image for _, image in sorted(slices, key=lambda s: s[0])])
        got = _ours(tmp_path / "out", fname)
        assert got.shape == want.shape
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-5 * np.abs(want).max(), err_msg=fname)
    if challenge == "singlecoil":  # the other commands read the checkpoint alike
        assert_ok(run_cli("reconstruct", str(split / "file_a.h5"), "--ckpt_path", str(tmp_path / "u.ckpt"),
                          "--out", str(tmp_path / "single")))
        np.testing.assert_allclose(_ours(tmp_path / "single", "file_a.h5"), _ours(tmp_path / "out", "file_a.h5"),
                                   rtol=0, atol=1e-6)
        assert_ok(run_cli("export", "--ckpt_path", str(tmp_path / "u.ckpt"), "--format", "torchscript",
                          "--out", str(tmp_path / "u.pt"), "--image_size", "32", "32"))


def test_an_imported_fastmri_varnet_reconstructs_as_fastmri_does(tmp_path):
    torch.manual_seed(0)
    reference = FastmriVarNet(num_cascades=2, chans=4, pools=2, sens_chans=4, sens_pools=2).eval()
    torch.save(reference.state_dict(), tmp_path / "varnet_state_dict.pt")
    split = _test_split(tmp_path / "data", "multicoil")
    config = _config(tmp_path, tmp_path / "data", "multicoil", VARNET)
    assert_ok(run_cli("import", str(tmp_path / "varnet_state_dict.pt"), "--config", str(config), "--out", str(tmp_path / "v.ckpt")))
    assert_ok(run_cli("predict", "--config", str(config), "--ckpt_path", str(tmp_path / "v.ckpt"),
                      "--output_dir", str(tmp_path / "out")))

    # fastMRI's run_pretrained_varnet_inference.py: the model on the file's masked k-space and
    # mask, the RSS image cropped to the header's reconstruction size.
    dataset = SliceDataset(split, "multicoil", transform=VarNetDataTransform())
    expected: dict[str, list] = {}
    with torch.no_grad():
        for sample in dataset:
            output = reference(sample.masked_kspace[None], sample.mask[None])
            output = center_crop(output, sample.crop_size)[0]
            expected.setdefault(sample.fname, []).append((sample.slice_num, output.numpy()))
    for fname, slices in expected.items():
        want = np.stack([image for _, image in sorted(slices, key=lambda s: s[0])])
        np.testing.assert_allclose(_ours(tmp_path / "out", fname), want, rtol=0, atol=1e-5 * np.abs(want).max(),
                                   err_msg=fname)


def test_weights_that_do_not_fit_and_files_that_are_not_state_dicts_are_one_line(tmp_path):
    _test_split(tmp_path / "data", "singlecoil")
    config = _config(tmp_path, tmp_path / "data", "singlecoil", UNET)
    wider = FastmriUnet(in_chans=1, out_chans=1, chans=8, num_pool_layers=2)
    torch.save(wider.state_dict(), tmp_path / "wider.pt")
    out = tmp_path / "x.ckpt"
    err = assert_user_error(run_cli("import", str(tmp_path / "wider.pt"), "--config", str(config), "--out", str(out)),
                            "wider.pt: the weights do not fit the config's Unet", "of another shape", "set model.net")
    assert "[8, 1, 3, 3] in the file, [4, 1, 3, 3] in the network" in err
    grouped = _config(tmp_path, tmp_path / "data", "singlecoil", {**UNET, "init_args": {**UNET["init_args"], "norm": "group"}})
    torch.save(FastmriUnet(1, 1, chans=4, num_pool_layers=2).state_dict(), tmp_path / "same.pt")
    assert_user_error(run_cli("import", str(tmp_path / "same.pt"), "--config", str(grouped), "--out", str(out)),
                      "missing (first", "fastMRI's networks use norm: instance, this one norm: group")
    torch.save(FastmriUnet(1, 1, chans=4, num_pool_layers=3).state_dict(), tmp_path / "deeper.pt")
    assert_user_error(run_cli("import", str(tmp_path / "deeper.pt"), "--config", str(config), "--out", str(out)),
                      "deeper.pt: the weights do not fit", "unexpected (first")
    torch.save({"epoch": 3}, tmp_path / "not_weights.pt")
    assert_user_error(run_cli("import", str(tmp_path / "not_weights.pt"), "--config", str(config), "--out", str(out)),
                      "not_weights.pt: not a state dict")
    (tmp_path / "text.pt").write_text("hello")
    assert_user_error(run_cli("import", str(tmp_path / "text.pt"), "--config", str(config), "--out", str(out)), "text.pt")
    broken = {k: v.clone() for k, v in FastmriUnet(1, 1, chans=4, num_pool_layers=2).state_dict().items()}
    next(v for v in broken.values() if v.is_floating_point())[0] = float("nan")
    torch.save(broken, tmp_path / "nan.pt")
    assert_user_error(run_cli("import", str(tmp_path / "nan.pt"), "--config", str(config), "--out", str(out)),
                      "nan.pt: the weights are not finite")
    good = tmp_path / "good.ckpt"  # a Lightning-style name: it must not become its own output
    torch.save(FastmriUnet(1, 1, chans=4, num_pool_layers=2).state_dict(), good)
    assert_user_error(run_cli("import", str(good), "--config", str(config), "--out", str(good)), "would overwrite the input")
    assert_user_error(run_cli("import", str(good), "--config", str(config), "--out", str(tmp_path / "u.pt")), "u.pt: the checkpoint's name must end in .ckpt")
    assert not out.exists() and not list(tmp_path.glob(".*partial"))


def test_an_imported_checkpoint_is_tested_and_recorded_like_a_trained_one(tiny_singlecoil, tmp_path):
    import json

    torch.save(FastmriUnet(1, 1, chans=4, num_pool_layers=2).state_dict(), tmp_path / "sd.pt")
    config = _config(tmp_path, tiny_singlecoil, "singlecoil", UNET)
    # A fastMRI Lightning checkpoint (UnetModule keeps the network as `unet`) is read the same way.
    torch.save({"state_dict": {f"unet.{k}": v for k, v in torch.load(tmp_path / "sd.pt").items()},
                "pytorch-lightning_version": "1.9"}, tmp_path / "fastmri_module.ckpt")
    for source in ("sd.pt", "fastmri_module.ckpt"):
        assert_ok(run_cli("import", str(tmp_path / source), "--config", str(config), "--out", str(tmp_path / "i.ckpt")))
    assert_ok(run_cli("test", "--config", str(config), "--ckpt_path", str(tmp_path / "i.ckpt"), "--output_dir", str(tmp_path / "t")))
    record = json.loads((tmp_path / "t" / "summary.json").read_text())["provenance"]["checkpoint"]
    assert record["imported_from"]["file"].endswith("fastmri_module.ckpt") and record["global_step"] == 0
