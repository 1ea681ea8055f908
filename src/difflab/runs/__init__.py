"""A run folder as data: what marks one, the overrides a resume may take from it, the checkpoint it resumes from.
Reads no Hydra config (the run module hands over plain values)."""
