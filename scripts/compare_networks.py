"""The networks with and without data consistency, trained alike, in and out of distribution
(docs/generalisation.md).

Every network trains with the demo's config (``configs/demo.yaml``: its data, masks, loss,
optimiser and epochs), only the network changed, for each seed; ``mrirecon report`` then scores
them on the demo's test split (in distribution) and its ``ood`` split beside zero-filled and
CS-TV (λ chosen on val), with the min-max over seeds:

- ``unet``: the design card's U-Net without data consistency (chans 16, 4 levels; the demo
  network before data consistency);
- ``unet-dc``: one U-Net (chans 16, 4 levels) on the complex image, then hard data consistency;
- ``cascade``: the demo's network, three U-Nets (chans 8, 3 levels) with data consistency
  between them (Schlemper et al.'s deep cascade);
- ``varnet``: the single-coil E2E-VarNet (S = 1: no sensitivity network), three cascades of
  chans 8.

    python scripts/compare_networks.py [--seeds 0 1 2] [--networks unet cascade] [--out runs/compare]

Needs the demo's data with its ood split (``bash scripts/demo.sh`` makes both, and the
baselines this script reuses from ``runs/demo``; missing baselines are computed). About 4-8
minutes per network and seed on 2 CPU cores; a run that finished is not trained again.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from mrirecon import api
from mrirecon.errors import UserError

REPO = Path(__file__).resolve().parents[1]
_UNET = "mrirecon.models.Unet"
_DC_UNET = "mrirecon.models.DataConsistentUnet"
_GROUP_NORM = {"drop_prob": 0.0, "norm": "group", "norm_groups": 32}
# Each network as the config's ``model.net`` (its whole entry: no argument of the demo's
# network leaks into another).
NETWORKS = {
    "unet": {"class_path": _UNET, "init_args": {"chans": 16, "num_pool_layers": 4, **_GROUP_NORM}},
    "unet-dc": {"class_path": _DC_UNET, "init_args": {"chans": 16, "num_pool_layers": 4, "num_cascades": 1,
                                                      "demodulate_phase": True, **_GROUP_NORM}},
    "cascade": None,  # the demo config's own network
    "varnet": {"class_path": "mrirecon.models.VarNet",
               "init_args": {"num_cascades": 3, "chans": 8, "pools": 3, "estimate_sensitivities": False,
                             "norm": "group", "norm_groups": 32}},
}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", type=Path, default=REPO / "configs" / "demo.yaml")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--networks", nargs="+", default=list(NETWORKS), choices=list(NETWORKS))
    parser.add_argument("--out", type=Path, default=Path("runs/compare"))
    parser.add_argument("--baselines", type=Path, default=Path("runs/demo"),
                        help="folder of the demo's zero-filled/ and cs-tv/ baselines (made if missing)")
    args = parser.parse_args()
    try:
        return _compare(args)
    except UserError as err:
        print(f"mrirecon: error: {err}", file=sys.stderr)
        return 2


def _compare(args: argparse.Namespace) -> int:
    config = api.RunConfig.load(args.config)
    data = Path(config.get("data.data_path"))
    if not (data / "singlecoil_ood").is_dir():
        raise UserError(f"{data}/singlecoil_ood: missing; run bash scripts/demo.sh (or simulate the ood preset) first")
    splits = ["test", "ood"]
    methods = []
    for method, extra in (("zero-filled", {}), ("cs-tv", {"lam_grid": [0.0005, 0.001, 0.002, 0.004]})):
        folder = args.baselines / method
        if not all((folder / split / "summary.json").is_file() for split in splits):
            api.baseline(config, method, splits, output_dir=folder, **extra)
        methods.append(api.Method(method, folder / "{split}"))
    for name in args.networks:
        for seed in args.seeds:
            run_name = f"{name}_s{seed}"
            overrides = {"seed_everything": seed, "trainer.logger.init_args.save_dir": str(args.out),
                         "trainer.logger.init_args.name": run_name}
            if NETWORKS[name] is not None:
                overrides["model.net"] = NETWORKS[name]
            run_config = config.override(overrides)
            last = args.out / run_name / "version_0" / "checkpoints" / "last.ckpt"
            if not last.is_file():
                last = api.fit(run_config).last_checkpoint
            methods.append(api.Method(name, last))
    api.report(config, methods, splits, out=args.out / "report")
    return 0


if __name__ == "__main__":
    sys.exit(main())
