"""``mrirecon reconstruct``: a trained model on single files, k-space in, fastMRI-format images out.

    mrirecon reconstruct --ckpt_path CKPT INPUT.h5 [INPUT.h5 ...] --out OUT/ [--acceleration 4]

Each input is a fastMRI-format file. A file that carries its own ``mask`` (the real test and
challenge files) is reconstructed with it; otherwise ``--acceleration`` chooses one of the
training masks, drawn as ``mrirecon predict`` draws them (fixed by the file name), so the result
equals predict's for the same file and mask. The mask settings, challenge and reconstruction
size come from the checkpoint (the DataModule's settings of its fit), or from ``--config``
(read by the same parser as every command, with its overrides). Outputs are
``OUT/<file name>`` with key ``reconstruction``, written atomically.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from mrirecon.commands.arguments import ArgumentParser, positive_int


def _parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(prog="mrirecon reconstruct", description=__doc__.splitlines()[0])
    parser.add_argument("inputs", nargs="+", type=Path, metavar="INPUT.h5")
    parser.add_argument("--ckpt_path", "--ckpt-path", dest="ckpt_path", required=True, type=Path)
    parser.add_argument("--out", "--output_dir", dest="out", required=True, type=Path, help="output folder")
    parser.add_argument("--config", type=Path, default=None,
                        help="take the data settings from this config (and overrides) instead of the checkpoint")
    parser.add_argument("--acceleration", type=int, default=None,
                        help="for files without their own mask: which of the model's accelerations to mask with")
    parser.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    parser.add_argument("--batch_size", "--batch-size", dest="batch_size", type=positive_int, default=8)
    parser.add_argument("--adapt_steps", "--adapt-steps", dest="adapt_steps", type=int, default=0,
                        help="fine-tune the network on each file's own measurement for up to this many steps "
                             "before reconstructing it (scan-specific adaptation; networks with data consistency)")
    parser.add_argument("--adapt_lr", "--adapt-lr", dest="adapt_lr", type=float, default=1e-4,
                        help="Adam's learning rate for the adaptation")
    return parser


def _data_settings(args: argparse.Namespace, overrides: list[str]) -> dict:
    """mask_type, center_fractions, accelerations, challenge, crop_size and the 2-D masks'
    calibration_radius and partial_fourier."""
    from mrirecon.core.checkpoint_files import peek_checkpoint
    from mrirecon.errors import UserError

    keys = ("mask_type", "center_fractions", "accelerations", "challenge", "crop_size", "calibration_radius",
            "partial_fourier")
    if args.config is not None:
        from mrirecon.api import RunConfig

        data = RunConfig.from_arguments(args.config, overrides).values["data"]
    else:
        if overrides:
            raise UserError(f"unrecognized arguments: {' '.join(overrides)} (config overrides need --config)")
        data = peek_checkpoint(args.ckpt_path).get("datamodule_hyper_parameters") or {}
        if "accelerations" not in data:
            raise UserError(f"{args.ckpt_path}: the checkpoint does not record its data settings; pass --config")
    return {k: data.get(k) for k in keys}


def main(argv: list[str]) -> int:
    args, overrides = _parser().parse_known_args(argv)
    import numpy as np

    from mrirecon.core.atomic import check_outputs, check_writable_folder, first_missing_folder, remove_empty_folders
    from mrirecon.data.dataset import draw_mask, mask_sampler
    from mrirecon.data.volumes import read_volume_info
    from mrirecon.errors import UserError
    from mrirecon.evaluation.submission import write_reconstruction
    from mrirecon.methods.trained import TrainedModel

    _check_device(args.device)
    settings = _data_settings(args, overrides)
    # Settings a checkpoint from before 2-D masks lacks take the DataModule's defaults.
    plane_settings = {key: settings[key] for key in ("calibration_radius", "partial_fourier") if settings[key] is not None}
    try:
        masks = mask_sampler(settings["mask_type"] or "random", settings["center_fractions"], settings["accelerations"],
                             **plane_settings)
    except ValueError as err:
        raise UserError(f"data.{err}") from None
    # Before the folder is made or anything read: no output may replace an input (--out being
    # an input's own folder) and no two inputs may share an output name.
    check_outputs([(args.out / path.name, path) for path in args.inputs], [*args.inputs, args.ckpt_path],
                  "choose another --out (or reconstruct files of the same name into separate folders)")
    adapt = None
    if args.adapt_steps:
        from mrirecon.methods.adaptation import AdaptSettings

        try:
            adapt = AdaptSettings(steps=args.adapt_steps, lr=args.adapt_lr)
        except UserError as err:
            raise UserError(str(err).replace("adapt.steps", "--adapt_steps").replace("adapt.lr", "--adapt_lr")) from None
    model = TrainedModel.from_checkpoint(args.ckpt_path, args.device)
    crop = tuple(settings["crop_size"]) if settings.get("crop_size") else None
    # Every input is read and given its mask before the output folder is made: a refused file
    # (no mask of its own and no --acceleration the model knows) stops the command with nothing written.
    plans = []
    for path in args.inputs:
        if not path.is_file():
            raise UserError(f"{path}: no such file")
        info = read_volume_info(path, settings["challenge"] or "singlecoil", check_finite=True, crop_size=crop)
        if info.fixed_mask is not None:
            mask, num_low = info.fixed_mask_array, info.fixed_num_low_frequencies
            acceleration = info.acceleration or mask.size / mask.sum()
        else:
            accelerations = [acc for _, acc in masks.pairs]
            if args.acceleration not in accelerations:
                raise UserError(f"{path}: has no mask of its own: choose --acceleration from {accelerations}")
            pair = accelerations.index(args.acceleration)
            # The mask `test` and `predict` give this file: fixed by its name.
            try:
                mask, num_low, _ = draw_mask(masks, info, pair)
            except ValueError as err:  # a plane too small for the 2-D mask's acceleration
                raise UserError(f"{path}: {err}") from None
            acceleration = args.acceleration
        plans.append((path, info, mask, num_low, acceleration))
    created = first_missing_folder(args.out)
    out = check_writable_folder(args.out)
    written = False
    try:
        for path, info, mask, num_low, acceleration in plans:
            images = model.reconstruct(read_kspace(path), mask, info.reconstruction_size(crop), num_low, args.batch_size, adapt)
            if not np.isfinite(images).all():
                raise UserError(f"{path}: the reconstruction is not finite (a diverged or damaged model)")
            target = out / path.name
            write_reconstruction(target, images, {"acceleration": float(acceleration)})
            written = True
            adapted = model.last_adaptation
            note = f", adapted in {adapted.seconds:.1f} s ({adapted.steps_taken[0]} steps kept)" if adapted else ""
            print(f"{path} -> {target} ({float(acceleration):g}x, {images.shape[0]} slices of {images.shape[1]}x{images.shape[2]}{note})")
    finally:
        if not written:
            remove_empty_folders(created)  # the folder this command made, if nothing reached it
    return 0


def _check_device(device: str | None) -> None:
    """``--device`` names a device torch knows and this machine has."""
    if device is None:
        return
    import torch

    from mrirecon.errors import UserError

    try:
        parsed = torch.device(device)
    except (RuntimeError, ValueError):
        raise UserError(f"--device {device!r}: not a device (cpu, cuda, cuda:1, ...)") from None
    if parsed.type == "cpu":
        return
    if parsed.type != "cuda":
        # The k-space FFTs and metrics are tested on CPU and CUDA only (mps, xpu, meta: untested or no data).
        raise UserError(f"--device {device}: mrirecon reconstructs on cpu or cuda")
    if not torch.cuda.is_available():
        raise UserError(f"--device {device}: this machine has no CUDA device (use cpu)")
    count = torch.cuda.device_count()
    if parsed.index is not None and parsed.index >= count:
        raise UserError(f"--device {device}: this machine has {count} CUDA device(s), cuda:0 to cuda:{count - 1}")


def read_kspace(path: Path):
    """The ``kspace`` of a file, complex64, with a one-line error."""
    import h5py
    import numpy as np

    from mrirecon.errors import UserError

    try:
        with h5py.File(path, "r") as hf:
            return np.asarray(hf["kspace"], dtype=np.complex64)
    except (OSError, KeyError) as err:
        raise UserError(f"{path}: cannot read 'kspace' ({str(err).split('(')[0].strip()})") from None
