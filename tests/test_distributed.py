"""Two real gloo processes (torchrun) must reproduce the single-process run."""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

WORKER = str(Path(__file__).with_name("dist_worker.py"))


def _free_port() -> int:
    """A port nothing listens on now, so parallel test runs do not collide."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _run(cmd, out):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(Path(__file__).parents[1])}
    done = subprocess.run(cmd, env=env, timeout=240, capture_output=True, text=True)
    assert done.returncode == 0, f"{cmd[-3:]} exited {done.returncode}:\n{done.stderr[-3000:]}"  # say why
    return json.loads((out / "result.json").read_text())


@pytest.mark.slow
def test_two_process_scan_bank_and_eval_equal_one_process(tmp_path, family_dir):
    model = family_dir("llava")
    single = _run([sys.executable, WORKER, model, str(tmp_path / "one")], tmp_path / "one")
    torchrun = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc-per-node",
        "2",
        "--master-port",
        str(_free_port()),
    ]
    double = _run([*torchrun, WORKER, model, str(tmp_path / "two")], tmp_path / "two")
    assert single["world"] == 1 and double["world"] == 2
    np.testing.assert_allclose(double["sensitivity"], single["sensitivity"], rtol=1e-5, atol=1e-6)
    assert double["top"] == single["top"]
    np.testing.assert_allclose(double["bank"], single["bank"], rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(double["means"], single["means"], rtol=1e-5, atol=1e-6)
    assert double["first_token"] == single["first_token"]
    assert double["predictions"] == single["predictions"] and len(single["predictions"]) == 10
    assert double["accuracy"] == single["accuracy"]
    assert not list((tmp_path / "two" / "eval").glob("predictions.rank*"))  # merged by rank 0
