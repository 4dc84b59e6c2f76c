"""``mrirecon data check``: validate a fastMRI-layout folder and summarise it.

A folder may be a dataset root (holding ``singlecoil_train``, ``multicoil_val``, ...) or one split
folder of ``*.h5`` files. Every file is validated by the same scan training runs, through the
same metadata cache (:func:`mrirecon.data.volumes.scan_volumes`), so a check makes the next
training start fast and vice versa; each bad file becomes a row with its reason.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from mrirecon.core.text import text_table
from mrirecon.data.repetitions import describe_repetitions, shared_subjects
from mrirecon.data.volumes import TRAINING_SPLITS, Challenge, VolumeInfo, missing_target, overlapping_files, scan_volumes
from mrirecon.errors import UserError

SPLIT_FOLDER = re.compile(r"^(singlecoil|multicoil)_(\w+)$")


@dataclass
class SplitReport:
    """What one split folder holds."""

    folder: Path
    challenge: Challenge
    volumes: list[VolumeInfo] = field(default_factory=list)
    bad: list[tuple[Path, str]] = field(default_factory=list)


def split_folders(path: Path) -> list[tuple[Path, Challenge]]:
    """The split folders under ``path`` (or ``path`` itself), with their challenge."""
    path = Path(path)
    if not path.is_dir():
        raise UserError(f"{path}: {'a file, not a dataset folder' if path.exists() else 'no such folder'}")
    match = SPLIT_FOLDER.match(path.name)
    if match:
        return [(path, match.group(1))]  # type: ignore[list-item]
    order = {"train": 0, "val": 1, "test": 2, "challenge": 3}
    found = [
        (p, SPLIT_FOLDER.match(p.name).group(1))
        for p in sorted(path.iterdir(), key=lambda p: (p.name.split("_")[0], order.get(p.name.split("_")[-1], 9), p.name))
        if p.is_dir() and SPLIT_FOLDER.match(p.name)
    ]
    if found:
        return found  # type: ignore[return-value]
    if any(p.suffix == ".h5" for p in path.iterdir()):
        raise UserError(f"{path}: h5 files outside a <challenge>_<split> folder; check the split folder or rename it like singlecoil_val")
    raise UserError(f"{path}: empty, or no singlecoil_*/multicoil_* split folders with .h5 volumes")


def cmrxrecon_challenges(path: Path) -> list[Challenge]:
    """The challenges of a CMRxRecon download at ``path`` (its ``MultiCoil/Cine``, ``SingleCoil/Cine``)."""
    from mrirecon.data.cmrxrecon import COIL_FOLDERS

    return [c for c, folder in COIL_FOLDERS.items() if (Path(path) / folder / "Cine").is_dir()]  # type: ignore[misc]


def format_cmrxrecon_report(path: Path, check_finite: bool = True) -> tuple[str, int]:
    """``data check`` of a CMRxRecon download: a table per challenge and the bad files; and
    their number. Training reads the converted folder (``mrirecon data convert``)."""
    from mrirecon.data.cmrxrecon import check_cine_tree

    lines, bad_count = [], 0
    for challenge in cmrxrecon_challenges(path):
        rows, bad = check_cine_tree(path, challenge, check_values=check_finite)
        header = ["CMRxRecon cine", "files", "patients", "kspace kx x ky", "coils", "slices", "frames"]
        lines.append(text_table(header, rows))
        lines += [f"  {p}: {why}" for p, why in bad]
        bad_count += len(bad)
    lines.append(f"a CMRxRecon download: convert it for training with mrirecon data convert {path} --format cmrxrecon "
                 "--out DIR")
    return "\n".join(lines), bad_count


def is_cc359_download(path: Path) -> bool:
    """Whether ``path`` is a Calgary-Campinas download: its ``train/``, ``val/`` or ``Test-R=N/``
    folders of .h5 files (not mrirecon's ``<challenge>_<split>`` folders), the first of which
    holds the dataset's real-valued k-space (fastMRI-layout files in a folder named ``train``
    are checked as what they are)."""
    from mrirecon.data.cc359 import find_set_folders, looks_like_scan

    path = Path(path)
    if not path.is_dir() or any(p.is_dir() and SPLIT_FOLDER.match(p.name) for p in path.iterdir()):
        return False
    folders = find_set_folders(path)
    first = next((f for folder in folders.values() for f in sorted(folder.iterdir()) if f.suffix.lower() == ".h5"), None)
    return first is not None and looks_like_scan(first)


def format_cc359_report(path: Path, check_finite: bool = True) -> tuple[str, int]:
    """``data check`` of a Calgary-Campinas download: a table of its sets and the bad files;
    and their number. Training reads the converted folder (``mrirecon data convert``)."""
    from mrirecon.data.cc359 import check_download

    rows, bad = check_download(path, check_values=check_finite)
    lines = [text_table(["Calgary-Campinas set", "files", "plane ky x kz", "coils", "slices"], rows)]
    lines += [f"  {p}: {why}" for p, why in bad]
    lines.append(f"a Calgary-Campinas download: convert it for training with mrirecon data convert {path} --format cc359 "
                 "--out DIR")
    return "\n".join(lines), len(bad)


def check_dataset(path: Path, check_finite: bool = True, use_cache: bool = True) -> list[SplitReport]:
    """Validate every file under ``path`` as the commands that read it would; never raises for a
    bad file, only for a bad folder.

    Beyond each file's own checks: a train or val file needs a target (fit refuses it
    otherwise), and no file may be in two splits of one challenge.
    """
    reports = []
    for folder, challenge in split_folders(path):
        report = SplitReport(folder, challenge)

        def bad(file: Path, err: UserError, report: SplitReport = report) -> None:
            # A folder-level error may still be about one file of it (a broken link).
            named, _, why = str(err).partition(": ")
            report.bad.append((Path(named), why) if named.startswith(str(folder) + "/") else (file, why or str(err)))

        try:
            report.volumes = scan_volumes(folder, challenge, check_finite, use_cache, on_error=bad)
        except UserError as err:
            bad(folder, err)
        if SPLIT_FOLDER.match(folder.name).group(2) in TRAINING_SPLITS:
            # An undersampled file with its mask and no target is self-supervised training data.
            for info in [v for v in report.volumes if v.target_key is None and v.fixed_mask is None]:
                report.volumes.remove(info)
                report.bad.append((info.path, missing_target(challenge, "check")))
        reports.append(report)
    for challenge in {r.challenge for r in reports}:
        ours = [r for r in reports if r.challenge == challenge]
        splits = {r.folder.name: list(r.volumes) for r in ours}
        found = overlapping_files(splits)
        found += [(path, why) for path, why in shared_subjects(splits) if path not in {p for p, _ in found}]
        for path, problem in found:
            next(r for r in ours if path in {v.path for v in r.volumes}).bad.append((path, problem))
    return reports


def _shapes(volumes: list[VolumeInfo]) -> str:
    counts = Counter("x".join(map(str, v.kspace_shape[-2:])) for v in volumes)
    return ", ".join(f"{s}" + (f" ({n})" if len(counts) > 1 else "") for s, n in counts.most_common())


def format_report(reports: list[SplitReport]) -> str:
    """The summary table and the list of bad files."""
    header = ["folder", "volumes", "slices", "kspace HxW", "coils", "target", "target size", "acquisitions", "bad"]
    rows = []
    for r in reports:
        v = r.volumes
        coils = sorted({x.num_coils for x in v})
        rows.append(
            [
                r.folder.name,
                str(len(v)),
                str(sum(x.num_slices for x in v)),
                _shapes(v) or "-",
                (f"{coils[0]}" if len(coils) == 1 else f"{coils[0]}-{coils[-1]}") if coils else "-",
                ", ".join(sorted({x.target_key or "none (mask)" for x in v})) or "-",
                ", ".join(sorted({f"{x.target_shape[0]}x{x.target_shape[1]}" for x in v})) or "-",
                ", ".join(f"{a or '?'} ({n})" for a, n in sorted(Counter(x.acquisition for x in v).items())) or "-",
                str(len(r.bad)),
            ]
        )
    lines = [text_table(header, rows)]
    for r in reports:
        repetitions = describe_repetitions(r.volumes)
        if repetitions:
            lines.append(f"{r.folder.name}: {repetitions}")
        without = [v for v in r.volumes if v.target_key is None]
        if without and SPLIT_FOLDER.match(r.folder.name).group(2) in TRAINING_SPLITS:
            lines.append(f"{r.folder.name}: {len(without)} file(s) undersampled without targets: fit trains on them "
                         "with model.training ssdu only" + (" (val: by its held-out loss)" if r.folder.name.endswith("_val") else ""))
    bad = [(p, why) for r in reports for p, why in r.bad]
    if bad:
        lines += ["", f"{len(bad)} bad file(s):"]
        lines += [f"  {p}: {why}" for p, why in bad]
    return "\n".join(lines)
