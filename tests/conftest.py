"""Shared fixtures: tiny simulated datasets (seconds to make) and a private metadata cache."""

import pytest

from mrirecon.data.simulate import Preset, simulate_dataset

TINY = Preset(recon_size=32, volumes=(3, 2, 2), slices=4, coils=(4, 4), snr=(30.0, 30.0))


@pytest.fixture(autouse=True)
def _private_cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("MRIRECON_CACHE_DIR", str(tmp_path_factory.getbasetemp() / "cache"))


@pytest.fixture(scope="session")
def tiny_singlecoil(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny") / "data"
    simulate_dataset(root, preset=TINY, challenge="singlecoil", seed=1, progress=False)
    return root


@pytest.fixture(scope="session")
def tiny_multicoil(tmp_path_factory):
    root = tmp_path_factory.mktemp("tinymc") / "data"
    simulate_dataset(root, preset=TINY, challenge="multicoil", seed=1, progress=False)
    return root


@pytest.fixture(scope="module")
def one_thread():
    """torch on one thread for a test module (``pytestmark = pytest.mark.usefixtures("one_thread")``)."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
