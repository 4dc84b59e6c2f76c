"""``mrirecon export``: a trained network as TorchScript or ONNX, for use without mrirecon.

    mrirecon export --ckpt_path CKPT --format torchscript --out unet.pt [--image_size 320 320]
    mrirecon export --ckpt_path CKPT --format onnx --out unet.onnx
    mrirecon export --ckpt_path VARNET_CKPT --format onnx --out varnet.onnx --kspace_shape 15 640 368

What is exported is the network alone, with fastMRI's conventions (see
:mod:`mrirecon.methods.base`): the U-Net maps a standardised zero-filled image ``(B, 1, H, W)``
to a standardised image; the VarNet maps masked k-space ``(B, C, H, W, 2)``, the mask
``(B, 1, 1, W, 1)`` and the centre width ``(B,)`` to an RSS image on the k-space grid. The
TorchScript file is traced at the given size (for the U-Net any size divisible by
``2 ** num_pool_layers`` works the same; the VarNet's is fixed); the ONNX file keeps batch and
image size dynamic for the U-Net and fixed for the VarNet. The file is checked against the
network on that input before it is renamed into place.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from mrirecon.commands.arguments import ArgumentParser, positive_int


def _parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(prog="mrirecon export", description=__doc__.splitlines()[0])
    parser.add_argument("--ckpt_path", "--ckpt-path", dest="ckpt_path", required=True, type=Path)
    parser.add_argument("--format", required=True, choices=("torchscript", "onnx"))
    parser.add_argument("--out", required=True, type=Path, help="the file to write")
    parser.add_argument("--image_size", "--image-size", dest="image_size", type=positive_int, nargs=2, default=(320, 320),
                        metavar=("H", "W"), help="U-Net example input size (default 320 320)")
    parser.add_argument("--kspace_shape", "--kspace-shape", dest="kspace_shape", type=positive_int, nargs=3, default=None,
                        metavar=("COILS", "H", "W"), help="VarNet input: coils, rows and columns of k-space")
    return parser


def example_inputs(net, image_size, kspace_shape) -> tuple:
    import torch

    from mrirecon.errors import UserError

    gen = torch.Generator().manual_seed(0)
    if getattr(net, "input_domain", "image") == "measurements":
        # Its input is a SamplingMask object, which tracing and ONNX cannot take.
        raise UserError(f"--ckpt_path: a {type(net).__name__} cannot be exported yet; reconstruct with it in Python "
                        "(mrirecon.TrainedModel) or with mrirecon reconstruct")
    if getattr(net, "input_domain", "image") != "kspace":
        return (torch.randn(1, getattr(net, "in_chans", 1), *image_size, generator=gen),)
    if kspace_shape is None:
        raise UserError("--kspace_shape COILS H W: a VarNet is exported for one k-space size")
    coils, rows, cols = kspace_shape
    mask = torch.zeros(1, 1, 1, cols, 1, dtype=torch.bool)
    mask[..., ::4, :] = True
    centre = max(cols // 12, 2)
    mask[..., (cols - centre + 1) // 2:(cols - centre + 1) // 2 + centre, :] = True
    kspace = torch.randn(1, coils, rows, cols, 2, generator=gen) * mask
    return kspace, mask, torch.tensor([centre])


def export(ckpt_path: Path, fmt: str, out: Path, image_size=(320, 320), kspace_shape=None) -> Path:
    """Writes the exported network; returns ``out``."""
    import warnings

    import numpy as np
    import torch

    from mrirecon.core.atomic import atomic_path
    from mrirecon.core.checkpoint_files import read_checkpoint
    from mrirecon.errors import UserError
    from mrirecon.methods.trained import network_from_checkpoint

    net = network_from_checkpoint(read_checkpoint(ckpt_path), ckpt_path).eval()
    size_problem = getattr(net, "size_problem", None)
    problem = size_problem(*image_size) if size_problem and kspace_shape is None else None
    if problem:
        raise UserError(f"--image_size {image_size[0]} {image_size[1]}: this U-Net's {problem}")
    inputs = example_inputs(net, image_size, kspace_shape)
    with torch.no_grad():
        expected = net(*inputs).numpy()
    with atomic_path(out) as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tracer notes about shapes taken as constants: documented above
        if fmt == "torchscript":
            traced = torch.jit.trace(net, inputs)
            torch.jit.save(traced, str(tmp))
            with torch.no_grad():
                got = torch.jit.load(str(tmp))(*inputs).numpy()
        else:
            try:
                import onnxruntime
            except ImportError:
                raise UserError("--format onnx needs onnx, onnxscript and onnxruntime: pip install 'mrirecon[export]'") from None
            dynamic = None
            if len(inputs) == 1:
                dims = {0: torch.export.Dim("batch"), 2: torch.export.Dim("height"), 3: torch.export.Dim("width")}
                dynamic = (dims,)
            torch.onnx.export(net, inputs, str(tmp), dynamo=True, dynamic_shapes=dynamic, verbose=False,
                              input_names=["image"] if len(inputs) == 1 else ["masked_kspace", "mask", "num_low_frequencies"],
                              output_names=["output"])
            session = onnxruntime.InferenceSession(str(tmp))
            feed = {i.name: x.numpy() for i, x in zip(session.get_inputs(), inputs)}
            got = session.run(None, feed)[0]
        scale = float(np.abs(expected).max()) or 1.0
        if got.shape != expected.shape or float(np.abs(got - expected).max()) > 1e-4 * scale:
            raise UserError(f"{out}: the exported network does not reproduce the checkpoint's output; not written")
    return out


def main(argv: list[str]) -> int:
    args = _parser().parse_args(argv)
    from mrirecon.core.atomic import check_outputs

    check_outputs([(args.out, args.ckpt_path)], [args.ckpt_path], "choose another --out")
    out = export(args.ckpt_path, args.format, args.out, tuple(args.image_size), args.kspace_shape)
    print(f"{args.ckpt_path} -> {out} ({args.format})")
    return 0
