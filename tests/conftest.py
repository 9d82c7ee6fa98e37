"""Shared test setup: tiny work, one thread (small models are slower on two), no GUI."""

import os

os.environ.setdefault("MPLBACKEND", "Agg")

import torch  # noqa: E402

torch.set_num_threads(1)
