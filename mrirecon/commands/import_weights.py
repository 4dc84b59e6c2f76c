"""``mrirecon import``: weights trained elsewhere as a mrirecon checkpoint.

    mrirecon import knee_sc_leaderboard_state_dict.pt --config configs/fastmri_knee_singlecoil_unet.yaml \\
        --out runs/fastmri/unet_knee_sc.ckpt

The file is a ``torch.save(model.state_dict())`` of ``fastmri.models.Unet`` or ``VarNet`` (the
files fastMRI publishes, listed in the README) or a Lightning checkpoint holding one; the config
says the settings it was trained with (its ``model.net`` must build the same network). The
checkpoint is used like one of ``mrirecon fit``: ``test``, ``predict``, ``reconstruct``,
``report`` and ``export``. The work is :func:`mrirecon.api.import_state_dict`.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from mrirecon.commands.arguments import ArgumentParser


def _parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(prog="mrirecon import", description=__doc__.splitlines()[0]
                            + " Any config override (--model.net.init_args.chans 256) may follow.")
    parser.add_argument("state_dict", type=Path, help="torch.save(model.state_dict()) file, or a checkpoint holding one")
    parser.add_argument("--config", required=True, type=Path, help="the settings the weights were trained with")
    parser.add_argument("--out", required=True, type=Path, help="the checkpoint to write (.ckpt)")
    return parser


def main(argv: list[str]) -> int:
    args, overrides = _parser().parse_known_args(argv)
    from mrirecon import api

    out = api.import_state_dict(args.state_dict, api.RunConfig.from_arguments(args.config, overrides), args.out)
    print(f"wrote {out}: the weights of {args.state_dict} with the network and data settings of {args.config}")
    return 0
