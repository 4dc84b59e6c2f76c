"""Runs a researcher can trust: each test reproduces a defect found in 0.1 (issue 9's numbering).

Checkpoints and resume (1-5), wrong numbers with exit 0 (6-7), one line instead of a traceback
(8-10). The real download's shapes (11-15) are in test_real_shapes.py, the simulator's sources
(16) in tests/data/test_simulate.py.
"""

from __future__ import annotations

import json
import os
import resource
import signal
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from cli_helpers import REPO, Result, assert_ok, assert_user_error, events, load_ckpt, run_cli, scalar_steps, write_config
from mrirecon.errors import UserError
from mrirecon.evaluation.results import write_results
from mrirecon.core.checkpoint_files import read_checkpoint

STEPS_PER_EPOCH = 3  # 3 training volumes x 4 slices, batch size 4
FAULTS = REPO / "tests" / "faults.py"


@pytest.fixture(scope="module", autouse=True)
def _env(tmp_path_factory):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MRIRECON_CACHE_DIR", str(tmp_path_factory.mktemp("cache")))
        yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def trained(tiny_singlecoil, tmp_path_factory):
    """Three epochs; returns (config, run folder)."""
    root = tmp_path_factory.mktemp("trained")
    config = write_config(root / "tiny.yaml", tiny_singlecoil, root / "runs")
    assert_ok(run_cli("fit", "--config", config, "--trainer.max_epochs", 3))
    return config, root / "runs" / "tiny" / "version_0"


def next_second() -> None:
    """TensorBoard reads a run's event files in the order of their names, which start with the
    second they were created: a resumed run's file must not share the killed run's second (in
    real use hours pass, here milliseconds)."""
    time.sleep(1.1)


def faulty(spec: str, *args, cwd: Path, timeout: int = 300) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join([str(REPO), str(REPO / "tests")])}
    return subprocess.run([sys.executable, str(FAULTS), spec, "--", *map(str, args)], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=timeout)


# --- 1. last.ckpt is the last state ----------------------------------------------------------------


def test_last_checkpoint_holds_the_final_step_of_every_kind_of_stop(trained, tmp_path):
    config, run_dir = trained
    final = load_ckpt(run_dir / "checkpoints" / "last.ckpt")
    assert final["global_step"] == 3 * STEPS_PER_EPOCH and final["epoch"] == 2
    # max_steps in the middle of an epoch.
    assert_ok(run_cli("fit", "--config", config, "--trainer.max_epochs", 3, "--trainer.max_steps", 4,
                      "--trainer.logger.init_args.save_dir", tmp_path))
    assert load_ckpt(tmp_path / "tiny" / "version_0" / "checkpoints" / "last.ckpt")["global_step"] == 4


@pytest.mark.parametrize("signal_name", ["INT", pytest.param("TERM", marks=pytest.mark.slow)])  # Ctrl-C, and a cluster's preemption
def test_ctrl_c_saves_last_and_the_resumed_run_ends_as_an_uninterrupted_one(trained, tmp_path, signal_name):
    config, run_dir = trained
    runs = tmp_path / "runs"
    result = faulty(f"step:4:{signal_name}", "fit", "--config", config, "--trainer.max_epochs", 3,
                    "--trainer.logger.init_args.save_dir", runs, cwd=tmp_path)
    assert result.returncode != 0
    # The step running at Ctrl-C finishes (the fifth), is saved, and training stops.
    assert "interrupted after step 5: resume with --ckpt_path" in result.stderr, result.stderr[-2000:]
    last = runs / "tiny" / "version_0" / "checkpoints" / "last.ckpt"
    assert load_ckpt(last)["global_step"] == 5
    next_second()
    assert_ok(run_cli("fit", "--config", config, "--trainer.max_epochs", 3, "--ckpt_path", "last",
                      "--trainer.logger.init_args.save_dir", runs))
    resumed, straight = load_ckpt(last), load_ckpt(run_dir / "checkpoints" / "last.ckpt")
    assert resumed["global_step"] == straight["global_step"]
    for name, value in straight["state_dict"].items():
        torch.testing.assert_close(resumed["state_dict"][name], value, rtol=1e-6, atol=1e-7)
    assert [s for s, _ in scalar_steps(events(runs / "tiny" / "version_0"), "train/loss")] == list(range(9))


@pytest.mark.slow  # 9 s: the default suite must stay under 5 minutes on 2 cores
def test_ctrl_c_during_baseline_ends_as_an_interrupt_and_says_so(trained, tmp_path):
    """Lightning's evaluation loops catch the interrupt and exit 1 themselves; the user still
    sees that it was an interrupt (exit 130, one line), not a silent failure."""
    config, _ = trained
    out = tmp_path / "zf"
    result = faulty("test:0:INT", "baseline", "--method", "zero-filled", "--config", config, "--output_dir", out,
                    "--no_progress", cwd=tmp_path)
    assert result.returncode == 130, result.stderr[-2000:]
    assert result.stderr.strip().splitlines()[-1] == "mrirecon: interrupted", result.stderr[-2000:]
    assert "Traceback" not in result.stderr
    assert not out.exists()  # nothing written, and the folder it made removed


# --- 2. a resume continues the same run (test_cli.py covers steps and the best state) ----------------


@pytest.mark.slow  # 10 s: the default suite must stay under 5 minutes on 2 cores
def test_resume_discards_events_logged_after_the_checkpoint(trained, tmp_path):
    config, _ = trained
    runs = tmp_path / "runs"
    # Killed after step 5: steps 4 and 5 were logged but last.ckpt holds step 3 (epoch end).
    result = faulty("step:5:KILL", "fit", "--config", config, "--trainer.max_epochs", 3,
                    "--trainer.logger.init_args.save_dir", runs, cwd=tmp_path)
    assert result.returncode == -signal.SIGKILL
    run_dir = runs / "tiny" / "version_0"
    assert load_ckpt(run_dir / "checkpoints" / "last.ckpt")["global_step"] == 3
    next_second()
    assert_ok(run_cli("fit", "--config", config, "--trainer.max_epochs", 3, "--ckpt_path", "last",
                      "--trainer.logger.init_args.save_dir", runs))
    # Each step once, and the values of the resumed run (not the killed one's) from step 3 on.
    steps = [s for s, _ in scalar_steps(events(run_dir), "train/loss")]
    assert steps == list(range(9))


# --- 3. atomic saves ---------------------------------------------------------------------------------


@pytest.mark.slow  # long: the default suite must stay under 5 minutes on 2 cores
def test_a_kill_during_a_save_leaves_the_previous_checkpoint_whole(trained, tmp_path):
    config, _ = trained
    runs = tmp_path / "runs"
    assert_ok(run_cli("fit", "--config", config, "--trainer.logger.init_args.save_dir", runs))
    last = runs / "tiny" / "version_0" / "checkpoints" / "last.ckpt"
    before = last.read_bytes()
    result = faulty("save:4:KILL", "fit", "--config", config, "--trainer.max_epochs", 2, "--ckpt_path", "last",
                    "--trainer.logger.init_args.save_dir", runs, cwd=tmp_path)
    assert result.returncode == -signal.SIGKILL
    assert last.read_bytes() == before  # untouched, not truncated
    assert read_checkpoint(last)["global_step"] == STEPS_PER_EPOCH
    assert list(last.parent.glob(".*.partial"))  # the killed process's temporary file...
    assert_ok(run_cli("fit", "--config", config, "--trainer.max_epochs", 2, "--ckpt_path", "last",
                      "--trainer.logger.init_args.save_dir", runs))
    assert not list(last.parent.glob(".*.partial"))  # ... is cleaned up by the next fit
    assert load_ckpt(last)["global_step"] == 2 * STEPS_PER_EPOCH


def _with_file_size_limit(limit: int):
    def apply() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # then writes past the limit fail with EFBIG
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    return apply


@pytest.mark.slow  # long: the default suite must stay under 5 minutes on 2 cores
def test_disk_full_during_fit_and_test_is_one_line_and_keeps_the_old_files(trained, tmp_path):
    config, run_dir = trained
    runs = tmp_path / "runs"
    assert_ok(run_cli("fit", "--config", config, "--trainer.logger.init_args.save_dir", runs))
    last = runs / "tiny" / "version_0" / "checkpoints" / "last.ckpt"
    before = last.read_bytes()
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    command = [sys.executable, "-m", "mrirecon", "fit", "--config", str(config), "--trainer.max_epochs", "2",
               "--ckpt_path", "last", "--trainer.logger.init_args.save_dir", str(runs)]
    proc = subprocess.run(command, env=env, capture_output=True, text=True, cwd=tmp_path,
                          preexec_fn=_with_file_size_limit(len(before) // 2), timeout=300)
    assert_user_error(Result(proc.returncode, proc.stdout, proc.stderr), "checkpoints/", "cannot write", "disk full")
    assert last.read_bytes() == before

    out = tmp_path / "results"
    assert_ok(run_cli("test", "--config", config, "--ckpt_path", last, "--output_dir", out))
    summary = (out / "summary.json").read_bytes()
    command = [sys.executable, "-m", "mrirecon", "test", "--config", str(config), "--ckpt_path", str(last),
               "--output_dir", str(out), "--model.method_name", "renamed"]
    proc = subprocess.run(command, env=env, capture_output=True, text=True, cwd=tmp_path,
                          preexec_fn=_with_file_size_limit(100), timeout=300)
    assert_user_error(Result(proc.returncode, proc.stdout, proc.stderr), "cannot write", "disk full")
    assert (out / "summary.json").read_bytes() == summary


# --- 4. evaluation opens no run; a failed fit leaves nothing --------------------------------------------


def test_test_and_predict_write_into_the_checkpoints_run(trained):
    config, run_dir = trained
    before = sorted(p.name for p in run_dir.parent.iterdir())
    assert_ok(run_cli("test", "--config", config, "--ckpt_path", "last"))
    assert_ok(run_cli("predict", "--config", config, "--ckpt_path", "last"))
    assert sorted(p.name for p in run_dir.parent.iterdir()) == before == ["version_0"]
    assert (run_dir / "test" / "last_test" / "summary.json").is_file()
    assert sorted(p.name for p in (run_dir / "reconstructions" / "last_test").iterdir()) == ["4x", "8x"]
    config_yaml = yaml.safe_load((run_dir / "config.yaml").read_text())
    assert config_yaml["trainer"]["max_epochs"] == 3  # the fit's config, not the test's


@pytest.mark.parametrize("num_workers", [0, 2])
def test_a_fit_that_fails_before_its_first_step_leaves_nothing(tiny_singlecoil, tmp_path, monkeypatch, num_workers):
    import mrirecon.data.dataset as dataset

    config = write_config(tmp_path / "c.yaml", tiny_singlecoil, tmp_path / "runs")

    class Broken:
        def __init__(self, *args, **kwargs):
            raise OSError("Unable to synchronously open file (bad object header version number)")

    # Scanning passes; reading a slice (in a DataLoader worker with num_workers 2) fails.
    monkeypatch.setattr(dataset.h5py, "File", Broken)
    result = run_cli("fit", "--config", config, "--data.num_workers", num_workers)
    assert_user_error(result, "cannot read slice", "bad object header")  # (9) one line from a worker too
    assert not (tmp_path / "runs").exists()


def test_a_fit_with_a_missing_data_folder_leaves_nothing(tmp_path):
    config = write_config(tmp_path / "c.yaml", tmp_path / "nowhere", tmp_path / "runs")
    assert_user_error(run_cli("fit", "--config", config), "nowhere", "no such data folder")
    assert not (tmp_path / "runs").exists()


# --- 5. a diverging loss ------------------------------------------------------------------------------


def test_nan_loss_stops_with_the_step_and_keeps_the_last_good_checkpoint(tiny_singlecoil, tmp_path):
    config = write_config(tmp_path / "c.yaml", tiny_singlecoil, tmp_path / "runs")
    net = ["--model.net", "nets.DivergesAtStep", "--model.net.init_args.step", 4,
           "--model.net.init_args.chans", 4, "--model.net.init_args.num_pool_layers", 2]
    result = run_cli("fit", "--config", config, *net, "--trainer.max_epochs", 3)
    line = assert_user_error(result, "NaN or Inf at step 4", "last.ckpt keeps the last finite state")
    assert "epoch 1" in line
    last = tmp_path / "runs" / "tiny" / "version_0" / "checkpoints" / "last.ckpt"
    ckpt = read_checkpoint(last)  # finite weights
    assert ckpt["global_step"] == STEPS_PER_EPOCH


# --- 6. no wrong number with exit 0 ---------------------------------------------------------------------


def test_last_without_any_run_is_an_error(tiny_singlecoil, tmp_path):
    config = write_config(tmp_path / "c.yaml", tiny_singlecoil, tmp_path / "runs")
    for command in ("test", "predict", "validate", "fit"):
        assert_user_error(run_cli(command, "--config", config, "--ckpt_path", "last"), "--ckpt_path last", "no run under")


def _save_variant(src: Path, dst: Path, change) -> Path:
    checkpoint = torch.load(src, weights_only=True)
    change(checkpoint)
    torch.save(checkpoint, dst)
    return dst


def test_checkpoint_with_nan_weights_is_refused(trained, tmp_path):
    config, run_dir = trained
    bad = _save_variant(run_dir / "checkpoints" / "last.ckpt", tmp_path / "nan.ckpt",
                        lambda c: c["state_dict"]["net.conv.layers.0.weight"].view(-1)[3].fill_(float("nan")))
    for command in ("test", "predict", "fit"):
        more_epochs = ["--trainer.max_epochs", 5] if command == "fit" else []  # than the checkpoint's 3
        assert_user_error(run_cli(command, "--config", config, "--ckpt_path", bad, "--output_dir", tmp_path / "o",
                                  *more_epochs),
                          str(bad), "not finite", "net.conv.layers.0.weight")
    assert not (tmp_path / "o" / "summary.json").exists()


def test_bit_flipped_checkpoint_is_refused(trained, tmp_path):
    config, run_dir = trained
    data = bytearray((run_dir / "checkpoints" / "last.ckpt").read_bytes())
    with zipfile.ZipFile(run_dir / "checkpoints" / "last.ckpt") as archive:
        info = max(archive.infolist(), key=lambda i: i.file_size)  # the largest tensor
    offset = info.header_offset + 30 + len(info.filename) + len(info.extra) + info.file_size // 2
    data[offset] ^= 0x10
    flipped = tmp_path / "flipped.ckpt"
    flipped.write_bytes(bytes(data))
    assert_user_error(run_cli("test", "--config", config, "--ckpt_path", flipped), str(flipped), "damaged", "checksum")


def test_a_checkpoint_of_another_network_configuration_is_refused(trained, tmp_path):
    """A residual U-Net's weights load into a plain one (same shapes) and would score wrong."""
    config, run_dir = trained
    ckpt = run_dir / "checkpoints" / "last.ckpt"
    for command in ("test", "predict", "validate"):
        err = assert_user_error(run_cli(command, "--config", config, "--ckpt_path", ckpt,
                                        "--model.net.init_args.residual", "true"),
                                str(ckpt), "model.net.init_args.residual=False", "config.yaml")
        assert "True" in err
    assert_user_error(run_cli("fit", "--config", config, "--ckpt_path", ckpt, "--model.net.init_args.chans", 6),
                      "model.net.init_args.chans=")


def test_results_refuse_nan_and_store_a_perfect_psnr_as_valid_json(tmp_path):
    with pytest.raises(UserError, match="a.h5: m at 4x has ssim = nan"):
        write_results({"m": {("a.h5", 4.0): {"ssim": float("nan"), "psnr": 20.0, "nmse": 0.1}}}, tmp_path)
    assert not (tmp_path / "summary.json").exists()
    write_results({"m": {("a.h5", 4.0): {"ssim": 1.0, "psnr": float("inf"), "nmse": 0.0}}}, tmp_path)
    summary = json.loads((tmp_path / "summary.json").read_text())  # strict JSON: no NaN/Infinity tokens
    assert summary["methods"]["m"]["4x"]["psnr"]["mean"] == "inf"


# --- 7. and 8. bad values: one line naming the key, before any work --------------------------------------


@pytest.mark.parametrize(
    "args,fragments",
    [
        (["--data.accelerations", "[-4,8]"], ["data.accelerations", "at least 2"]),
        (["--data.accelerations", "[0,8]"], ["data.accelerations"]),
        (["--data.center_fractions", "[1.5,0.04]"], ["data.center_fractions", "between 0 and 1"]),
        (["--data.center_fractions", "[0.5,0.04]"], ["data.center_fractions", "budget"]),
        (["--data.batch_size", "0"], ["data.batch_size", "at least 1"]),
        (["--data.num_workers", "-1"], ["data.num_workers"]),
        (["--data.sample_rate", "1.5"], ["data.sample_rate"]),
        (["--model.net.init_args.chans", "0"], ["model.net.init_args.chans", "positive integer"]),
        (["--model.net.init_args.drop_prob", "1.5"], ["model.net.init_args.drop_prob"]),
        (["--optimizer.lr", "-1"], ["optimizer", "learning rate"]),
        (["--checkpoint.every_n_train_steps", "0"], ["checkpoint.every_n_train_steps"]),
        (["--weights_only", "false"], ["--weights_only false", "refused"]),
    ],
)
def test_bad_values_are_one_line_naming_the_key(trained, tmp_path, args, fragments):
    config, _ = trained
    assert_user_error(run_cli("fit", "--config", config, *args, "--trainer.logger.init_args.save_dir", tmp_path), *fragments)
    assert not any(tmp_path.iterdir())


def test_zip_that_is_not_a_lightning_checkpoint(trained, tmp_path):
    config, _ = trained
    weights = tmp_path / "weights.pt"
    torch.save({"conv.weight": torch.zeros(3)}, weights)
    assert_user_error(run_cli("test", "--config", config, "--ckpt_path", weights), str(weights), "not a Lightning checkpoint")


@pytest.mark.parametrize("command", ["test", "predict"])
def test_unwritable_output_dir_is_refused_before_the_pass(trained, tmp_path, command, monkeypatch):
    config, _ = trained
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    import mrirecon.lightning.module as module

    def never(*args, **kwargs):
        raise AssertionError("the pass must not start")

    monkeypatch.setattr(module.ReconModule, "forward", never)
    assert_user_error(run_cli(command, "--config", config, "--ckpt_path", "last", "--output_dir", blocker / "out"),
                      str(blocker / "out"), "cannot write")


def test_simulate_into_an_unwritable_place(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    assert_user_error(run_cli("data", "simulate", "--out", blocker / "data", "--preset", "demo", "--no_progress"),
                      str(blocker / "data"))


# --- 10. checkpoints that would run code ------------------------------------------------------------------


class _RunsCode:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.write_text, (self.marker, "code ran"))


def test_a_checkpoint_that_would_run_code_is_refused(trained, tmp_path):
    config, run_dir = trained
    marker = tmp_path / "pwned"
    evil = tmp_path / "evil.ckpt"
    checkpoint = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)
    checkpoint["hyper_parameters"]["payload"] = _RunsCode(marker)
    torch.save(checkpoint, evil)
    for command in ("test", "fit", "predict"):
        assert_user_error(run_cli(command, "--config", config, "--ckpt_path", evil, "--output_dir", tmp_path / "o"),
                          str(evil), "refused")
    assert not marker.exists()


# --- done when: SIGKILL at five seeded points, resumed each time ------------------------------------------


def _final_metrics(run_dir: Path) -> dict[str, float]:
    acc = events(run_dir)
    return {tag: acc.Scalars(tag)[-1].value for tag in acc.Tags()["scalars"] if tag.startswith("val")}


@pytest.mark.slow
def test_killed_five_times_and_resumed_ends_like_an_uninterrupted_run(tiny_singlecoil, tmp_path):
    epochs, steps = 3, 3 * STEPS_PER_EPOCH
    config = write_config(tmp_path / "c.yaml", tiny_singlecoil, tmp_path / "runs")
    common = ["--trainer.max_epochs", epochs, "--checkpoint.every_n_train_steps", 2]
    straight_root = tmp_path / "straight"
    assert_ok(run_cli("fit", "--config", config, *common, "--trainer.logger.init_args.save_dir", straight_root))
    straight = straight_root / "tiny" / "version_0"

    rng = np.random.default_rng(2026)
    points = sorted(rng.choice(np.arange(2, steps), size=5, replace=False).tolist())
    kinds = rng.choice(["step", "save"], size=5).tolist()
    runs = tmp_path / "runs"
    run_dir = runs / "tiny" / "version_0"
    sizes = {}
    for i, (kind, point) in enumerate(zip(kinds, points)):
        resume = ["--ckpt_path", "last"] if i else []
        next_second()
        result = faulty(f"{kind}:{point}:KILL", "fit", "--config", config, *common, *resume,
                        "--trainer.logger.init_args.save_dir", runs, cwd=tmp_path)
        assert result.returncode == -signal.SIGKILL, (kind, point, result.stderr[-2000:])
        for ckpt in (run_dir / "checkpoints").glob("*.ckpt"):
            read_checkpoint(ckpt)  # every checkpoint on disk is whole
            assert ckpt.stat().st_size >= sizes.get(ckpt.name, 0) * 0.9
            sizes[ckpt.name] = ckpt.stat().st_size
    next_second()
    assert_ok(run_cli("fit", "--config", config, *common, "--ckpt_path", "last", "--trainer.logger.init_args.save_dir", runs))

    assert sorted(p.name for p in runs.joinpath("tiny").iterdir()) == ["version_0"]
    final, reference = load_ckpt(run_dir / "checkpoints" / "last.ckpt"), load_ckpt(straight / "checkpoints" / "last.ckpt")
    assert final["global_step"] == reference["global_step"] == steps
    for name, value in reference["state_dict"].items():
        torch.testing.assert_close(final["state_dict"][name], value, rtol=1e-6, atol=1e-7)
    ours, theirs = _final_metrics(run_dir), _final_metrics(straight)
    assert ours.keys() == theirs.keys() and ours
    for tag, value in theirs.items():
        assert ours[tag] == pytest.approx(value, rel=1e-6), tag
    assert [s for s, _ in scalar_steps(events(run_dir), "train/loss")] == list(range(steps))
