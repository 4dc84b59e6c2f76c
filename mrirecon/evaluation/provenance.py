"""Where a number came from, recorded beside it in ``summary.json`` and reports.

The software (mrirecon's version and git commit, torch, fastmri, Lightning, Python), the resolved
config, the checkpoint (path, SHA-256, step) and the dataset (its folder, the simulator's manifest
where there is one, and a digest of the evaluated files' names and sizes, which changes when any
file is added, removed or rewritten).
"""

from __future__ import annotations

import hashlib
import json
import platform
import subprocess
from importlib import metadata
from pathlib import Path
from typing import Any, Iterable, Mapping

import mrirecon


def _version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def git_commit() -> str | None:
    """The commit of the mrirecon checkout (``+dirty`` with local changes), or None outside git."""
    root = Path(mrirecon.__file__).resolve().parents[1]
    try:
        commit = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True,
                                timeout=5, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=5, check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return commit + ("+dirty" if dirty else "")


def software() -> dict[str, Any]:
    return {
        "mrirecon": mrirecon.__version__,
        "git_commit": git_commit(),
        "torch": _version("torch"),
        "fastmri": _version("fastmri"),
        "pytorch_lightning": _version("pytorch-lightning"),
        "python": platform.python_version(),
    }


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def checkpoint_record(path: str | Path | None, global_step: int | None = None,
                      imported_from: dict[str, Any] | None = None) -> dict[str, Any] | None:
    """The checkpoint evaluated; ``imported_from``: the state dict ``mrirecon import`` made it of."""
    if not path or not Path(path).is_file():
        return None
    record = {"path": str(path), "sha256": file_sha256(Path(path)), "global_step": global_step}
    if imported_from:
        record["imported_from"] = imported_from
    return record


def dataset_record(data_path: Path, split_folder: Path, files: Iterable[Path]) -> dict[str, Any]:
    """The evaluated files (names, sizes) and the simulator's manifest, if any."""
    listing = sorted((Path(f).name, Path(f).stat().st_size) for f in files)
    digest = hashlib.sha256("\n".join(f"{name}:{size}" for name, size in listing).encode()).hexdigest()
    record: dict[str, Any] = {"data_path": str(data_path), "split_folder": str(split_folder), "volumes": len(listing),
                              "files_sha256": digest}
    manifest = Path(data_path) / "simulation.json"
    if manifest.is_file():
        try:
            simulation = json.loads(manifest.read_text())
            # The split's own entry says how it was made (splits may come from different runs);
            # manifests before 0.2 have only the top-level record.
            split = simulation.get("splits", {}).get(Path(split_folder).name)
            if isinstance(split, dict) and "preset" in split:
                record["simulation"] = {k: v for k, v in split.items() if k != "files"}
            else:
                record["simulation"] = {k: v for k, v in simulation.items() if k != "splits"}
        except (OSError, ValueError):
            pass
    return record


def provenance(config: Mapping[str, Any] | None, checkpoint: dict[str, Any] | None, dataset: dict[str, Any] | None) -> dict[str, Any]:
    return {"software": software(), "config": dict(config) if config else None, "checkpoint": checkpoint, "dataset": dataset}
