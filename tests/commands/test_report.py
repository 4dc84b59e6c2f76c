import csv
import shutil
import json

import h5py
import pytest
import yaml

from cli_helpers import run_baseline, run_cli
from mrirecon.commands.main import main


def test_report_scores_methods_like_the_evaluator_and_draws_the_figure(tiny_singlecoil, tmp_path):
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump({
        "data": {"data_path": str(tiny_singlecoil), "center_fractions": [0.08, 0.04], "accelerations": [4, 8],
                 "num_workers": 0},
        "cs_tv": {"iterations": 40},
    }))
    sums = {m: json.loads((run_baseline(m, config, tmp_path / m, progress=False) / "summary.json").read_text())["methods"][m]
            for m in ("zero-filled", "cs-tv")}
    out = tmp_path / "report"
    with pytest.raises(SystemExit) as done:
        main(["report", "--config", str(config), "--method", f"zero-filled={tmp_path / 'zero-filled'}",
              "--method", f"cs-tv={tmp_path / 'cs-tv' / 'reconstructions'}", "--out", str(out), "--no-progress"])
    assert done.value.code == 0
    rows = list(csv.DictReader(open(out / "report.csv")))
    assert {(r["method"], r["acceleration"]) for r in rows} == {(m, a) for m in sums for a in ("4x", "8x")}
    for r in rows:
        ref = sums[r["method"]][r["acceleration"]]
        assert float(r["ssim_mean"]) == pytest.approx(ref["ssim"]["mean"], abs=1e-5)
        assert float(r["psnr_mean"]) == pytest.approx(ref["psnr"]["mean"], abs=1e-3)
        assert float(r["nmse_mean"]) == pytest.approx(ref["nmse"]["mean"], abs=1e-5)
    assert "| 4x | cs-tv |" in (out / "report.md").read_text()
    assert (out / "comparison.png").stat().st_size > 10_000
    assert json.loads((out / "summary.json").read_text())["split"] == "test"


def test_report_rejects_bad_method_arguments(tiny_singlecoil, tmp_path, capsys):
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump({"data": {"data_path": str(tiny_singlecoil)}}))
    for method, message in [("nonsense", "expected NAME=PATH"), (f"x={tmp_path / 'none.ckpt'}", "no such checkpoint file"),
                            (f"x={tmp_path}", "no reconstructions")]:
        with pytest.raises(SystemExit) as err:
            main(["report", "--config", str(config), "--method", method, "--out", str(tmp_path / "r")])
        assert err.value.code == 2
        assert message in capsys.readouterr().err


def test_a_repeated_name_is_runs_of_one_method(tiny_singlecoil, tmp_path):
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump({"data": {"data_path": str(tiny_singlecoil), "num_workers": 0,
                                               "center_fractions": [0.08], "accelerations": [4]}}))
    zf = run_baseline("zero-filled", config, tmp_path / "zf", progress=False)
    reference = json.loads((zf / "summary.json").read_text())["methods"]["zero-filled"]["4x"]
    out = tmp_path / "report"
    copy = tmp_path / "zf-copy"  # another run, here of the same numbers (one folder twice is refused)
    shutil.copytree(zf, copy)
    with pytest.raises(SystemExit) as done:
        main(["report", "--config", str(config), "--method", f"zf={zf}", "--method", f"zf={copy}", "--out", str(out),
              "--no_progress"])
    assert done.value.code == 0
    (row,) = list(csv.DictReader(open(out / "report.csv")))
    assert row["method"] == "zf" and row["runs"] == "2"
    for stat in ("mean", "min", "max"):
        assert float(row[f"ssim_{stat}"]) == pytest.approx(reference["ssim"]["mean"], abs=1e-6)
    methods = {r["method"] for r in csv.DictReader(open(out / "metrics.csv"))}
    assert methods == {"zf[1]", "zf[2]"}
    assert "(min–max) over runs" in (out / "report.md").read_text()


def test_several_splits_side_by_side_with_one_cs_tv_lambda(tiny_singlecoil, tmp_path):
    from dataclasses import replace

    from cli_helpers import run_baselines
    from mrirecon.data.simulate import PRESETS, simulate_dataset

    data = tmp_path / "data"
    shutil.copytree(tiny_singlecoil, data)
    simulate_dataset(data, preset=replace(PRESETS["ood"], recon_size=32, volumes=(2,), slices=4), sources=["mni152"],
                     progress=False)
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump({"data": {"data_path": str(data), "num_workers": 0, "center_fractions": [0.08],
                                               "accelerations": [4]}, "cs_tv": {"iterations": 20}}))
    outputs = run_baselines("cs-tv", config, tmp_path / "cs", splits=["test", "ood"], progress=False,
                            lam_grid=[0.001, 0.01])
    assert outputs == {"test": tmp_path / "cs" / "test", "ood": tmp_path / "cs" / "ood"}
    chosen = [json.loads((outputs[s] / "summary.json").read_text())["cs_tv"]["lam_chosen"] for s in ("test", "ood")]
    assert chosen[0] == chosen[1] and (tmp_path / "cs" / "tuning.csv").is_file()  # tuned once, on val
    zf = run_baselines("zero-filled", config, tmp_path / "zf", splits=["test", "ood"], progress=False)

    out = tmp_path / "report"
    with pytest.raises(SystemExit) as done:
        main(["report", "--config", str(config), "--split", "test", "ood", "--method", f"zf={tmp_path / 'zf'}/{{split}}",
              "--method", f"cs={tmp_path / 'cs'}/{{split}}", "--out", str(out), "--no_progress"])
    assert done.value.code == 0
    text = (out / "report.md").read_text()
    assert "| acceleration | method | runs | test SSIM | test PSNR (dB) | ood SSIM | ood PSNR (dB) |" in text
    for split in ("test", "ood"):
        expected = json.loads((zf[split] / "summary.json").read_text())["methods"]["zero-filled"]["4x"]["ssim"]["mean"]
        row = next(r for r in csv.DictReader(open(out / split / "report.csv")) if r["method"] == "zf")
        assert float(row["ssim_mean"]) == pytest.approx(expected, abs=1e-6)
        assert f"{expected:.4f}" in text
    ood = json.loads((out / "ood" / "summary.json").read_text())
    assert ood["split"] == "ood" and set(ood["by_acquisition"]["zf"]["4x"]) == {"AXT1", "AXPD"}
    assert "## By acquisition" in (out / "ood" / "report.md").read_text()


def test_a_checkpoint_is_scored_with_its_own_network_and_loss_under_the_report_config(tiny_singlecoil, tmp_path):
    """A U-Net trained with residual: true and the SSIM loss, reported under a config that builds
    neither (as the multi-coil report scores U-Nets under the VarNet's config), scores as `test`
    with the run's own config does."""
    from cli_helpers import assert_ok, run_cli, write_config

    trained = write_config(tmp_path / "trained.yaml", tiny_singlecoil, tmp_path / "runs", loss="ssim")
    spec = yaml.safe_load(trained.read_text())
    spec["model"]["net"]["init_args"]["residual"] = True
    trained.write_text(yaml.safe_dump(spec, sort_keys=False))
    assert_ok(run_cli("fit", "--config", trained, "--trainer.max_steps", 3))
    ckpt = tmp_path / "runs" / "tiny" / "version_0" / "checkpoints" / "last.ckpt"
    assert_ok(run_cli("test", "--config", trained, "--ckpt_path", ckpt, "--output_dir", tmp_path / "test"))
    expected = {(r["method"], r["acceleration"], r["volume"]): float(r["ssim"])
                for r in csv.DictReader(open(tmp_path / "test" / "metrics.csv")) if r["method"] == "unet"}

    plain = write_config(tmp_path / "plain.yaml", tiny_singlecoil, tmp_path / "runs")
    assert_ok(run_cli("report", "--config", plain, "--method", f"unet={ckpt}", "--out", tmp_path / "report",
                      "--no_progress"))
    got = {(r["method"], r["acceleration"], r["volume"]): float(r["ssim"])
           for r in csv.DictReader(open(tmp_path / "report" / "metrics.csv"))}
    assert got.keys() == expected.keys()
    for key, value in expected.items():
        assert got[key] == pytest.approx(value, abs=1e-6), key


def test_a_method_missing_volumes_or_accelerations_is_refused_before_any_file(tiny_singlecoil, tmp_path, capsys):
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump({"data": {"data_path": str(tiny_singlecoil), "num_workers": 0,
                                               "center_fractions": [0.08, 0.04], "accelerations": [4, 8]}}))
    zf = run_baseline("zero-filled", config, tmp_path / "zf", progress=False)
    for broken, remove in (("one-volume", lambda r: sorted((r / "8x").glob("*.h5"))[0].unlink()),
                           ("no-8x", lambda r: shutil.rmtree(r / "8x"))):
        partial = tmp_path / broken
        shutil.copytree(zf / "reconstructions", partial)
        remove(partial)
        out = tmp_path / f"report-{broken}"
        with pytest.raises(SystemExit) as err:
            main(["report", "--config", str(config), "--method", f"zf={zf}", "--method", f"partial={partial}",
                  "--out", str(out), "--no_progress"])
        assert err.value.code == 2
        message = capsys.readouterr().err
        assert "partial: no reconstruction of" in message and "at 8x" in message, message
        assert not any(out.glob("*.md")) and not any(out.glob("*.csv")), sorted(out.iterdir())
    # Alone too: the config masks the split at 4x and 8x, so a folder without 8x is incomplete,
    # and one with a 6x the config never drew is another run's.
    alone = tmp_path / "report-alone"
    with pytest.raises(SystemExit) as err:
        main(["report", "--config", str(config), "--method", f"partial={tmp_path / 'no-8x'}", "--out", str(alone), "--no_progress"])
    assert err.value.code == 2 and "partial: no reconstruction of" in capsys.readouterr().err
    stray = tmp_path / "stray"
    shutil.copytree(zf / "reconstructions", stray)
    shutil.copytree(stray / "4x", stray / "6x")
    for path in (stray / "6x").glob("*.h5"):
        with h5py.File(path, "a") as hf:
            hf.attrs["acceleration"] = 6.0
    with pytest.raises(SystemExit) as err:
        main(["report", "--config", str(config), "--method", f"zf={stray}", "--out", str(alone), "--no_progress"])
    assert err.value.code == 2
    assert "zf: reconstructions at 6x, but the config masks the split at 4x, 8x" in capsys.readouterr().err
    # A folder whose files say another acceleration (a 4x copied or linked as 10x), a flat file
    # beside the folders, or one volume linked under another name: refused, not scored.
    mislabelled = tmp_path / "mislabelled"
    shutil.copytree(zf / "reconstructions", mislabelled)
    shutil.copytree(mislabelled / "4x", mislabelled / "8x", dirs_exist_ok=True)
    linked = tmp_path / "linked"
    shutil.copytree(zf / "reconstructions", linked)
    first, second = sorted((linked / "4x").glob("*.h5"))[:2]
    second.unlink()
    second.symlink_to(first)
    for folder, fragment in ((mislabelled, "its acceleration attribute says 4x, its folder 8x"),
                             (linked, "the same file as")):
        with pytest.raises(SystemExit) as err:
            main(["report", "--config", str(config), "--method", f"zf={folder}", "--out", str(alone), "--no_progress"])
        assert err.value.code == 2 and fragment in capsys.readouterr().err
    assert not alone.exists() or not any(alone.glob("*.md"))


def test_a_failed_report_leaves_the_previous_one_whole(tiny_singlecoil, tmp_path, capsys):
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump({"data": {"data_path": str(tiny_singlecoil), "num_workers": 0,
                                               "center_fractions": [0.08], "accelerations": [4]}}))
    zf = run_baseline("zero-filled", config, tmp_path / "zf", progress=False)
    out = tmp_path / "report"

    def report(*extra):
        with pytest.raises(SystemExit) as done:
            main(["report", "--config", str(config), "--method", f"zf={zf}", "--out", str(out), "--no_progress", *extra])
        return done.value.code, capsys.readouterr().err

    # The figure's slices and acceleration: refused in one line, nothing is written.
    test_file = sorted((tiny_singlecoil / "singlecoil_test").glob("*.h5"))[0].name
    for extra, message in [(("--slices", "nope.h5:0"), "--slices nope.h5:0: nope.h5 is not a volume of"),
                           (("--slices", f"{test_file}:99"), f"--slices {test_file}:99: {test_file} has slices 0 to 3"),
                           (("--slices", test_file), "expected FILE:SLICE"),
                           (("--slices", f"{test_file}:1:2"), "expected FILE:SLICE, one slice each"),
                           (("--acceleration", "5"), "singlecoil_test is masked at 4x")]:
        code, err = report(*extra)
        assert code == 2 and message in err and "Traceback" not in err, err
        assert not out.exists() and not list(tmp_path.glob(".report*")), list(tmp_path.iterdir())
    assert report()[0] == 0
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    assert set(before) == {"metrics.csv", "summary.json", "report.md", "report.csv", "comparison.png"}
    (out / "notes.txt").write_text("mine")  # the user's own file in the folder stays
    # What a killed re-run leaves (its staging folder, a temporary file) is cleared by the next run.
    (tmp_path / ".report.staging-999999999-x").mkdir()
    (out / ".report.csv.abc.partial").write_text("half")
    code, _ = report("--slices", "nope.h5:0")
    assert code == 2 and {p.name: p.read_bytes() for p in out.iterdir() if p.name in before} == before
    assert report()[0] == 0
    assert sorted(p.name for p in out.iterdir()) == sorted([*before, "notes.txt"])
    assert not list(tmp_path.glob(".report*"))


def test_written_files_follow_the_umask(tiny_singlecoil, tmp_path):
    import os

    from mrirecon.core import atomic

    atomic.write_text(tmp_path / "a.txt", "x")  # under the test process's umask, read once
    umask = os.umask(0)
    os.umask(umask)
    assert (tmp_path / "a.txt").stat().st_mode & 0o777 == 0o666 & ~umask


def test_a_report_into_or_over_a_folder_it_reads_is_refused_before_any_work(tiny_singlecoil, tmp_path, capsys):
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump({"data": {"data_path": str(tiny_singlecoil), "num_workers": 0,
                                               "center_fractions": [0.08], "accelerations": [4]}}))
    zf = run_baseline("zero-filled", config, tmp_path / "zf", progress=False)
    (tmp_path / "runs").mkdir()
    shutil.copytree(zf, tmp_path / "runs" / "metrics.csv")  # a method folder named like a report entry
    before = {p: p.read_bytes() for p in sorted(tmp_path.rglob("*")) if p.is_file()}
    for method, out, what in [(zf, zf, "its files into"), (zf / "reconstructions", zf / "reconstructions", "its files into"),
                              (tmp_path / "runs" / "metrics.csv", tmp_path / "runs", "metrics.csv over")]:
        with pytest.raises(SystemExit) as done:
            main(["report", "--config", str(config), "--method", f"zf={method}", "--out", str(out), "--no_progress"])
        err = capsys.readouterr().err
        assert done.value.code == 2 and err.count("mrirecon: error: ") == 1 and "Traceback" not in err, err
        assert f"--out {out}: would write {what} {method}, read as method 'zf'; choose another --out" in err, err
    assert {p: p.read_bytes() for p in sorted(tmp_path.rglob("*")) if p.is_file()} == before
    # A sibling of the method folders, a folder inside one, or above them whose entries they are not, is fine.
    for out in (tmp_path / "report", zf / "report", tmp_path):
        result = run_cli("report", "--config", config, "--method", f"zf={zf}", "--out", out, "--no_progress")
        assert result.code == 0, result.err
        assert (out / "report.md").is_file() and (zf / "metrics.csv").read_bytes() == before[zf / "metrics.csv"]


def test_bad_names_accelerations_and_slices_are_refused_before_any_checkpoint_runs(tiny_singlecoil, tmp_path, monkeypatch):
    from cli_helpers import assert_user_error

    import mrirecon.api as api

    def never(*args, **kwargs):
        raise AssertionError("a checkpoint was run before the arguments were checked")

    monkeypatch.setattr(api, "predict", never)
    monkeypatch.setattr(api, "_network_of_checkpoint", never)
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump({"data": {"data_path": str(tiny_singlecoil), "num_workers": 0,
                                               "center_fractions": [0.08, 0.04], "accelerations": [4, 8]}}))
    ckpt = tmp_path / "unet.ckpt"
    ckpt.write_bytes(b"never read")
    report = ["report", "--config", config, "--out", tmp_path / "r", "--no_progress"]
    for name in ["", " ", "a/b", "..", "a\\b"]:
        assert_user_error(run_cli(*report, "--method", f"{name}={ckpt}"), f"--method {name!r}", "a method needs a name without '/'")
    for acceleration, message in [("0", "--acceleration 0: an undersampling factor above 1"),
                                  ("nan", "--acceleration nan: an undersampling factor above 1"),
                                  ("6", "singlecoil_test is masked at 4x, 8x")]:
        assert_user_error(run_cli(*report, "--method", f"unet={ckpt}", "--acceleration", acceleration), f"--acceleration {acceleration}", message)
    volume = sorted((tiny_singlecoil / "singlecoil_test").glob("*.h5"))[0].name
    assert_user_error(run_cli(*report, "--method", f"unet={ckpt}", "--slices", "nope.h5:0"),
                      "--slices nope.h5:0: nope.h5 is not a volume of", "singlecoil_test")
    assert_user_error(run_cli(*report, "--method", f"unet={ckpt}", "--slices", f"{volume}:99"),
                      f"--slices {volume}:99: {volume} has slices 0 to 3")
    (tmp_path / "link").symlink_to(tmp_path)
    assert_user_error(run_cli(*report, "--method", f"unet={ckpt}", "--method", f"unet={tmp_path / 'link' / 'unet.ckpt'}"),
                      f"--method unet={tmp_path / 'link' / 'unet.ckpt'}: the same input as unet={ckpt}")
    assert_user_error(run_cli(*report, "--method", f"unet={ckpt}", "--protocol", "brats"),
                      "--protocol brats: one of fastmri, cmrxrecon")
    # fastMRI-layout files have no (slice, frame) grid for the CMRxRecon ranking.
    assert_user_error(run_cli(*report, "--method", f"unet={ckpt}", "--protocol", "cmrxrecon"),
                      f"{volume}: no cine_slices/cine_frames attributes: not a volume converted from CMRxRecon")
    assert not (tmp_path / "r").exists()
