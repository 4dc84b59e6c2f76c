"""The ISMRMRD XML header of fastMRI's files: the writer of the simulator's headers and the reader
of the fields the data code uses (reconstruction size, acquired phase-encode band), in one place."""

from __future__ import annotations

from pathlib import Path
from xml.etree import ElementTree

from mrirecon.errors import UserError

NAMESPACE = "http://www.ismrm.org/ISMRMRD"
_TAG = "{" + NAMESPACE + "}"


def read_geometry(raw: bytes | str, num_cols: int, path: Path) -> tuple[tuple[int, int], tuple[int, int]]:
    """Recon size and acquired column band from the ISMRMRD header, as fastMRI reads them."""
    try:
        root = ElementTree.fromstring(raw)

        def query(*names: str) -> int:
            node = root.find("/".join(_TAG + n for n in names))
            if node is None or node.text is None:
                raise ValueError("/".join(names) + " missing")
            return int(float(node.text))

        enc_y = query("encoding", "encodedSpace", "matrixSize", "y")
        recon = (query("encoding", "reconSpace", "matrixSize", "x"), query("encoding", "reconSpace", "matrixSize", "y"))
        center = query("encoding", "encodingLimits", "kspace_encoding_step_1", "center")
        maximum = query("encoding", "encodingLimits", "kspace_encoding_step_1", "maximum") + 1
    except (ElementTree.ParseError, ValueError, OverflowError) as err:  # OverflowError: 1e400
        raise UserError(f"{path}: unreadable ismrmrd_header ({err})") from None
    left = enc_y // 2 - center
    right = left + maximum
    if not 0 <= left < right <= num_cols:
        # Headers of some files describe a different width than the stored k-space; then the
        # band is meaningless and we treat every column as acquired.
        left, right = 0, num_cols
    return recon, (left, right)


def header_bytes(height: int, width: int, r: int | tuple[int, int], fov_mm: float, slice_mm: float,
                    slices: int, coils: int, acquisition: str, repetitions: tuple[str, ...] = (),
                    acquired_columns: int | None = None) -> bytes:
    """An ISMRMRD XML header with what fastMRI's SliceDataset reads, and the geometry.

    ``r`` is the reconstruction size: square (one number) or (rows, columns), ``fov_mm`` the
    field of view of its rows.

    The phase-encode limits span all ``width`` columns with the centre at ``width // 2``, so
    SliceDataset's padding is 0 on the left and ``width`` on the right; ``acquired_columns``
    ends them earlier (partial Fourier: Calgary-Campinas' last 15 % of kz is never acquired). ``repetitions`` (file
    stems, this file's first) adds M4Raw's ``repetitionInformation``: the group and the other
    repetitions' measurement IDs, as its files list them.
    """
    recon_rows, recon_cols = (r, r) if isinstance(r, int) else r
    pixel = fov_mm / recon_rows

    def xyz(x: float, y: float, z: float) -> dict:
        return {"x": x, "y": y, "z": z}

    def limits(maximum: int, center: int | None = None) -> dict:
        return {"minimum": 0, "maximum": maximum, "center": (maximum + 1) // 2 if center is None else center}

    fields = {
        "measurementInformation": {"patientPosition": "HFS", "protocolName": acquisition},
        "acquisitionSystemInformation": {
            "systemVendor": "mrirecon simulator",
            "receiverChannels": coils,
        },
        "experimentalConditions": {"H1resonanceFrequency_Hz": 127728000},
        "encoding": {
            "encodedSpace": {
                "matrixSize": xyz(height, width, 1),
                "fieldOfView_mm": xyz(height * pixel, width * pixel, slice_mm),
            },
            "reconSpace": {
                "matrixSize": xyz(recon_rows, recon_cols, 1),
                "fieldOfView_mm": xyz(fov_mm, recon_cols * pixel, slice_mm),
            },
            "encodingLimits": {
                "kspace_encoding_step_1": limits(width - 1) if acquired_columns is None
                else limits(acquired_columns - 1, width // 2),
                "kspace_encoding_step_2": limits(0),
                "slice": limits(slices - 1),
            },
            "trajectory": "cartesian",
        },
    }

    if repetitions:
        fields["repetitionInformation"] = {
            "RepetitionGroupID": repetitions[0],
            "OtherRepetitions": len(repetitions) - 1,
            "repetitionLabel": [{"repetitionID": i + 2, "MeasurementID": name} for i, name in enumerate(repetitions[1:])],
        }

    def build(parent: ElementTree.Element, children: dict) -> None:
        for tag, value in children.items():
            for item in value if isinstance(value, list) else [value]:  # a list: repeated elements
                element = ElementTree.SubElement(parent, tag)
                if isinstance(item, dict):
                    build(element, item)
                else:
                    element.text = f"{item:.3f}" if isinstance(item, float) else str(item)

    root = ElementTree.Element("ismrmrdHeader", xmlns=NAMESPACE)
    build(root, fields)
    ElementTree.indent(root)
    return ElementTree.tostring(root, encoding="utf-8", xml_declaration=True)
