"""The Lightning part: DataModule, LightningModule, callbacks, checkpoints and LightningCLI."""
