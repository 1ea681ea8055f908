"""Experiment tracking with W&B, reached only through Lightning's WandbLogger: offline unless a login is
configured, one W&B run id per run folder, readable run names, runs closed at job end. Reads no Hydra config."""
