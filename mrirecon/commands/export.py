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
image size dynamic for the U-Net (any size, odd ones included) and fixed for the VarNet, and
holds its weights (past protocol buffers' 2 GiB, in ``<out>.data`` beside it). The file is
checked against the network on that input before it is renamed into place.
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
    import io
    import warnings

    import torch

    from mrirecon.core import atomic
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
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tracer notes about shapes taken as constants: documented above
        if fmt == "torchscript":
            # Saved to memory and written with one plain write: torch.jit.save onto a full disk
            # aborts the interpreter (an uncaught C++ exception) instead of raising.
            buffer = io.BytesIO()
            torch.jit.save(torch.jit.trace(net, inputs), buffer)
            with torch.no_grad():
                got = torch.jit.load(io.BytesIO(buffer.getvalue()))(*inputs).numpy()
            _check_reproduces(out, got, expected)
            atomic.write_bytes(out, buffer.getbuffer())
        else:
            _export_onnx(net, inputs, expected, out)
    return out


def _check_reproduces(out: Path, got, expected) -> None:
    import numpy as np

    from mrirecon.errors import UserError

    scale = float(np.abs(expected).max()) or 1.0
    if got.shape != expected.shape or float(np.abs(got - expected).max()) > 1e-4 * scale:
        raise UserError(f"{out}: the exported network does not reproduce the checkpoint's output; not written")


# Protocol buffers cannot hold more than 2 GiB: a larger model keeps its weights in a file beside it.
ONNX_INLINE_LIMIT = 2**31 - 2**24


def _export_onnx(net, inputs, expected, out: Path) -> None:
    import os
    import tempfile

    import torch

    from mrirecon.core import atomic
    from mrirecon.errors import UserError

    try:
        import onnx
        import onnxruntime
    except ImportError:
        raise UserError("--format onnx needs onnx, onnxscript and onnxruntime: pip install 'mrirecon[export]'") from None
    dynamic = None
    if len(inputs) == 1:
        # Batch and image size stay free: the U-Net pads odd sizes without a branch when exported.
        dynamic = ({0: torch.export.Dim("batch"), 2: torch.export.Dim("height"), 3: torch.export.Dim("width")},)
    program = torch.onnx.export(net, inputs, None, dynamo=True, dynamic_shapes=dynamic, verbose=False,
                                input_names=["image"] if len(inputs) == 1 else ["masked_kspace", "mask", "num_low_frequencies"],
                                output_names=["output"])
    model = program.model_proto
    if model.ByteSize() < ONNX_INLINE_LIMIT:
        # One self-contained file, checked in memory, written with one plain write.
        data = model.SerializeToString()
        session = onnxruntime.InferenceSession(data)
        feed_names = [i.name for i in session.get_inputs()]
        _check_reproduces(out, session.run(None, dict(zip(feed_names, (x.numpy() for x in inputs))))[0], expected)
        atomic.write_bytes(out, data)
        return
    # Weights in <out>.data, the name the model records (a model copied with its .data file
    # loads anywhere): both written into a private folder beside ``out``, checked, then renamed.
    weights = out.with_name(out.name + ".data")
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=f".{out.name}.", suffix=atomic.TEMP_SUFFIX, dir=out.parent) as folder:
        try:
            onnx.save_model(model, os.path.join(folder, out.name), save_as_external_data=True,
                            all_tensors_to_one_file=True, location=weights.name)
            session = onnxruntime.InferenceSession(os.path.join(folder, out.name))
            feed_names = [i.name for i in session.get_inputs()]
            _check_reproduces(out, session.run(None, dict(zip(feed_names, (x.numpy() for x in inputs))))[0], expected)
            del session
            for name in (weights.name, out.name):
                atomic.fsync_file(os.path.join(folder, name))
            os.replace(os.path.join(folder, weights.name), weights)
            os.replace(os.path.join(folder, out.name), out)
        except OSError as err:
            raise UserError(f"{out}: cannot write ({atomic.describe_os_error(err)})") from None


def main(argv: list[str]) -> int:
    args = _parser().parse_args(argv)
    from mrirecon.core.atomic import check_outputs

    check_outputs([(args.out, args.ckpt_path)], [args.ckpt_path], "choose another --out")
    out = export(args.ckpt_path, args.format, args.out, tuple(args.image_size), args.kspace_shape)
    print(f"{args.ckpt_path} -> {out} ({args.format})")
    return 0
