"""Repeated acquisitions of one scan (M4Raw's multi-repetition files) as training targets.

M4Raw (Lyu et al. 2023, 0.3 T brain) stores every repetition of a contrast as its own
fastMRI-format file, named ``<subject>_<contrast><repetition:02d>.h5`` (``2022061003_T101.h5``,
``..._T102``, ``..._FLAIR01``), each with its own single-repetition ``reconstruction_rss``; its
headers list the other repetitions (``repetitionInformation``) under the same names. Its
authors' U-Net and VarNet demos train and score each file against its own target, which is
``separate`` here. Two other uses of the repetitions, chosen by ``data.repetitions``:

* ``average``: every file's target is the mean of its group's targets (the multi-repetition
  average the dataset's description offers as the higher-SNR reference; magnitudes are
  averaged, so the phase drift between repetitions does not matter), in every split, so
  ``test`` and ``report`` score against the average too;
* ``pairs``: in the training split, every file's target is another repetition's (the next one
  of its group, in turn), so the network learns from one noisy scan against an independent
  noisy scan of the same anatomy (Noise2Noise); validation and test keep their own targets.

A group is a subject and a contrast; a group of one keeps its own target.
"""

from __future__ import annotations

import dataclasses
import re
from collections import defaultdict
from pathlib import Path
from typing import Literal, Sequence

from mrirecon.data.volumes import VolumeInfo, read_target, scored_maximum, size_key
from mrirecon.errors import UserError

RepetitionTargets = Literal["separate", "average", "pairs"]
REPETITION_TARGETS = ("separate", "average", "pairs")
# ``<subject>_<contrast><repetition>``: T1, T2, FLAIR (and GRE in later releases) with two digits.
_NAME = re.compile(r"^(?P<subject>.+)_(?P<contrast>[A-Za-z]+\d?)(?P<repetition>\d{2})\.h5$")


def repetition_of(path: Path) -> tuple[str, str, int] | None:
    """``(subject, contrast, repetition)`` of an M4Raw-named file, or None."""
    match = _NAME.match(Path(path).name)
    if match is None:
        return None
    return match["subject"], match["contrast"], int(match["repetition"])


def repetition_groups(volumes: Sequence[VolumeInfo]) -> dict[tuple[str, str], list[VolumeInfo]]:
    """The volumes by ``(subject, contrast)``, each group in repetition order; every volume
    must be M4Raw-named.

    Raises:
        UserError: a file not named ``<subject>_<contrast><NN>.h5``.
    """
    groups: dict[tuple[str, str], list[tuple[int, VolumeInfo]]] = defaultdict(list)
    for info in volumes:
        parsed = repetition_of(info.path)
        if parsed is None:
            raise UserError(f"{info.path}: not named like M4Raw's repetitions (<subject>_<contrast><NN>.h5, "
                            "e.g. 2022061003_T101.h5): data.repetitions needs them, or set it to separate")
        subject, contrast, repetition = parsed
        groups[(subject, contrast)].append((repetition, info))
    return {key: [info for _, info in sorted(members, key=lambda m: m[0])] for key, members in groups.items()}


def with_repetition_targets(volumes: list[VolumeInfo], mode: RepetitionTargets,
                            crop_size: tuple[int, int] | None) -> list[VolumeInfo]:
    """The volumes, each with the target ``mode`` gives it (see the module docstring), and the
    data range (SSIM's and PSNR's) of that target.

    Raises:
        UserError: an unknown mode, a file not M4Raw-named, or repetitions that cannot share a
            target (no target, or another slice count or target size than their group's first).
    """
    if mode not in REPETITION_TARGETS:
        raise UserError(f"data.repetitions: {mode!r}, expected one of {', '.join(REPETITION_TARGETS)}")
    if mode == "separate" or not volumes:
        return volumes
    replaced: dict[Path, VolumeInfo] = {}
    for (subject, contrast), group in repetition_groups(volumes).items():
        first = group[0]
        for info in group:
            if info.target_key is None:
                raise UserError(f"{info.path}: data.repetitions {mode} needs every repetition's target; this file has none")
            if (info.num_slices, info.target_shape) != (first.num_slices, first.target_shape):
                raise UserError(
                    f"{info.path}: {info.num_slices} slices of {size_key(info.target_shape)}, unlike "
                    f"{first.path.name} ({first.num_slices} of {size_key(first.target_shape)}): repetitions of "
                    f"{subject} {contrast} must image the same slices")
        if len(group) == 1:
            continue
        size = size_key(first.reconstruction_size(crop_size))
        if mode == "average":
            files = tuple(info.path for info in group)
            shared = dataclasses.replace(first, target_files=files)
            peak = scored_maximum(read_target(shared), first.reconstruction_size(crop_size))
            for info in group:
                replaced[info.path] = dataclasses.replace(info, target_files=files, target_max={size: peak})
        else:
            for info, partner in zip(group, group[1:] + group[:1]):
                replaced[info.path] = dataclasses.replace(info, target_files=(partner.path,),
                                                          target_max={size: partner.target_max[size]})
    return [replaced.get(info.path, info) for info in volumes]


def shared_subjects(splits: dict[str, list]) -> list[tuple[Path, str]]:
    """M4Raw-named files whose subject another split holds too (a repetition, or another
    contrast, of a training subject would be scored as unseen data), with why.

    Files not named like M4Raw's are not compared: other datasets' names do not name subjects.
    """
    owner: dict[str, tuple[str, Path]] = {}
    shared = []
    for split, entries in splits.items():
        for entry in entries:
            path = entry if isinstance(entry, Path) else entry.path  # a path, VolumeInfo or FileIdentity
            parsed = repetition_of(path)
            if parsed is None:
                continue
            other = owner.setdefault(parsed[0], (split, path))
            if other[0] != split:
                shared.append((path, f"subject {parsed[0]} is in the {split} split and in the {other[0]} split "
                                     f"({other[1].name}); a subject's scans may be in one split only"))
    return shared


def describe_repetitions(volumes: Sequence[VolumeInfo]) -> str | None:
    """What ``data check`` says of a split of M4Raw-named files (None for other names): its
    subjects and, per contrast, how many repetitions its groups hold."""
    if not volumes or any(repetition_of(info.path) is None for info in volumes):
        return None
    groups = repetition_groups(volumes)
    per_contrast: dict[str, list[int]] = defaultdict(list)
    for (_, contrast), group in groups.items():
        per_contrast[contrast].append(len(group))
    counts = ", ".join(f"{contrast} x{min(n)}" + (f"-{max(n)}" if max(n) > min(n) else "")
                       for contrast, n in sorted(per_contrast.items()))
    return (f"M4Raw's repetition files: {len({s for s, _ in groups})} subject(s), repetitions {counts} "
            "(targets: data.repetitions separate, average or pairs)")
