"""The README's Python API script runs as written, on small data in a temporary folder, and its
numbers agree with one another: the report scores the checkpoint as `test` does."""

from __future__ import annotations

import re
import shutil

import pytest

from cli_helpers import REPO


def readme_api_script() -> str:
    text = (REPO / "README.md").read_text()
    section = text.split("## Python API", 1)[1]
    return re.search(r"```python\n(.*?)```", section, re.DOTALL).group(1)


def test_the_readme_api_script_runs_as_written(tiny_singlecoil, tmp_path, monkeypatch, capsys):
    script = readme_api_script()
    assert "api.fit(" in script and "api.test(" in script and "api.report(" in script
    # The paths the script names, relative to its working folder: the demo config and its data.
    shutil.copytree(tiny_singlecoil, tmp_path / "data" / "demo")
    (tmp_path / "configs").mkdir()
    shutil.copy(REPO / "configs" / "demo_unet.yaml", tmp_path / "configs" / "demo_unet.yaml")
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    exec(compile(script, "README.md", "exec"), namespace)

    out = capsys.readouterr().out
    assert "U-Net test SSIM at 4x:" in out
    run, results, report = namespace["run"], namespace["results"], namespace["report"]
    assert run.last_checkpoint.is_file() and run.run_dir.parent == tmp_path / "runs" / "api"
    assert results.accelerations == [4.0, 8.0] and set(results.methods) == {"unet", "zero-filled"}
    assert (results.output_dir / "metrics.csv").is_file()
    # The report scored the same checkpoint on the same fixed masks as `test`.
    reported = report.results["test"].per_volume
    for method in ("unet", "zero-filled"):
        for key, values in results.per_volume[method].items():
            assert reported[method][key]["ssim"] == pytest.approx(values["ssim"], abs=1e-6), (method, key)
    assert (report.out / "report.md").is_file() and (report.out / "comparison.png").is_file()
