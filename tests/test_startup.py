"""Start-up: the commands that need no training stack do not import Lightning."""

from __future__ import annotations

import subprocess
import sys

import pytest

from cli_helpers import REPO

PROBE = """
import sys
from mrirecon.commands.main import main
try:
    main({argv!r})
except SystemExit:
    pass
print("LIGHTNING_IMPORTED" if any(m.split(".")[0] in ("pytorch_lightning", "lightning_fabric") for m in sys.modules) else "CLEAN")
"""


@pytest.mark.parametrize(
    "argv",
    [["--help"], ["--version"], ["data", "--help"], ["baseline", "--help"], ["report", "--help"],
     ["reconstruct", "--help"], ["export", "--help"], ["data", "check", "DATA"]],
    ids=lambda a: " ".join(a),
)
def test_no_lightning_import(argv, tiny_singlecoil):
    argv = [str(tiny_singlecoil) if a == "DATA" else a for a in argv]
    result = subprocess.run([sys.executable, "-c", PROBE.format(argv=argv)], capture_output=True, text=True,
                            env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin", "MRIRECON_CACHE_DIR": str(tiny_singlecoil / ".." / "cache")})
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip().splitlines()[-1] == "CLEAN", result.stdout[-2000:]


def test_a_closed_pipe_ends_the_output_quietly(tiny_singlecoil):
    """`mrirecon --help | head -1`: the reader goes away; no traceback, exit 1."""
    command = [sys.executable, "-c", "from mrirecon.commands.main import main; main(['--help'])"]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"})
    process.stdout.close()  # before it writes: every write meets a closed pipe
    _, err = process.communicate(timeout=120)
    assert process.returncode == 1, err.decode()[-2000:]
    assert b"Traceback" not in err and b"BrokenPipe" not in err, err.decode()[-2000:]
