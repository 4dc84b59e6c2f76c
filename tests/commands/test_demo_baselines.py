"""CS-TV against zero-filled on the real demo test split, with the demo config's settings."""

import json
from pathlib import Path

import pytest
import yaml

from cli_helpers import run_baseline
from mrirecon.data.simulate import simulate_dataset

DEMO_CONFIG = Path(__file__).resolve().parents[2] / "configs" / "demo_unet.yaml"


@pytest.mark.slow
def test_cs_tv_beats_zero_filled_in_ssim_on_the_demo_test_set(tmp_path):
    root = tmp_path / "demo"
    simulate_dataset(root, preset="demo", seed=0, progress=False)
    config = yaml.safe_load(DEMO_CONFIG.read_text())
    config["data"].update(data_path=str(root), num_workers=0)
    path = tmp_path / "demo.yaml"
    path.write_text(yaml.safe_dump(config))
    out = run_baseline("cs-tv", path, tmp_path / "cs", progress=False)
    methods = json.loads((out / "summary.json").read_text())["methods"]
    zf, cs = methods["zero-filled"], methods["cs-tv"]
    assert set(cs) == {"4x", "8x"}
    for acc in cs:
        assert cs[acc]["ssim"]["mean"] > zf[acc]["ssim"]["mean"], acc
