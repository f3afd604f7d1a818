"""Suite-wide settings.

One torch thread: on the 2-core CI machine two OpenMP threads made small scatter/gather
ops up to 100x slower under load (measured while writing the method matrix), and the
tests assert values, never timings.
"""

import os

import matplotlib
import torch

matplotlib.use("Agg")
torch.set_num_threads(1)
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
