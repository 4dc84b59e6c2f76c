"""Fit settings that Lightning accepts and then fails on late, or trains and saves nothing by,
or records untruly: each is one line before the first step (issue 17's battery)."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest

from cli_helpers import assert_ok, assert_user_error, load_ckpt, run_cli, write_config
from mrirecon.core.atomic import FolderLock


@pytest.fixture(scope="module")
def config(tiny_singlecoil, tmp_path_factory):
    root = tmp_path_factory.mktemp("fit_settings")
    return write_config(root / "tiny.yaml", tiny_singlecoil, root / "runs")


@pytest.fixture(scope="module")
def short_run(config, tmp_path_factory):
    """One step of a run; returns its last checkpoint."""
    save_dir = tmp_path_factory.mktemp("short")
    assert_ok(run_cli("fit", "--config", config, "--trainer.max_steps", 1, "--trainer.limit_val_batches", 0,
                      "--trainer.logger.init_args.save_dir", save_dir))
    return save_dir / "tiny" / "version_0" / "checkpoints" / "last.ckpt"


@pytest.mark.parametrize("seed", ["99999999999999999999", "-5", "4294967296"])
def test_seeds_out_of_range(config, seed, tmp_path):
    assert_user_error(run_cli("fit", "--config", config, "--seed_everything", seed,
                              "--trainer.logger.init_args.save_dir", tmp_path),
                      "seed_everything: must be true, false or an integer from 0 to 4294967295", seed)
    if seed != "4294967296":  # a valid data.seed (64-bit)
        assert_user_error(run_cli("fit", "--config", config, "--data.seed", seed, "--trainer.logger.init_args.save_dir", tmp_path),
                          "data.seed: must be an integer from 0 to", seed)
    assert not any(tmp_path.iterdir())


@pytest.mark.parametrize("key", ["--checkpoint.monitor", "--lr_scheduler.monitor"])
def test_a_monitor_that_fit_never_logs_is_refused(config, key, tmp_path):
    scheduler = ("--lr_scheduler", "pytorch_lightning.cli.ReduceLROnPlateau") if key == "--lr_scheduler.monitor" else ()
    result = run_cli("fit", "--config", config, *scheduler, key, "val/bogus", "--trainer.logger.init_args.save_dir", tmp_path)
    line = assert_user_error(result, "'val/bogus' is not a metric fit logs", "val/ssim_4x", "val/ssim_8x", "val/loss")
    assert ("checkpoint.monitor" if key == "--checkpoint.monitor" else "lr_scheduler.init_args.monitor") in line
    # A per-acceleration metric of this run is one it logs: that fit runs.
    assert_ok(run_cli("fit", "--config", config, *scheduler, key, "val/ssim_8x", "--trainer.max_steps", 1,
                      "--trainer.limit_val_batches", 0, "--trainer.logger.init_args.save_dir", tmp_path))


def test_reduce_lr_on_plateau_without_a_monitor(config, tmp_path):
    assert_user_error(run_cli("fit", "--config", config, "--lr_scheduler", "torch.optim.lr_scheduler.ReduceLROnPlateau",
                              "--trainer.logger.init_args.save_dir", tmp_path),
                      "lr_scheduler: ReduceLROnPlateau needs the metric it watches")


def test_a_validation_interval_longer_than_the_epoch(config, tmp_path):
    # 3 training volumes x 4 slices at batch size 4: 3 batches per epoch.
    assert_user_error(run_cli("fit", "--config", config, "--trainer.val_check_interval", 50,
                              "--trainer.logger.init_args.save_dir", tmp_path),
                      "trainer.val_check_interval: 50 batches is longer than an epoch of 3 training batches")
    assert not any(tmp_path.iterdir())


@pytest.mark.parametrize("key", ["--trainer.max_epochs", "--trainer.max_steps"])
def test_zero_epochs_or_steps(config, key, tmp_path):
    assert_user_error(run_cli("fit", "--config", config, key, 0, "--trainer.logger.init_args.save_dir", tmp_path),
                      f"{key[2:]}: 0 trains nothing")


def test_resuming_with_other_optimiser_settings_is_refused(config, short_run):
    ckpt = short_run
    line = assert_user_error(run_cli("fit", "--config", config, "--ckpt_path", ckpt, "--optimizer.lr", 0.1,
                                     "--trainer.max_steps", 2),
                             str(ckpt), "lr=0.001", "optimizer.init_args.lr=0.1", "config.yaml")
    assert "continues the checkpoint's optimiser" in line
    assert_user_error(run_cli("fit", "--config", config, "--ckpt_path", ckpt, "--optimizer", "torch.optim.SGD",
                              "--optimizer.lr", 0.001, "--trainer.max_steps", 2),
                      "holds the state of another optimiser than the config's torch.optim.SGD")
    assert load_ckpt(ckpt)["global_step"] == 1  # nothing was trained on


def test_a_run_that_another_fit_is_resuming_is_refused(config, short_run):
    run_dir = short_run.parent.parent
    lock = FolderLock(run_dir, "busy")  # as a resume running in another process holds it
    try:
        assert_user_error(run_cli("fit", "--config", config, "--ckpt_path", short_run, "--trainer.max_steps", 2,
                                  "--trainer.limit_val_batches", 0),
                          str(run_dir), "another fit is training this run now")
    finally:
        lock.release()
    assert load_ckpt(short_run)["global_step"] == 1
    assert_ok(run_cli("fit", "--config", config, "--ckpt_path", short_run, "--trainer.max_steps", 2,
                      "--trainer.limit_val_batches", 0))
    assert load_ckpt(short_run)["global_step"] == 2
    FolderLock(run_dir, "still locked after the fit ended").release()  # raises if the fit kept it


def test_a_new_run_is_locked_while_it_trains(config, tmp_path):
    assert_ok(run_cli("fit", "--config", config, "--trainer.max_steps", 1, "--trainer.limit_val_batches", 0,
                      "--trainer.callbacks+", "cli_helpers.RunFolderLockProbe",
                      "--trainer.logger.init_args.save_dir", tmp_path))
    FolderLock(tmp_path / "tiny" / "version_0", "still locked after the fit ended").release()


def test_resuming_a_run_that_is_already_at_its_limit_is_refused(config, tmp_path):
    # One whole epoch (3 batches) of a run, then resumed with limits it has reached already.
    assert_ok(run_cli("fit", "--config", config, "--trainer.max_epochs", 1, "--trainer.limit_val_batches", 0,
                      "--trainer.logger.init_args.save_dir", tmp_path))
    last = tmp_path / "tiny" / "version_0" / "checkpoints" / "last.ckpt"
    before = last.read_bytes()
    for key, value in [("max_epochs", 1), ("max_steps", 3), ("max_steps", 2)]:
        no_epoch_limit = ["--trainer.max_epochs", -1] if key == "max_steps" else []
        line = assert_user_error(run_cli("fit", "--config", config, "--ckpt_path", last, *no_epoch_limit,
                                         f"--trainer.{key}", value),
                                 str(last), "trained 1 epochs (3 steps) already", f"trainer.{key} {value} would train nothing")
        assert "set it above" in line
    assert last.read_bytes() == before
    # A limit above what it reached trains on.
    assert_ok(run_cli("fit", "--config", config, "--ckpt_path", last, "--trainer.max_steps", 4,
                      "--trainer.max_epochs", -1, "--trainer.limit_val_batches", 0))
    assert load_ckpt(last)["global_step"] == 4


def test_validating_every_zero_epochs_is_refused(config, tmp_path):
    assert_user_error(run_cli("fit", "--config", config, "--trainer.check_val_every_n_epoch", 0,
                              "--trainer.logger.init_args.save_dir", tmp_path),
                      "trainer.check_val_every_n_epoch: 0")
    assert not any(tmp_path.iterdir())


def test_resuming_with_other_data_settings_is_refused(config, tmp_path):
    assert_ok(run_cli("fit", "--config", config, "--trainer.max_steps", 1, "--trainer.limit_val_batches", 0,
                      "--trainer.logger.init_args.save_dir", tmp_path))
    ckpt = tmp_path / "tiny" / "version_0" / "checkpoints" / "last.ckpt"
    for key, value, saved, also in [("accelerations", "[4, 6]", "[4, 8]", ()),
                                    ("accelerations", "[4]", "[4, 8]", ("--data.center_fractions", "[0.08]")),
                                    ("center_fractions", "[0.08, 0.08]", "[0.08, 0.04]", ()),
                                    ("batch_size", 2, "4", ()), ("mask_type", "equispaced", "'random'", ())]:
        line = assert_user_error(run_cli("fit", "--config", config, "--ckpt_path", ckpt, f"--data.{key}", value, *also,
                                         "--trainer.max_steps", 2),
                                 str(ckpt), f"was trained with data.{key}={saved}", f"the config sets data.{key}=", "config.yaml")
        assert "a resumed fit continues the run's training" in line
    assert load_ckpt(ckpt)["global_step"] == 1  # nothing was trained on
    config_yaml = (ckpt.parent.parent / "config.yaml").read_text()
    assert "equispaced" not in config_yaml and "- 8" in config_yaml  # the run's config as it was
    # How the data are read may change: more workers, another test split.
    assert_ok(run_cli("fit", "--config", config, "--ckpt_path", ckpt, "--data.num_workers", 1, "--data.test_split", "val",
                      "--trainer.max_steps", 2, "--trainer.limit_val_batches", 0))
    assert load_ckpt(ckpt)["global_step"] == 2


def test_a_run_resumed_through_another_spelling_of_its_folder_keeps_its_best(config, tmp_path, monkeypatch):
    """A run made with a relative save_dir and resumed with --ckpt_path last (whose folder is
    then absolute) kept Lightning's ranking only when both spellings matched: the resumed
    epochs' first validation became the best whatever its score, and the old best file stayed."""
    import yaml

    from cli_helpers import checkpoint_state, events, scalar_steps

    monkeypatch.chdir(tmp_path)
    relative = write_config(tmp_path / "relative.yaml", yaml.safe_load(config.read_text())["data"]["data_path"], "runs")
    assert_ok(run_cli("fit", "--config", relative, "--trainer.max_epochs", 2, "--checkpoint.save_top_k", 1))
    run = tmp_path / "runs" / "tiny" / "version_0"
    before = checkpoint_state(load_ckpt(run / "checkpoints" / "last.ckpt"))
    assert before["dirpath"] == "runs/tiny/version_0/checkpoints"  # spelled as the config spells it
    assert_ok(run_cli("fit", "--config", relative, "--ckpt_path", "last", "--trainer.max_epochs", 4,
                      "--checkpoint.save_top_k", 1, "--optimizer.lr", 0.001))
    state = checkpoint_state(load_ckpt(run / "checkpoints" / "last.ckpt"))
    scores = dict(scalar_steps(events(run), "val/ssim"))
    assert len(scores) == 4
    assert float(state["best_model_score"]) == pytest.approx(max(scores.values()), abs=1e-6)
    assert [p.name for p in (run / "checkpoints").glob("best-*.ckpt")] == [Path(state["best_model_path"]).name]
    assert len(state["best_k_models"]) == 1


def test_a_limited_validation_scores_without_a_max_value_warning(config, tmp_path):
    # Fourth battery: limit_val_batches scores a volume on some of its slices, whose maximum
    # lies below the volume's; every such run warned that SSIM's max_value was off.
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        # One validation slice (of 16) per epoch: slice 0, below its volume's maximum (slice 1).
        result = run_cli("fit", "--config", config, "--trainer.max_epochs", 1, "--trainer.limit_train_batches", 2,
                         "--trainer.limit_val_batches", 0.1, "--data.batch_size", 1, "--trainer.num_sanity_val_steps", 0,
                         "--trainer.logger.init_args.save_dir", tmp_path)
    assert_ok(result)
    assert not [w for w in caught if "max_value" in str(w.message)] and "max_value" not in result.err
    assert load_ckpt(tmp_path / "tiny" / "version_0" / "checkpoints" / "last.ckpt")["global_step"] == 2
