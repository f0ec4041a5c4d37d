"""Data parallelism on the CPU (gloo): a run trained by 2 processes is the run of 1 process.

Each test starts real processes: ``torch.multiprocessing`` ranks for the batch-norm layer, and
``kdbench run`` with ``launch.tasks_per_node: 2`` for whole runs.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as tmp_mp
import yaml
from timm.layers import BatchNormAct2d
from torch import nn

from kdbench.config import load_suite
from kdbench.distributed import SyncBatchNorm, convert_sync_batchnorm, process_group, shard
from kdbench.errors import KdbenchError
from kdbench.launch.spawn import free_port
from kdbench.results.store import RunStore
from kdbench.train.run import train_run
from tests.suites import TRAIN, tiny

BATCH = torch.randn(6, 3, 5, 7, generator=torch.Generator().manual_seed(0)) * 3 + 1
UPSTREAM = torch.randn(6, 3, 5, 7, generator=torch.Generator().manual_seed(1))


def norm_layer() -> nn.BatchNorm2d:
    torch.manual_seed(2)
    bn = nn.BatchNorm2d(3)
    nn.init.uniform_(bn.weight, 0.5, 1.5)
    nn.init.uniform_(bn.bias, -0.5, 0.5)
    return bn


def _rank(rank: int, port: int, out: str) -> None:
    os.environ.update(RANK=str(rank), WORLD_SIZE="2", MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port))
    torch.set_num_threads(1)
    with process_group("gloo"):
        bn = SyncBatchNorm(norm_layer()).train()
        x = shard(list(BATCH))  # this rank's 3 images
        x = torch.stack(x).requires_grad_(True)
        y = bn(x)
        # DistributedDataParallel averages the ranks' parameter gradients: do it by hand here
        (y * torch.stack(shard(list(UPSTREAM)))).sum().mul(2).backward()
        grads = torch.stack([bn.weight.grad, bn.bias.grad])
        torch.distributed.all_reduce(grads)
        torch.save(
            {"y": y.detach(), "x_grad": x.grad, "param_grads": grads / 2,
             "running": (bn.running_mean, bn.running_var)},
            f"{out}/rank{rank}.pt",
        )


@pytest.mark.slow
def test_sync_batchnorm_over_two_ranks_is_batchnorm_over_the_global_batch(tmp_path: Path) -> None:
    tmp_mp.spawn(_rank, args=(free_port(), str(tmp_path)), nprocs=2, join=True)
    bn = norm_layer().train()
    x = BATCH.clone().requires_grad_(True)
    y = bn(x)
    (y * UPSTREAM).sum().backward()
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in (0, 1)]
    torch.testing.assert_close(torch.cat([r["y"] for r in ranks]), y.detach())
    # each rank's loss was 2x its half: the objective is the mean over ranks of the losses
    torch.testing.assert_close(torch.cat([r["x_grad"] for r in ranks]), x.grad * 2)
    for r in ranks:
        torch.testing.assert_close(r["param_grads"], torch.stack([bn.weight.grad, bn.bias.grad]))
        torch.testing.assert_close(r["running"][0], bn.running_mean)
        torch.testing.assert_close(r["running"][1], bn.running_var)


def _method_state(rank: int, port: int, out: str) -> None:
    """Rank ``rank`` of 2 (or the single process when ``rank`` is -1) runs CIRKD on its half
    of a 2-image batch and initialises ARFD's anchors from its own data."""
    from methods.arfd import KernelRegression
    from tests.methods.fakes import batch
    from tests.methods.test_cirkd import SMALL, STUDENT, TEACHER, labels, outputs

    def state() -> dict:
        torch.manual_seed(0)
        cirkd = CIRKD(STUDENT, TEACHER, stride=4, **SMALL).double()
        s, t, label = outputs(STUDENT, 20), outputs(TEACHER, 30), labels(13)
        if rank >= 0:  # this rank's image of the two
            s, t = (Outputs(*(shard_of(f) for f in (o.logits, o.stages, o.decoder)))
                    for o in (s, t))
            label = label[rank : rank + 1]
        torch.manual_seed(5)
        cirkd(s, t, batch(label))
        arfd = KernelRegression(3, 4, anchors=5, kernel="laplace")
        arfd.initialise(torch.randn(7, 3) + max(rank, 0), torch.randn(7, 4))
        return {"cirkd": cirkd.memories[0].state_dict(), "arfd": arfd.state_dict()}

    def shard_of(f):  # noqa: ANN001, ANN202 - a tensor or a tuple of them
        return tuple(shard_of(x) for x in f) if isinstance(f, tuple) else f[rank : rank + 1]

    from kdbench.models.outputs import Outputs
    from methods.cirkd import CIRKD

    if rank < 0:
        torch.save(state(), f"{out}/single.pt")
        return
    os.environ.update(RANK=str(rank), WORLD_SIZE="2", MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port))
    torch.set_num_threads(1)
    with process_group("gloo"):
        torch.save(state(), f"{out}/rank{rank}.pt")


@pytest.mark.slow
def test_state_a_method_keeps_is_the_same_on_every_rank(tmp_path: Path) -> None:
    """CIRKD's memory queues, written from 2 ranks' halves of a batch, equal those the single
    process writes from the whole batch; ARFD's anchors, drawn from different data on each
    rank, are rank 0's (here: the single process's) on both."""
    tmp_mp.spawn(_method_state, args=(free_port(), str(tmp_path)), nprocs=2, join=True)
    _method_state(-1, 0, str(tmp_path))
    single, *ranks = (torch.load(tmp_path / f"{name}.pt", weights_only=True)
                      for name in ("single", "rank0", "rank1"))
    for rank in ranks:
        for key, value in single["cirkd"].items():
            torch.testing.assert_close(rank["cirkd"][key], value, rtol=0, atol=0)
        # rank 1 drew from data shifted by 1: alone, its keys would be the single ones + 1
        for key, value in single["arfd"].items():
            torch.testing.assert_close(rank["arfd"][key], value, rtol=0, atol=0)


def test_conversion_keeps_the_weights_names_and_timms_activation() -> None:
    torch.manual_seed(0)
    norm_act = BatchNormAct2d(4, act_layer=nn.ReLU)
    model = nn.Sequential(nn.Conv2d(3, 4, 3), norm_act, nn.BatchNorm2d(4))
    model.train()(torch.randn(2, 3, 6, 6))  # running statistics that differ from the defaults
    before = {k: v.clone() for k, v in model.state_dict().items()}
    x = torch.randn(2, 3, 6, 6)
    expected = model.eval()(x)
    converted = convert_sync_batchnorm(model)
    assert isinstance(converted[1], SyncBatchNorm) and isinstance(converted[1].act, nn.ReLU)
    assert isinstance(converted[2], SyncBatchNorm) and isinstance(converted[2].act, nn.Identity)
    assert converted.state_dict().keys() == before.keys()
    for key, value in converted.state_dict().items():
        torch.testing.assert_close(value, before[key])
    torch.testing.assert_close(converted.eval()(x), expected)  # one process: plain batch norm


TINY = tiny(name="ddp", students=["mobilenetv3_small_050"],  # timm's norm-act layers
            methods=["kd"], train={**TRAIN, "log_every": 1, "workers": 0})


def first_loss(results: Path, run_id: str) -> float:
    return json.loads(RunStore(results).history_path(run_id).read_text())[0]["loss"]


@pytest.mark.slow
def test_two_gloo_processes_train_the_run_of_one(tmp_path: Path) -> None:
    """``kdbench run`` with ``launch.tasks_per_node: 2``: 2 local ranks on the CPU (gloo) train
    the teacher and the kd student; against the same suite in one process, the first step's
    loss agrees within 1e-5 and the final mIoU within 0.5."""
    suite_path = tmp_path / "ddp.yaml"
    suite_path.write_text(yaml.safe_dump({**TINY, "launch": {"tasks_per_node": 2}}))
    two = tmp_path / "two"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    out = subprocess.run(
        [sys.executable, "-m", "kdbench.cli", "run", str(suite_path), "--results", str(two)],
        capture_output=True, text=True, timeout=900, env=env,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    suite = load_suite(suite_path)
    one = tmp_path / "one"
    torch.set_num_threads(1)
    for spec in suite.runs:
        assert train_run(spec, one)["status"] == "complete"
    for spec in suite.runs:
        single, double = RunStore(one).load(spec.id), RunStore(two).load(spec.id)
        assert double["status"] == "complete" and double["env"]["processes"] == 2
        assert double["env"]["backend"] == "gloo" and single["env"]["processes"] == 1
        assert len(double["sessions"]) == 1  # rank 0 alone wrote the record
        assert abs(first_loss(one, spec.id) - first_loss(two, spec.id)) < 1e-5
        assert abs(single["metrics"]["miou"] - double["metrics"]["miou"]) < 0.5
        # FLOPs of 2 half batches: the step's, for a loss linear in the batch
        assert double["cost"]["flops_per_step"]["student"] == (
            single["cost"]["flops_per_step"]["student"]
        )
        assert double["cost"]["device_hours"] > 0


@pytest.mark.slow
def test_a_batch_that_does_not_divide_among_the_processes_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "odd.yaml"
    path.write_text(yaml.safe_dump({**TINY, "launch": {"tasks_per_node": 3}}))
    with pytest.raises(KdbenchError, match=r"train\.batch_size: 4 does not divide among the 3 "):
        load_suite(path)
    path.write_text(yaml.safe_dump({**TINY, "launch": {"jobs": 2, "tasks_per_node": 2}}))
    out = subprocess.run(
        [sys.executable, "-m", "kdbench.cli", "run", str(path), "--results", str(tmp_path)],
        capture_output=True, text=True, timeout=120,
    )
    assert out.returncode == 2 and "expected --jobs 1" in out.stderr.strip().splitlines()[-1]


@pytest.mark.slow
def test_ctrl_c_stops_every_rank_at_one_step_and_the_rerun_ends_as_an_unbroken_run(
    tmp_path: Path,
) -> None:
    """Ctrl-C to ``kdbench run`` of a 2-rank teacher: rank 0 writes the checkpoint at the step
    all ranks stop at; running again resumes it with 2 ranks and ends with the metrics of a
    2-rank run that was never stopped."""
    data = {**TINY, "students": ["test_resnet"], "methods": ["none"],
            "launch": {"tasks_per_node": 2},
            "train": {**TINY["train"], "steps": 100, "checkpoint_every": 1000}}
    suite_path = tmp_path / "ddp.yaml"
    suite_path.write_text(yaml.safe_dump(data))
    (teacher,) = load_suite(suite_path).teachers
    env = {**os.environ, "OMP_NUM_THREADS": "1"}

    def run(results: Path, **popen: object) -> subprocess.Popen:
        cmd = [sys.executable, "-m", "kdbench.cli", "run", str(suite_path), "--results",
               str(results)]
        return subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                text=True, **popen)

    stopped = tmp_path / "stopped"
    proc = run(stopped, start_new_session=True)
    seen = ""
    while "step 3/100" not in seen and proc.poll() is None:
        seen += proc.stderr.readline()
    os.killpg(proc.pid, signal.SIGINT)  # what Ctrl-C in a terminal does
    _, rest = proc.communicate(timeout=300)
    assert proc.returncode == 130, seen + rest
    record = RunStore(stopped).load(teacher.id)
    assert record["status"] == "running" and "stopped at step" in record["stopped"]
    assert RunStore(stopped).checkpoint_path(teacher.id).exists()

    unbroken = tmp_path / "unbroken"
    for results in (stopped, unbroken):
        proc = run(results)
        _, err = proc.communicate(timeout=600)
        assert proc.returncode == 0, err[-3000:]
    resumed, reference = RunStore(stopped).load(teacher.id), RunStore(unbroken).load(teacher.id)
    assert resumed["resumed_from"] and resumed["resumed_from"][0] >= 3
    assert resumed["metrics"] == reference["metrics"]
    history = [json.loads(RunStore(r).history_path(teacher.id).read_text())
               for r in (stopped, unbroken)]
    assert history[0] == history[1]
