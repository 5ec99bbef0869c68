"""Meta-training under torchrun (2 CPU processes, gloo, DDP) matches 1 process.

Each global mini-batch is sharded ``idx[rank::2]`` and each rank's summed loss is scaled by
``world / global_count``, so DDP's averaged gradient is the single-process gradient; the
runs differ only by float32 summation order. Tolerance: 1e-4 relative / 1e-6 absolute on
every metric and every epoch's training loss after 3 epochs. One torchrun launch trains
both a graph-level (accuracy) and an edge-level (pruning) task through the CLI entry point.
"""

import json
import os
import subprocess
import sys

import pytest

from wskan_ext.tasks import TrainConfig, fit
from wskan_ext.tasks.testing import tiny_zoo

ARGS = ["--model", "wskan", "--epochs", "3", "--batch-size", "6", "--patience", "5", "--seed", "7",
        "--set", "hidden=16", "--set", "layers=2", "--set", "dropout=0", "--quiet"]
# dropout off: each rank draws its own dropout masks, so only a dropout-free run can match one process
SCRIPT = """
import sys
import torch.distributed as dist
from wskan_ext.cli import main
dist.init_process_group("gloo")  # one group for both runs (fit reuses an existing group)
zoo, out, args = sys.argv[1], sys.argv[2], sys.argv[3:]
for task in ("accuracy", "pruning"):
    rc = main(["train", "--zoo", zoo, "--task", task, "--out", out + "/" + task] + args)
    assert rc == 0, rc
dist.destroy_process_group()
"""


@pytest.fixture(scope="module")
def zoo(tmp_path_factory):
    return tiny_zoo(str(tmp_path_factory.mktemp("zoos")), "digits")


def _single(zoo, task, seed=7):
    return fit(zoo, task, "wskan", TrainConfig(epochs=3, batch_size=6, patience=5, seed=seed, progress=False,
                                               model={"hidden": 16, "layers": 2, "dropout": 0.0}))


@pytest.mark.slow
def test_ddp_two_processes_match_one(zoo, tmp_path):
    script = tmp_path / "run.py"
    script.write_text(SCRIPT)
    env = dict(os.environ, OMP_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", str(script),
           zoo, str(tmp_path / "ddp")] + ARGS
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    for task in ("accuracy", "pruning"):
        ddp = json.load(open(tmp_path / "ddp" / task / "metrics.json"))
        single = _single(zoo, task)
        assert (ddp["world_size"], single["world_size"]) == (2, 1)
        assert ddp["best_epoch"] == single["best_epoch"]
        for a, b in zip(ddp["history"], single["history"]):
            assert a["train_loss"] == pytest.approx(b["train_loss"], rel=1e-4, abs=1e-6)
        for split in ("train", "val", "test"):
            for k, v in single["metrics"][split].items():
                assert ddp["metrics"][split][k] == pytest.approx(v, rel=1e-4, abs=1e-6), (task, split, k)
        # negative twin: another seed changes the trajectory, so the match is not vacuous
        other = _single(zoo, task, seed=8)
        assert other["history"][0]["train_loss"] != pytest.approx(single["history"][0]["train_loss"], rel=1e-3)
