"""`mrirecon fit|validate|test|predict` end to end on tiny simulated data.

One short training run (a 4-channel, 2-level U-Net, 3 steps) is shared by the module; the other
tests resume it, evaluate it, reconstruct with it and feed the CLI bad input. Most commands run
in-process through ``mrirecon.commands.main.main`` (a fresh interpreter costs seconds of
imports); one runs ``python -m mrirecon`` to cover the real entry point.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
import yaml
from fastmri.evaluate import nmse, psnr, ssim

from cli_helpers import (
    assert_ok,
    assert_user_error,
    checkpoint_state,
    events,
    load_ckpt,
    run_cli,
    run_subprocess,
    scalar_steps,
    write_config,
)
from mrirecon.lightning.module import ReconModule, describe_network

REPO = Path(__file__).resolve().parents[2]
CONFIGS = sorted((REPO / "configs").glob("*.yaml"))
ACCELERATIONS = ("4x", "8x")
TRAIN_STEPS_PER_EPOCH = 3  # 3 training volumes x 4 slices, batch size 4


# --- shared runs -------------------------------------------------------------------------------


@pytest.fixture(scope="module", autouse=True)
def _cli_env(tmp_path_factory):
    # Module fixtures run before the function-scoped cache fixture of conftest: use a private
    # cache here too. One thread: tiny tensors on a busy 2-core machine only lose with more.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MRIRECON_CACHE_DIR", str(tmp_path_factory.mktemp("cli_cache")))
        yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def run(tiny_singlecoil, tmp_path_factory):
    """One epoch of training; returns the config and the run folder."""
    root = tmp_path_factory.mktemp("cli_run")
    config = write_config(root / "tiny.yaml", tiny_singlecoil, root / "runs")
    result = run_cli("fit", "--config", config)
    assert_ok(result)
    run_dir = root / "runs" / "tiny" / "version_0"
    assert run_dir.is_dir(), sorted(str(p) for p in root.rglob("*"))
    return config, run_dir


@pytest.fixture(scope="module")
def resumed(run, tmp_path_factory):
    """A run of its own, one epoch and then resumed with --ckpt_path last for a second one.

    Returns its run folder and the first epoch's last.ckpt as it was before the resume.
    """
    config, _ = run
    root = tmp_path_factory.mktemp("resumed")
    assert_ok(run_cli("fit", "--config", config, "--trainer.logger.init_args.save_dir", root))
    run_dir = root / "tiny" / "version_0"
    saved = load_ckpt(run_dir / "checkpoints" / "last.ckpt")
    result = run_cli("fit", "--config", config, "--ckpt_path", "last", "--trainer.max_epochs", 2,
                     "--trainer.logger.init_args.save_dir", root)
    assert_ok(result)
    assert sorted(p.name for p in run_dir.parent.iterdir()) == ["version_0"], "a resume must not open a new run"
    return run_dir, saved


def best_checkpoint(run_dir: Path) -> Path:
    (best,) = (run_dir / "checkpoints").glob("best-*.ckpt")
    return best


@pytest.fixture(scope="module")
def evaluation(run, tmp_path_factory):
    """`test` and `predict` with the best checkpoint of the first run, on the test split."""
    config, run_dir = run
    ckpt = best_checkpoint(run_dir)
    out = tmp_path_factory.mktemp("cli_eval")
    tested = run_cli("test", "--config", config, "--ckpt_path", ckpt, "--output_dir", out / "test")
    assert_ok(tested)
    predicted = run_cli("predict", "--config", config, "--ckpt_path", ckpt, "--output_dir", out / "predict")
    assert_ok(predicted)
    return tested, out / "test", out / "predict"


# --- 1. logging ----------------------------------------------------------------------------------


def test_fit_logs_scalars_images_config_and_hparams(run):
    _, run_dir = run
    acc = events(run_dir)
    tags = acc.Tags()

    assert [s for s, _ in scalar_steps(acc, "train/loss")] == list(range(TRAIN_STEPS_PER_EPOCH))
    assert all(np.isfinite(v) and v > 0 for _, v in scalar_steps(acc, "train/loss"))
    assert scalar_steps(acc, "train/lr") == [(s, pytest.approx(1e-3)) for s in range(TRAIN_STEPS_PER_EPOCH)]
    for tag in ("val/loss", "val/ssim", "val/psnr", "val/nmse", "val/ssim_4x", "val/ssim_8x", "val_zero_filled/ssim"):
        assert len(acc.Scalars(tag)) == 1, tag  # once per epoch, not per step
    (val_ssim,) = [v for _, v in scalar_steps(acc, "val/ssim")]
    assert -1 <= val_ssim <= 1
    assert 0 < acc.Scalars("val/nmse")[0].value and np.isfinite(acc.Scalars("val/psnr")[0].value)
    # The overall SSIM is the mean over volumes; both accelerations have the same number of them.
    per_acc = [acc.Scalars(f"val/ssim_{a}")[0].value for a in ACCELERATIONS]
    assert val_ssim == pytest.approx(sum(per_acc) / 2, abs=1e-6)

    # num_log_images=2 labelled figures (file, slice, acceleration in the tag), one per epoch.
    images = [t for t in tags["images"] if t.startswith("val/images/")]
    assert len(images) == 2, tags["images"]
    for tag in images:
        assert tag.split("/")[2].endswith(".h5") and tag.split("/")[3].startswith("slice") and tag.endswith("x")
        (image,) = acc.Images(tag)  # none during the sanity check, one per epoch
        assert image.step == TRAIN_STEPS_PER_EPOCH - 1 == acc.Scalars("val/ssim")[0].step

    saved = yaml.safe_load((run_dir / "config.yaml").read_text())
    assert saved["model"]["net"]["init_args"]["chans"] == 4
    assert saved["optimizer"]["class_path"] == "torch.optim.Adam"  # resolved default
    assert saved["data"]["accelerations"] == [4, 8]

    hparams = yaml.safe_load((run_dir / "hparams.yaml").read_text())
    assert hparams["net"]["class_path"] == "mrirecon.models.unet.Unet"
    assert hparams["net"]["init_args"]["chans"] == 4
    assert hparams["net"]["init_args"]["num_pool_layers"] == 2
    assert hparams["loss"] == "l1" and hparams["batch_size"] == 4  # model and data hyperparameters


# --- 2. and 3. checkpoints and resuming ---------------------------------------------------------


def test_best_and_last_checkpoints(run):
    _, run_dir = run
    ckpt_dir = run_dir / "checkpoints"
    best = best_checkpoint(run_dir)
    assert best.name == f"best-epoch=0-step={TRAIN_STEPS_PER_EPOCH}.ckpt"
    last = load_ckpt(ckpt_dir / "last.ckpt")
    assert last["global_step"] == TRAIN_STEPS_PER_EPOCH and last["epoch"] == 0
    state = checkpoint_state(last)
    assert state["monitor"] == "val/ssim"
    assert Path(state["best_model_path"]).resolve() == best.resolve()
    (val_ssim,) = [e.value for e in events(run_dir).Scalars("val/ssim")]
    assert float(state["best_model_score"]) == pytest.approx(val_ssim, abs=1e-6)
    # The checkpoint rebuilds its model on its own (hyperparameters hold the net's class and args).
    model = ReconModule.load_from_checkpoint(best, map_location="cpu")
    assert describe_network(model.net)["init_args"]["chans"] == 4
    assert torch.equal(model.state_dict()["net.down_sample_layers.0.layers.0.weight"],
                       load_ckpt(best)["state_dict"]["net.down_sample_layers.0.layers.0.weight"])
    # Without an `optimizer:` section the optimiser is Adam, lr 1e-3.
    (group,) = last["optimizer_states"][0]["param_groups"]
    assert group["lr"] == pytest.approx(1e-3) and "betas" in group


def test_resume_from_last_continues_the_same_run(resumed):
    run_dir, saved = resumed
    final = load_ckpt(run_dir / "checkpoints" / "last.ckpt")
    assert final["epoch"] == 1
    assert final["global_step"] == saved["global_step"] + TRAIN_STEPS_PER_EPOCH

    # One run folder, one curve: no step repeated, none skipped.
    steps = [s for s, _ in scalar_steps(events(run_dir), "train/loss")]
    assert steps == list(range(final["global_step"]))
    assert [s for s, _ in scalar_steps(events(run_dir), "val/ssim")] == [TRAIN_STEPS_PER_EPOCH - 1, 2 * TRAIN_STEPS_PER_EPOCH - 1]
    # Adam's moments came back too: its step counters continue.
    adam_state = final["optimizer_states"][0]["state"]
    assert all(int(s["step"]) == final["global_step"] for s in adam_state.values())

    # The best-checkpoint state survived the resume: best over both epochs, not reset.
    ssims = [e.value for e in events(run_dir).Scalars("val/ssim")]
    state = checkpoint_state(final)
    assert float(state["best_model_score"]) == pytest.approx(max(ssims), abs=1e-6)
    best_epoch = int(np.argmax(ssims))
    assert Path(state["best_model_path"]).is_file()
    assert Path(state["best_model_path"]).name.startswith(f"best-epoch={best_epoch}-")
    assert len(list((run_dir / "checkpoints").glob("best-*.ckpt"))) == 1


# --- 4. test and predict against fastMRI's metrics ---------------------------------------------


def test_test_prints_table_and_writes_results(evaluation, tiny_singlecoil):
    tested, test_dir, _ = evaluation
    summary = json.loads((test_dir / "summary.json").read_text())
    assert summary["split"] == "test"
    methods = summary["methods"]
    assert set(methods) == {"unet", "zero-filled"}
    volumes = sorted(p.name for p in (tiny_singlecoil / "singlecoil_test").glob("*.h5"))
    for method in methods:
        assert set(methods[method]) == set(ACCELERATIONS)

    lines = tested.out.splitlines()
    for acc in ACCELERATIONS:
        for method in ("unet", "zero-filled"):
            entry = methods[method][acc]
            assert entry["volumes"] == len(volumes)
            rows = [line.split() for line in lines if line.split()[:2] == [acc, method]]
            assert len(rows) == 1, tested.out
            row = " ".join(rows[0])
            assert f"{entry['ssim']['mean']:.4f} ± {entry['ssim']['std']:.4f}" in row
            assert f"{entry['psnr']['mean']:.2f} ± {entry['psnr']['std']:.2f}" in row
            assert f"{entry['nmse']['mean']:.4f} ± {entry['nmse']['std']:.4f}" in row

    with open(test_dir / "metrics.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 2 * len(ACCELERATIONS) * len(volumes)
    assert {(r["method"], r["acceleration"], r["volume"]) for r in rows} == {
        (m, a, v) for m in ("unet", "zero-filled") for a in ACCELERATIONS for v in volumes
    }
    for method in ("unet", "zero-filled"):
        for acc in ACCELERATIONS:
            sel = [float(r["ssim"]) for r in rows if r["method"] == method and r["acceleration"] == acc]
            assert np.mean(sel) == pytest.approx(methods[method][acc]["ssim"]["mean"], abs=1e-7)


def test_test_metrics_equal_fastmri_evaluate_on_predictions(evaluation, tiny_singlecoil):
    _, test_dir, predict_dir = evaluation
    summary = json.loads((test_dir / "summary.json").read_text())["methods"]["unet"]
    targets = sorted((tiny_singlecoil / "singlecoil_test").glob("*.h5"))
    assert sorted(p.name for p in predict_dir.iterdir()) == list(ACCELERATIONS)
    for acc in ACCELERATIONS:
        assert sorted(p.name for p in (predict_dir / acc).iterdir()) == [t.name for t in targets]
        scores = {"ssim": [], "psnr": [], "nmse": []}
        for target_file in targets:
            with h5py.File(target_file, "r") as hf:
                gt = hf["reconstruction_esc"][()]
            with h5py.File(predict_dir / acc / target_file.name, "r") as hf:
                pred = hf["reconstruction"][()]
            assert pred.shape == gt.shape and pred.dtype == np.float32
            maxval = gt.max()
            scores["ssim"].append(ssim(gt, pred, maxval=maxval).item())
            scores["psnr"].append(psnr(gt, pred, maxval=maxval))
            scores["nmse"].append(nmse(gt, pred))
        assert np.mean(scores["ssim"]) == pytest.approx(summary[acc]["ssim"]["mean"], abs=1e-4)
        assert np.mean(scores["nmse"]) == pytest.approx(summary[acc]["nmse"]["mean"], abs=1e-4)
        assert np.mean(scores["psnr"]) == pytest.approx(summary[acc]["psnr"]["mean"], abs=1e-3)


def test_test_uses_the_method_name_of_the_command_line(run, tmp_path):
    # The checkpoint's hyperparameters (method_name "unet") must not override the config.
    config, run_dir = run
    result = run_cli("test", "--config", config, "--ckpt_path", best_checkpoint(run_dir),
                     "--model.method_name", "tiny-unet", "--output_dir", tmp_path)
    assert_ok(result)
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert set(summary["methods"]) == {"tiny-unet", "zero-filled"}
    assert any(line.split()[:2] == ["4x", "tiny-unet"] for line in result.out.splitlines())


# --- 5. bad input --------------------------------------------------------------------------------


def test_checkpoint_of_another_model_is_one_line_naming_the_file(run):
    config, run_dir = run
    ckpt = best_checkpoint(run_dir)
    result = run_cli("test", "--config", config, "--ckpt_path", ckpt, "--model.net.init_args.chans", 8)
    assert_user_error(result, str(ckpt), "trained with model.net.init_args.chans=4, the config sets 8")


@pytest.mark.slow  # 7 s (a fresh interpreter): the default suite must stay under 5 minutes on 2 cores
def test_missing_checkpoint_through_the_real_entry_point(run, tmp_path):
    config, _ = run
    missing = tmp_path / "nowhere" / "last.ckpt"
    result = run_subprocess("test", "--config", config, "--ckpt_path", missing, cwd=tmp_path)
    assert_user_error(result, str(missing), "no such checkpoint file")


@pytest.mark.slow  # long: the default suite must stay under 5 minutes on 2 cores
def test_commands_print_only_our_lines(run, tmp_path):
    """Through the real entry point, as a user runs them: no Lightning tips or warnings."""
    config, run_dir = run
    ckpt = run_dir / "checkpoints" / "last.ckpt"
    for args in (["fit", "--config", config, "--trainer.max_steps", "2", "--trainer.logger.init_args.save_dir", tmp_path],
                 ["test", "--config", config, "--ckpt_path", ckpt, "--output_dir", tmp_path / "t"],
                 ["predict", "--config", config, "--ckpt_path", ckpt, "--output_dir", tmp_path / "p"],
                 ["baseline", "--method", "zero-filled", "--config", config, "--output_dir", tmp_path / "zf"],
                 ["report", "--config", config, "--out", tmp_path / "r", "--method", f"zero-filled={tmp_path / 'zf'}",
                  "--method", f"unet={ckpt}"]):
        result = run_subprocess(*args, cwd=tmp_path)
        assert_ok(result)
        text = result.out + result.err
        for marker in ("Warning", "warn(", "deprecated", "💡", "Tip:", "LOCAL_RANK", "GPU available"):
            assert marker not in text, f"{args[0]}: {marker!r} in\n{text[-3000:]}"


@pytest.mark.parametrize("subcommand", ["fit", "test"])
def test_file_that_is_not_a_checkpoint(run, subcommand):
    config, _ = run
    assert_user_error(run_cli(subcommand, "--config", config, "--ckpt_path", config), str(config), "not a checkpoint")


def test_unknown_key_on_the_command_line(run):
    config, _ = run
    assert_user_error(run_cli("fit", "--config", config, "--model.bogus", 1), "model.bogus")
    assert_user_error(run_cli("fit", "--config", config, "--model.net.init_args.bogus", 1), "bogus")


def test_unknown_key_in_the_yaml(run, tmp_path):
    config, _ = run
    bad = yaml.safe_load(config.read_text())
    bad["model"]["bogus_key"] = 3
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(bad))
    assert_user_error(run_cli("fit", "--config", path), "bogus_key")


@pytest.mark.parametrize("text, problem", [("", "the config is empty"), ("# only a comment\n", "the config is empty"),
                                           ("- a\n- b\n", "a config is a YAML mapping of sections (trainer:, model:, data:, ...), got a list")])
@pytest.mark.parametrize("command", ["fit", "test", "baseline", "report"])
def test_an_empty_config_or_one_that_is_not_a_mapping(tmp_path, text, problem, command):
    path = tmp_path / "c.yaml"
    path.write_text(text)
    extra = {"baseline": ["--method", "zero-filled"], "report": ["--method", f"a={tmp_path}"]}.get(command, [])
    assert_user_error(run_cli(command, "--config", path, *extra), f"{path}: {problem}")


def test_bad_value_names_key_and_reason(run):
    config, _ = run
    line = assert_user_error(run_cli("fit", "--config", config, "--model.loss", "huber"), "model.loss", "huber")
    assert "Expected" in line  # the reason, not only the key


def test_trainer_misconfiguration(run):
    config, _ = run
    assert_user_error(run_cli("fit", "--config", config, "--trainer.devices", 0), "trainer:", "devices")


def test_test_without_checkpoint(run):
    config, _ = run
    assert_user_error(run_cli("test", "--config", config), "--ckpt_path")


# --- 6. every shipped config parses ------------------------------------------------------------


@pytest.mark.parametrize("config", CONFIGS, ids=[c.name for c in CONFIGS])
def test_shipped_config_parses(config, monkeypatch):
    monkeypatch.chdir(REPO)
    result = run_cli("fit", "--config", config.relative_to(REPO), "--print_config")
    assert_ok(result)
    printed = yaml.safe_load(result.out)
    assert {"trainer", "model", "data", "optimizer"} <= set(printed)
    assert printed["model"]["net"]["class_path"]


def test_configs_folder_is_not_empty():
    assert CONFIGS, REPO / "configs"


# --- 7. optimiser and scheduler from the config ------------------------------------------------

SGD_STEP_LR = (
    "--optimizer", "torch.optim.SGD", "--optimizer.lr", "0.01", "--optimizer.momentum", "0.9",
    "--lr_scheduler", "torch.optim.lr_scheduler.StepLR", "--lr_scheduler.step_size", "1",
)


def test_default_optimizer_is_adam(run):
    config, _ = run
    result = run_cli("fit", "--config", config, "--print_config")
    assert_ok(result)
    printed = yaml.safe_load(result.out)
    assert printed["optimizer"]["class_path"] == "torch.optim.Adam"
    assert printed["optimizer"]["init_args"]["lr"] == pytest.approx(1e-3)
    assert printed.get("lr_scheduler") is None


def test_optimizer_and_scheduler_from_the_command_line(run, tmp_path):
    config, _ = run
    result = run_cli("fit", "--config", config, *SGD_STEP_LR, "--print_config")
    assert_ok(result)
    printed = yaml.safe_load(result.out)
    assert printed["optimizer"]["class_path"] == "torch.optim.SGD"
    assert printed["optimizer"]["init_args"]["lr"] == pytest.approx(0.01)
    assert printed["optimizer"]["init_args"]["momentum"] == pytest.approx(0.9)
    assert printed["lr_scheduler"]["class_path"] == "torch.optim.lr_scheduler.StepLR"
    assert printed["lr_scheduler"]["init_args"]["step_size"] == 1

    # Two epochs without validation: StepLR divides the lr by 10 after epoch 0.
    # (Not --trainer.limit_train_batches 1: jsonargparse reads it as 1.0, all batches.)
    result = run_cli(
        "fit", "--config", config, *SGD_STEP_LR,
        "--trainer.max_epochs", 2, "--trainer.limit_val_batches", 0,
        "--trainer.logger.init_args.save_dir", tmp_path,
    )
    assert_ok(result)
    run_dir = tmp_path / "tiny" / "version_0"
    n = TRAIN_STEPS_PER_EPOCH
    assert scalar_steps(events(run_dir), "train/lr") == [
        (step, pytest.approx(0.01 if step < n else 0.001)) for step in range(2 * n)
    ]
    last = load_ckpt(run_dir / "checkpoints" / "last.ckpt")
    (group,) = last["optimizer_states"][0]["param_groups"]
    assert group["momentum"] == pytest.approx(0.9) and "betas" not in group
    assert last["lr_schedulers"][0]["step_size"] == 1
