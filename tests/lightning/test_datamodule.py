from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch
from fastmri.data import SliceDataset
from fastmri.data.subsample import create_mask_for_mask_type
from fastmri.data.transforms import UnetDataTransform

from mrirecon.data.batch import network_input, normalized_target
from mrirecon.lightning.datamodule import ReconDataModule


def _dm(root, challenge="singlecoil", **kw):
    kw.setdefault("num_workers", 0)
    return ReconDataModule(str(root), challenge=challenge, center_fractions=[0.08, 0.04], accelerations=[4, 8], **kw)


def _masks(loader):
    out = {}
    for batch in loader:
        for i, f in enumerate(batch.fname):
            out.setdefault((f, float(batch.acceleration[i]), int(batch.slice_num[i])), batch.mask[i].clone())
    return out


def test_val_masks_fixed_across_epochs_and_instances(tiny_singlecoil):
    dm = _dm(tiny_singlecoil, batch_size=3)
    dm.setup("fit")
    first, second = _masks(dm.val_dataloader()), _masks(dm.val_dataloader())
    other = _dm(tiny_singlecoil, batch_size=1, seed=99)
    other.setup("fit")
    third = _masks(other.val_dataloader())
    assert first.keys() == second.keys() == third.keys()
    # every val volume is scored at every acceleration, with one mask per volume and acceleration
    assert {k[1] for k in first} == {4.0, 8.0}
    for key in first:
        assert torch.equal(first[key], second[key]) and torch.equal(first[key], third[key])
        same_volume = [v for k, v in first.items() if k[:2] == key[:2]]
        assert all(torch.equal(same_volume[0], v) for v in same_volume)


def _train_masks(root, seed, workers):
    pl.seed_everything(seed)
    dm = _dm(root, num_workers=workers, batch_size=2)
    dm.setup("fit")
    loader = dm.train_dataloader()
    masks = []
    for epoch in range(2):
        loader.batch_sampler.sampler.set_epoch(epoch)  # what Lightning calls
        for batch in loader:
            masks += [(f, int(s), m.clone()) for f, s, m in zip(batch.fname, batch.slice_num, batch.mask)]
    return masks


@pytest.mark.slow  # long: the default suite must stay under 5 minutes on 2 cores
def test_training_masks_reproducible_for_any_num_workers(tiny_singlecoil):
    a = _train_masks(tiny_singlecoil, 7, 0)
    b = _train_masks(tiny_singlecoil, 7, 2)
    c = _train_masks(tiny_singlecoil, 8, 0)
    assert [(f, s) for f, s, _ in a] == [(f, s) for f, s, _ in b]
    assert all(torch.equal(x[2], y[2]) for x, y in zip(a, b))
    # masks differ between slices, epochs and seeds
    n = len(a) // 2
    assert not all(torch.equal(x[2], y[2]) for x, y in zip(a[:n], a[n:]))
    assert not all(torch.equal(x[2], y[2]) for x, y in zip(a, c))


@pytest.mark.parametrize("challenge", ["singlecoil", "multicoil"])
def test_unchanged_fastmri_pipeline_gives_our_inputs_and_targets(challenge, request):
    root = request.getfixturevalue(f"tiny_{challenge}")
    mask_func = create_mask_for_mask_type("random", [0.08], [4])
    reference = SliceDataset(root / f"{challenge}_val", challenge, transform=UnetDataTransform(challenge, mask_func))
    dm = ReconDataModule(str(root), challenge=challenge, center_fractions=[0.08], accelerations=[4], num_workers=0)
    dm.setup("validate")
    ours = {}
    for batch in dm.val_dataloader():
        ours[(batch.fname[0], int(batch.slice_num[0]))] = batch
    assert len(ours) == len(reference)
    for sample in reference:
        batch = ours[(sample.fname, sample.slice_num)]
        torch.testing.assert_close(network_input(batch)[0, 0], sample.image, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(normalized_target(batch)[0, 0], sample.target, rtol=1e-5, atol=1e-5)
        # The data range is the target volume's maximum (our targets are square: no crop).
        assert batch.max_value[0].item() == pytest.approx(sample.max_value)


def test_transform_on_device_matches_worker_path(tiny_multicoil):
    kw = dict(challenge="multicoil", center_fractions=[0.08], accelerations=[4], num_workers=0, batch_size=2)
    a = ReconDataModule(str(tiny_multicoil), **kw)
    b = ReconDataModule(str(tiny_multicoil), transform_on_device=True, **kw)
    a.setup("validate"), b.setup("validate")
    for x, y in zip(a.val_dataloader(), b.val_dataloader()):
        assert x.prepared and not y.prepared  # the workers only read and stack
        y = b.on_after_batch_transfer(y, 0)
        for name in ("kspace", "zero_filled", "mean", "std", "target"):
            assert torch.equal(getattr(x, name), getattr(y, name)), name
        assert torch.equal(x.mask, y.mask) and x.fname == y.fname and x.slice_num == y.slice_num


def test_sample_rates_select_fixed_subsets(tiny_singlecoil):
    dm = _dm(tiny_singlecoil, volume_sample_rate=0.5, sample_rate=0.5)
    dm.setup("fit")
    full = _dm(tiny_singlecoil)
    full.setup("fit")
    assert len(dm.dataset("train", True)) < len(full.dataset("train", True))
    again = _dm(tiny_singlecoil, volume_sample_rate=0.5, sample_rate=0.5)
    assert dm.dataset("train", True).items == again.dataset("train", True).items


def test_the_run_summary_counts_what_the_loaders_read(tiny_singlecoil):
    """The ``data:`` line of fit/test counts the subsets sample rates leave, and says of what."""
    from mrirecon.lightning.callbacks import _volumes_line

    dm = _dm(tiny_singlecoil, volume_sample_rate=0.5, sample_rate=0.5)
    dm.setup("fit")
    everything, used, dataset = dm.volumes("train"), dm.used_volumes("train", train=True), dm.dataset("train", True)
    assert len(used) < len(everything)
    assert _volumes_line("train", everything, used, dm.sample_rate) == (
        f"train {len(used)} volumes ({len(dataset)} slices) of {len(everything)} ({sum(v.num_slices for v in everything)})")
    full = _dm(tiny_singlecoil)
    full.setup("fit")
    assert " of " not in _volumes_line("train", full.volumes("train"), full.used_volumes("train", train=True))


def test_a_cached_volume_is_read_through_the_path_given_now(tiny_singlecoil, tmp_path, monkeypatch):
    """The cache is keyed by resolved path; a hit from another working folder (relative paths
    then) must not hand back the first run's relative path, which names another file or none."""
    import shutil

    from mrirecon.data.volumes import scan_volumes

    shutil.copytree(tiny_singlecoil / "singlecoil_val", tmp_path / "data" / "singlecoil_val")
    monkeypatch.chdir(tmp_path)
    first = scan_volumes(Path("data/singlecoil_val"), "singlecoil")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    again = scan_volumes(tmp_path / "data" / "singlecoil_val", "singlecoil")
    assert [v.path for v in again] == [tmp_path / "data" / "singlecoil_val" / v.path.name for v in first]
    assert all(v.path.is_file() for v in again)


def test_metadata_cache_never_ignores_a_changed_folder(tiny_singlecoil, tmp_path):
    import shutil

    from mrirecon.data.volumes import scan_volumes

    copy = tmp_path / "singlecoil_val"
    shutil.copytree(tiny_singlecoil / "singlecoil_val", copy)
    first = scan_volumes(copy, "singlecoil")
    victim = sorted(copy.glob("*.h5"))[0]
    victim.unlink()
    second = scan_volumes(copy, "singlecoil")
    assert len(second) == len(first) - 1
    assert all(v.path != victim for v in second)
