"""Scoring generated images: what a checkpoint generates to be scored, the features and metrics of a set
against its reference, and the conditioning accuracy of class-conditional samples. Takes plain values (evaluate.py
reads the config)."""
