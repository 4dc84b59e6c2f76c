"""Scan-specific adaptation: fine-tuning on the scan's own measurement, deterministic, early
stopped on samples it never trains on, forgetting the adapted weights, leaving the checkpoint
untouched; `test` and `predict` honour the config's adapt: section."""

import json

import pytest
import torch

from cli_helpers import assert_ok, assert_user_error, run_cli, write_config
from mrirecon.errors import UserError
from mrirecon.methods.adaptation import AdaptedMethod, AdaptSettings
from mrirecon.methods.base import DataConsistentNetworkMethod, ImageNetworkMethod
from mrirecon.models import DataConsistentUnet, Unet

from test_self_supervised import _batch  # noqa: E402  (the same small k-space batch)


def _method(seed=0):
    torch.manual_seed(seed)
    return DataConsistentNetworkMethod(DataConsistentUnet(chans=4, num_pool_layers=2))


def test_adaptation_is_deterministic_and_forgets_its_weights():
    method = _method()
    before = {k: v.clone() for k, v in method.net.state_dict().items()}
    settings = AdaptSettings(steps=4, lr=1e-2, patience=4)
    batch = _batch(height=32)
    with torch.inference_mode():  # as Lightning's test and predict run
        first = AdaptedMethod(method, settings)(batch)
        again = AdaptedMethod(method, settings)(batch)
    assert torch.equal(first, again)
    assert all(torch.equal(v, before[k]) for k, v in method.net.state_dict().items())
    with torch.no_grad():
        plain = method(batch)
    adapted = AdaptedMethod(method, settings)
    adapted(batch)
    assert adapted.steps_taken[0] > 0 and not torch.equal(first, plain)  # it did fine-tune
    assert adapted.slices == batch.size and adapted.seconds > 0


def test_settings_and_networks_that_cannot_adapt_are_one_line():
    with pytest.raises(UserError, match="adapt.stop_fraction"):
        AdaptSettings(steps=1, stop_fraction=0.0)
    with pytest.raises(UserError, match="adapt.steps"):
        AdaptSettings(steps=-1)
    with pytest.raises(UserError, match="DataConsistentUnet"):
        AdaptedMethod(ImageNetworkMethod(Unet(chans=4, num_pool_layers=2)), AdaptSettings(steps=1))


@pytest.fixture(scope="module")
def trained_dc(tiny_singlecoil, tmp_path_factory):
    """A tiny U-Net with data consistency, trained one epoch: (config, checkpoint)."""
    root = tmp_path_factory.mktemp("adapt")
    config = write_config(root / "dc.yaml", tiny_singlecoil, root / "runs",
                          net={"class_path": "mrirecon.models.DataConsistentUnet",
                               "init_args": {"chans": 4, "num_pool_layers": 2}})
    assert_ok(run_cli("fit", "--config", config))
    return config, root / "runs" / "tiny" / "version_0" / "checkpoints" / "last.ckpt"


def test_test_with_adaptation_records_it_and_leaves_the_checkpoint_untouched(trained_dc, tmp_path):
    config, ckpt = trained_dc
    saved = ckpt.read_bytes()
    plain = run_cli("test", "--config", config, "--ckpt_path", ckpt, "--output_dir", tmp_path / "plain")
    assert_ok(plain)
    result = run_cli("test", "--config", config, "--ckpt_path", ckpt, "--output_dir", tmp_path / "adapted",
                     "--adapt.steps", 3, "--adapt.lr", 1e-2)
    assert_ok(result)
    assert ckpt.read_bytes() == saved
    assert "adaptation: " in result.out and " s a slice" in result.out
    summary = json.loads((tmp_path / "adapted" / "summary.json").read_text())
    record = summary["adaptation"]
    assert record["steps"] == 3 and record["slices"] > 0 and record["seconds_per_slice"] > 0
    assert "adaptation" not in json.loads((tmp_path / "plain" / "summary.json").read_text())
    assert_ok(run_cli("predict", "--config", config, "--ckpt_path", ckpt, "--output_dir", tmp_path / "pred",
                      "--adapt.steps", 2))
    assert any((tmp_path / "pred").rglob("*.h5"))


def test_adaptation_of_a_network_without_data_consistency_is_one_line(tiny_singlecoil, tmp_path):
    config = write_config(tmp_path / "unet.yaml", tiny_singlecoil, tmp_path / "runs")
    assert_ok(run_cli("fit", "--config", config))
    ckpt = tmp_path / "runs" / "tiny" / "version_0" / "checkpoints" / "last.ckpt"
    assert_user_error(run_cli("test", "--config", config, "--ckpt_path", ckpt, "--adapt.steps", 2),
                      "adapt.steps", "DataConsistentUnet")


def test_reconstruct_adapts_per_file_and_leaves_the_checkpoint_untouched(trained_dc, tiny_singlecoil, tmp_path):
    import h5py

    config, ckpt = trained_dc
    saved = ckpt.read_bytes()
    scan = sorted((tiny_singlecoil / "singlecoil_test").glob("*.h5"))[0]
    outputs = {}
    for name, extra in (("plain", []), ("adapted", ["--adapt_steps", 3, "--adapt_lr", 1e-2]),
                        ("again", ["--adapt_steps", 3, "--adapt_lr", 1e-2])):
        result = run_cli("reconstruct", scan, "--ckpt_path", ckpt, "--out", tmp_path / name, "--acceleration", 4,
                         "--device", "cpu", *extra)
        assert_ok(result)
        assert ("adapted in" in result.out) == bool(extra)
        with h5py.File(tmp_path / name / scan.name) as hf:
            outputs[name] = hf["reconstruction"][()]
    assert ckpt.read_bytes() == saved
    assert (outputs["adapted"] == outputs["again"]).all() and not (outputs["adapted"] == outputs["plain"]).all()
    assert_user_error(run_cli("reconstruct", scan, "--ckpt_path", ckpt, "--out", tmp_path / "bad",
                              "--acceleration", 4, "--adapt_steps", -2), "--adapt_steps")
