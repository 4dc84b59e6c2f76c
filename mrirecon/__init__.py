"""mrirecon: train and evaluate deep networks for accelerated MRI reconstruction.

The package reads as the data flow, each layer importing only the layers before it:

* :mod:`mrirecon.core`: Lightning-free maths and I/O helpers (masks, the k-space chain,
  fastMRI-exact metrics, atomic writes, text tables);
* :mod:`mrirecon.data`: fastMRI-format files in, k-space batches out (and the simulator);
* :mod:`mrirecon.models`: networks (U-Net, E2E-VarNet);
* :mod:`mrirecon.methods`: every reconstruction method maps a k-space batch to images;
* :mod:`mrirecon.evaluation`: results tables, submission files, scoring folders;
* :mod:`mrirecon.lightning`: DataModule, LightningModule, callbacks, LightningCLI;
* :mod:`mrirecon.commands`: the ``mrirecon`` command and its subcommands.
"""

__version__ = "0.2.0"
