"""Reading checkpoint files safely, without Lightning: for training, evaluation and inference.

:func:`read_checkpoint` refuses, with one line naming the file: a missing file, a file that is
not a zip archive, a damaged archive (every member's CRC is checked: ``torch.load`` does not),
a checkpoint that holds pickled objects other than plain data (always loaded with
``weights_only=True``: mrirecon's checkpoints never need more, and more would let a crafted
file run code), a file that is not a Lightning checkpoint, and non-finite weights.
"""

from __future__ import annotations

import pickle
import zipfile
from pathlib import Path
from typing import Any

import torch

from mrirecon.errors import UserError


def check_checkpoint_file(path: str | Path) -> Path:
    """The cheap checks of :func:`read_checkpoint`: the file exists and is a zip archive.

    Raises:
        UserError: one line naming the file.
    """
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: no such checkpoint file")
    # torch.save writes a zip archive; anything else (a config, a truncated copy) would fail
    # deep inside torch.load with an unrelated error.
    if not zipfile.is_zipfile(path):
        raise UserError(f"{path}: not a checkpoint file (not the zip archive torch.save writes)")
    return path


def read_checkpoint(path: str | Path, map_location: Any = "cpu") -> dict[str, Any]:
    """Loads a Lightning checkpoint after checking it; see the module docstring.

    Raises:
        UserError: one line naming the file and what is wrong with it.
    """
    path = _check_archive(path)
    checkpoint = _safe_load(path, map_location)
    if not isinstance(checkpoint, dict) or "state_dict" not in checkpoint or "pytorch-lightning_version" not in checkpoint:
        raise UserError(f"{path}: not a Lightning checkpoint (no 'state_dict' and 'pytorch-lightning_version' entries)")
    for name, tensor in checkpoint["state_dict"].items():
        if torch.is_tensor(tensor) and tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            raise UserError(f"{path}: the weights are not finite ({name} holds NaN or Inf): a diverged or damaged model")
    return checkpoint


def _check_archive(path: str | Path) -> Path:
    """:func:`check_checkpoint_file`, then every entry's CRC: a flipped bit is "damaged", not
    whatever error unpickling or a tensor read would give."""
    path = check_checkpoint_file(path)
    try:
        with zipfile.ZipFile(path) as archive:
            damaged = archive.testzip()
    except (zipfile.BadZipFile, OSError, EOFError) as err:
        raise UserError(f"{path}: damaged checkpoint ({err})") from None
    if damaged is not None:
        raise UserError(f"{path}: damaged checkpoint (checksum mismatch in {damaged})")
    return path


def _safe_load(path: Path, map_location: Any, mmap: bool = False) -> Any:
    """``torch.load`` with ``weights_only=True``, its failures as one line."""
    try:
        return torch.load(path, map_location=map_location, weights_only=True, mmap=mmap)
    except pickle.UnpicklingError as err:
        reason = str(err).splitlines()[0] if str(err) else "objects other than tensors and plain data"
        raise UserError(
            f"{path}: refused: the checkpoint holds pickled objects that are not plain data "
            f"and could run code when loaded ({reason[:160]})"
        ) from None
    except (RuntimeError, OSError, EOFError, ValueError) as err:
        raise UserError(f"{path}: damaged checkpoint ({str(err).splitlines()[0][:200]})") from None


# The attribute that holds the network in fastMRI's Lightning modules (UnetModule, VarNetModule),
# in ours, and what DataParallel adds: a state dict saved from any of them loads into the network.
_WRAPPER_PREFIXES = ("unet.", "varnet.", "net.", "module.")


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """The weights of a network saved with ``torch.save(model.state_dict())`` (fastMRI's
    published files), or the network's weights inside a Lightning checkpoint of fastMRI's or
    ours, keyed as the network names them.

    Raises:
        UserError: one line naming the file: missing, damaged, not a state dict, non-finite.
    """
    path = _check_archive(path)
    loaded = _safe_load(path, "cpu")
    if isinstance(loaded, dict) and isinstance(loaded.get("state_dict"), dict):
        loaded = loaded["state_dict"]
    if not isinstance(loaded, dict) or not loaded or not all(isinstance(k, str) and torch.is_tensor(v) for k, v in loaded.items()):
        raise UserError(f"{path}: not a state dict (a dict of parameter names to tensors, as torch.save(model.state_dict()) writes)")
    for prefix in _WRAPPER_PREFIXES:
        if all(k.startswith(prefix) for k in loaded):
            loaded = {k[len(prefix):]: v for k, v in loaded.items()}
            break
    for name, tensor in loaded.items():
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            raise UserError(f"{path}: the weights are not finite ({name} holds NaN or Inf)")
    return loaded


def peek_checkpoint(path: str | Path) -> dict[str, Any]:
    """The small entries of a checkpoint (step, epoch, callback states) without reading its tensors."""
    path = check_checkpoint_file(path)
    try:
        checkpoint = _safe_load(path, "cpu", mmap=True)
    except UserError:
        # A flipped bit reads as a refused or broken pickle: name it as the damage it is. The
        # checksums are read only here and in read_checkpoint, not on every good peek.
        _check_archive(path)
        raise
    if not isinstance(checkpoint, dict):
        raise UserError(f"{path}: not a Lightning checkpoint")
    return {k: v for k, v in checkpoint.items() if k not in ("state_dict", "optimizer_states")}


def optimizer_settings(path: str | Path) -> list[dict[str, Any]]:
    """The hyperparameters (lr, betas, weight decay, ...) of the first parameter group of each
    optimiser a checkpoint holds the state of: what a resumed fit continues with."""
    checkpoint = _safe_load(check_checkpoint_file(path), "cpu", mmap=True)
    states = checkpoint.get("optimizer_states") or [] if isinstance(checkpoint, dict) else []
    return [{k: v for k, v in state["param_groups"][0].items() if k != "params"}
            for state in states if isinstance(state, dict) and state.get("param_groups")]
