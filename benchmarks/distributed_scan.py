"""Wall time of a sensitivity scan on the lab model, one process vs several (data parallel).

    python benchmarks/distributed_scan.py                                   # one process
    torchrun --nproc-per-node 2 benchmarks/distributed_scan.py              # two ranks

Each rank uses one torch thread. Prints the scan's wall time on rank 0.
"""

import time

import numpy as np
import torch

torch.set_num_threads(1)

from stv import distributed  # noqa: E402
from stv.data import digit_examples  # noqa: E402
from stv.experiments.lab import load_lab  # noqa: E402
from stv.methods.fit import scan_pairs  # noqa: E402
from stv.methods.scan import sensitivity_scan  # noqa: E402
from stv.tasks import DIGITS  # noqa: E402

lmm = load_lab()
pairs = scan_pairs(digit_examples("parity_AB"), DIGITS, 800, 16, np.random.default_rng(0))
dist = distributed.current()
dist.barrier()
start = time.perf_counter()
scan = sensitivity_scan(lmm, pairs, batch_size=25, progress=False)
dist.barrier()
if dist.is_main:
    print(
        f"world {dist.world}: scan of {len(pairs)} pairs x 16 shots in {time.perf_counter() - start:.2f} s; "
        f"top-4 {scan.top_k(4)}"
    )
