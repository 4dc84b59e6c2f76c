"""Calgary-Campinas conventions written out independently of mrirecon's reader, for the tests:
the dataset's own reconstruction (DIRECT's ``CalgaryCampinasDataset`` with its uncentred
``ifft2``, then RSS) and the challenge's metric code (DIRECT's ``_calgary_campinas_metric``,
itself the organisers' notebook), and a writer of raw files of any shape."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import skimage.metrics
import yaml

CONFIG = Path(__file__).parents[1] / "configs" / "cc359_multicoil_unet.yaml"


def cpu_config(tmp_path: Path, data: Path, net: dict, **data_settings) -> Path:
    """The shipped Calgary-Campinas config for this CPU: its masks and splits as they are, a tiny
    network ``net`` (init_args), one process, no workers, ``data_settings`` on top."""
    settings = yaml.safe_load(CONFIG.read_text())
    settings["trainer"].update(accelerator="cpu", precision="32-true", max_epochs=1, log_every_n_steps=1,
                               enable_progress_bar=False, enable_model_summary=False, benchmark=False)
    settings["trainer"]["logger"]["init_args"]["save_dir"] = str(tmp_path / "runs")
    settings["model"]["net"]["init_args"].update(net)
    settings["data"].update(data_path=str(data), num_workers=0, transform_on_device=False, **data_settings)
    path = tmp_path / "cc359.yaml"
    path.write_text(yaml.safe_dump(settings))
    return path


def dataset_images(path: Path) -> np.ndarray:
    """RSS of the dataset's own reconstruction of a CC359 file, ``(slices, ky, kz)`` (orthonormal
    scale): interleaved channels to complex, kz from ``ceil(0.85 W)`` zeroed as DIRECT zeroes
    it, ``np.fft.ifft2`` over the plane, root sum of squares over coils."""
    with h5py.File(path, "r") as hf:
        raw = hf["kspace"][()]
    kspace = raw[..., ::2] + 1j * raw[..., 1::2]
    num_z = kspace.shape[2]
    kspace[:, :, int(np.ceil(num_z * 0.85)):, :] = 0
    images = np.fft.ifft2(kspace, axes=(1, 2), norm="ortho")
    return np.sqrt((np.abs(images) ** 2).sum(axis=-1))


def challenge_scores(gt: np.ndarray, pred: np.ndarray, outer: int = 50) -> dict[str, float]:
    """The challenge's SSIM and PSNR of one volume: DIRECT's ``_calgary_campinas_metric`` over
    its ``crop_outer_slices`` slice(50, -50) of a 256-slice volume (``outer`` for others)."""
    gt, pred = gt[outer:-outer], pred[outer:-outer]
    gt_max = gt.max(axis=(1, 2), keepdims=True)
    gt = gt / gt_max
    pred = pred / gt_max
    out = {}
    for name, func in (("ssim", skimage.metrics.structural_similarity), ("psnr", skimage.metrics.peak_signal_noise_ratio)):
        values = []
        for idx in range(gt.shape[0]):
            data_range = np.maximum(gt[idx].max(), pred[idx].max()) - np.minimum(gt[idx].min(), pred[idx].min())
            values.append(func(gt[idx], pred[idx], data_range=data_range))
        out[name] = float(np.mean(values))
    return out


def write_raw(path: Path, kspace: np.ndarray | None = None, **datasets) -> Path:
    """A file of the dataset's layout: ``kspace`` as given (float, interleaved) and any others."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with h5py.File(path, "w") as hf:
        if kspace is not None:
            hf.create_dataset("kspace", data=kspace)
        for key, value in datasets.items():
            hf.create_dataset(key, data=value)
    return path
