"""The README's commands work as written: every `mrirecon` command of its bash blocks runs, in
order, on demo data made small (32x32 images) with tiny overrides appended, writing into a
temporary folder. Commands that need the real download, GPUs or several processes are listed
with the reason they are skipped here (other tests cover them)."""

from __future__ import annotations

import re
import shlex
import time
from pathlib import Path

import pytest

from cli_helpers import REPO, assert_ok, run_cli
from mrirecon.data.anatomy import COLIN27_PATH

SKIP = {
    "/data/fastmri": "needs the real fastMRI download",
    "/data/m4raw": "M4Raw's download: tests/lightning/test_m4raw.py runs its config on files of its shapes",
    "/data/CMRxRecon": "CMRxRecon's download: tests/data/test_cmrxrecon_files.py checks and converts a tree of its layout",
    "configs/cmrxrecon_": "the converted CMRxRecon download: tests/lightning/test_cmrxrecon.py runs this config on it",
    "/data/CC359": "Calgary-Campinas' download: tests/data/test_cc359_files.py checks and converts one of its layout",
    "configs/cc359_": "the converted Calgary-Campinas download: tests/lightning/test_cc359_pipeline.py runs this config",
    "_state_dict.pt": "fastMRI's published weights, downloaded by the user: tests/commands/test_import.py",
    "--trainer.devices 4": "needs GPUs",
    "--trainer.strategy ddp": "several processes: tests/lightning/test_distributed.py",
    "study --quick\n": "trains 48 runs: tests/commands/test_study.py runs a small grid",
    "study\n": "the full grid is for a GPU",
    "path/to/": "a placeholder path",
    "reconstruct": "tests/commands/test_reconstruct_export.py",
    "export": "tests/commands/test_reconstruct_export.py",
}
LIGHTNING = ("fit", "validate", "test", "predict")


def readme_commands() -> list[str]:
    """The `mrirecon` commands of the README's bash blocks, continuation lines joined."""
    text = (REPO / "README.md").read_text()
    commands = []
    for block in re.findall(r"```bash\n(.*?)```", text, re.DOTALL):
        joined = re.sub(r"\\\n\s*", " ", block)
        for line in joined.splitlines():
            line = line.split(" #", 1)[0].strip()
            if line.startswith("mrirecon "):
                commands.append(line)
    return commands


def _skip_reason(command: str) -> str | None:
    for marker, reason in SKIP.items():
        if marker in command + "\n":
            return reason
    return None


def _tiny(args: list[str], tmp: Path) -> list[str]:
    """The README's arguments, pointed at the temporary folder, with small settings appended."""
    args = [a.replace("data/demo", str(tmp / "data" / "demo")) for a in args]
    args = [str(tmp / a) if a.startswith(("runs/", "results/", "recons/")) else a for a in args]
    args = [a.replace("=runs/", f"={tmp}/runs/") for a in args]
    command = args[0]
    if args[:2] == ["data", "simulate"]:
        if "colin27" in args and not COLIN27_PATH.is_file():
            # Colin27 comes with Debian's mricron-data; the default head stands in for it.
            args = [a.replace("colin27", "mni152") for a in args]
        return args + ["--recon_size", "32", "--no_progress"]
    config = ["--data.data_path", str(tmp / "data" / "demo-mixed"), "--data.num_workers", "0"]  # the demo's data
    if command in LIGHTNING:
        return args + config + ["--model.net.init_args.chans", "4", "--model.net.init_args.num_pool_layers", "2",
                                "--trainer.max_epochs", "1", "--trainer.enable_progress_bar", "false",
                                "--trainer.logger.init_args.save_dir", str(tmp / "runs")]
    if command == "baseline":
        return args + config + ["--cs_tv.iterations", "10", "--no_progress"]
    if command == "report":
        return args + config + ["--model.net.init_args.chans", "4", "--model.net.init_args.num_pool_layers", "2",
                                "--no_progress"]
    return args


def test_the_readme_shows_commands():
    commands = readme_commands()
    assert any(c.startswith("mrirecon fit") for c in commands) and len(commands) > 8


def test_readme_commands_run_in_order(tmp_path, monkeypatch):
    monkeypatch.chdir(REPO)
    ran, skipped = [], []
    for command in readme_commands():
        reason = _skip_reason(command)
        if reason:
            skipped.append((command, reason))
            continue
        args = _tiny(shlex.split(command)[1:], tmp_path)
        start = time.perf_counter()
        result = run_cli(*args)
        assert_ok(result)
        ran.append(f"{command}  ({time.perf_counter() - start:.1f} s)")
    assert any(c.startswith("mrirecon report") for c in ran), ran
    assert not (REPO / "runs" / "demo" / "version_999").exists()
    print("\n".join(ran + [f"skipped: {c}  ({why})" for c, why in skipped]))


@pytest.mark.parametrize("args", [["--help"], ["--version"], ["data", "--help"], ["baseline", "--help"], ["report", "--help"]])
def test_install_check_and_help(args):
    result = run_cli(*args)
    assert result.code == 0, result.err
    assert "mrirecon" in result.out
