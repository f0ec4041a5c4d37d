"""Data parallelism of Af-DCD, BPKD and adv (both forms) with 2 gloo ranks on the CPU.

What each term couples across the batch (the methods' docstrings): Af-DCD nothing (per-image
terms; its random masks drawn for the global batch); BPKD nothing but its edge normaliser, the
global batch's boundary mass; adv's discriminator, through its batch norm, synchronised across
ranks (the run converts it, as CIRKD does), and its penalty's interpolation weights, drawn for
the global batch. So 2 ranks with 2 images each must reproduce 1 process with the 4 images:

- the mean over the ranks of each loss term is the single process's term;
- the gradient of a rank's loss with respect to its images' outputs is twice the single
  process's (each rank's loss is a mean over half the images; DistributedDataParallel averages
  the parameter gradients, so the objective is the mean over ranks of their losses);
- after the hook (Af-DCD's clipping of the ranks' averaged connector gradients; adv's D step),
  the method's state equals the single process's: clipped gradients, D's weights, its
  optimiser's buffers, its batch-norm statistics.

Everything is in float64, so "equal" is to 1e-9.
"""

from __future__ import annotations

import os

import pytest
import torch
import torch.multiprocessing as tmp_mp

from kdbench.distributed import convert_sync_batchnorm, process_group, sum_over_ranks
from kdbench.launch.spawn import free_port
from kdbench.method import Batch, Method, build_method
from kdbench.models.outputs import Outputs, TapInfo

N, K, H, W = 4, 5, 64, 128
STUDENT = TapInfo((8, 24), (4, 8), 16, K, 4)
TEACHER = TapInfo((12, 32), (4, 8), 24, K, 4)
CASES = {
    "afdcd": ("afdcd", {"clip": 1e-4}),  # a clip small enough to act
    "bpkd": ("bpkd", {}),
    "adv": ("adv", {}),
    "adv-official": ("adv", {"form": "official"}),
}


def full_batch() -> tuple[Outputs, Outputs, Batch]:
    """Student (leaves) and teacher outputs of N images in float64, labels with boundaries."""
    g = torch.Generator().manual_seed(0)

    def outputs(info: TapInfo) -> Outputs:
        def rand(c: int, r: int) -> torch.Tensor:
            return torch.randn(N, c, H // r, W // r, generator=g, dtype=torch.float64)

        stages = tuple(rand(c, r) for c, r in zip(info.stage_channels, info.stage_reductions,
                                                  strict=True))
        return Outputs(rand(K, 4), stages, rand(info.decoder_channels, 4))

    student, teacher = outputs(STUDENT), outputs(TEACHER)
    label = torch.randint(0, K, (N, H // 8, W // 8), generator=g)
    label = label.repeat_interleave(8, 1).repeat_interleave(8, 2)  # 8x8 blocks: real bands
    batch = Batch(torch.zeros(N, 3, H, W), torch.zeros(N, 1, H, W), label, step=3,
                  total_steps=10)
    return student, teacher, batch


def share(part: slice) -> tuple[Outputs, Outputs, Batch]:
    """The images ``part`` of :func:`full_batch`, the student's outputs as fresh leaves."""
    student, teacher, batch = full_batch()

    def cut(o: Outputs, leaf: bool) -> Outputs:
        def one(t: torch.Tensor) -> torch.Tensor:
            t = t[part].clone()
            return t.requires_grad_(True) if leaf else t

        return Outputs(one(o.logits), tuple(one(s) for s in o.stages), one(o.decoder))

    cut_batch = Batch(batch.rgb[part], batch.x[part], batch.label[part], batch.step,
                      batch.total_steps)
    return cut(student, True), cut(teacher, False), cut_batch


def one_step(case: str, part: slice, world: int) -> dict[str, torch.Tensor]:
    """Build the case's method, run its loss on the images ``part``, average its parameters'
    gradients over ``world`` ranks, call its hook; the losses, the student's output gradients
    and the method's state (gradients included) after the hook."""
    name, options = CASES[case]
    torch.manual_seed(1)
    method: Method = build_method([(name, options)], STUDENT, TEACHER)
    if world > 1:
        method = convert_sync_batchnorm(method)  # as the run does, before moving the method
    method = method.double()
    student, teacher, batch = share(part)
    torch.manual_seed(2)  # the step's generator, seeded alike on every rank
    losses = method(student, teacher, batch)
    sum(losses.values()).backward()
    for p in method.parameters():
        if p.grad is not None:
            p.grad = sum_over_ranks(p.grad) / world  # DistributedDataParallel's average
    method.before_optimizer_step()
    out = {f"loss/{k}": v.detach() for k, v in losses.items()}
    grads = {"grad/logits": student.logits.grad, "grad/stage": student.stages[-1].grad}
    out |= {k: v for k, v in grads.items() if v is not None}
    out |= {f"state/{k}": v for k, v in method.state_dict().items()}
    out |= {f"param_grad/{k}": p.grad for k, p in method.named_parameters() if p.grad is not None}
    return out


def _rank(rank: int, port: int, out: str) -> None:
    os.environ.update(RANK=str(rank), WORLD_SIZE="2", MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port))
    torch.set_num_threads(1)
    half = slice(rank * N // 2, (rank + 1) * N // 2)
    with process_group("gloo"):
        results = {case: one_step(case, half, 2) for case in CASES}
    torch.save(results, f"{out}/rank{rank}.pt")


@pytest.fixture(scope="module")
def ranks(tmp_path_factory: pytest.TempPathFactory) -> list[dict]:
    out = tmp_path_factory.mktemp("ranks")
    tmp_mp.spawn(_rank, args=(free_port(), str(out)), nprocs=2, join=True)
    return [torch.load(out / f"rank{r}.pt", weights_only=True) for r in (0, 1)]


def close(a: torch.Tensor, b: torch.Tensor, what: str) -> None:
    torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-12, msg=what)


@pytest.mark.slow
@pytest.mark.parametrize("case", list(CASES))
def test_two_ranks_with_half_batches_are_one_process(case: str, ranks: list[dict]) -> None:
    single = one_step(case, slice(None), 1)
    both = [r[case] for r in ranks]
    assert {k for k in single if k.startswith("loss/")} == {k for k in both[0] if
                                                           k.startswith("loss/")}
    for key, value in single.items():
        if key.startswith("loss/"):
            close((both[0][key] + both[1][key]) / 2, value, key)
        elif key.startswith("grad/"):
            close(torch.cat([both[0][key], both[1][key]]), 2 * value, key)
        else:  # the method's state after the hook, and its (clipped) parameter gradients
            for rank in both:
                close(rank[key], value, key)
    if case == "afdcd":  # the clip acted: the connectors' gradient norm is the clip
        norm = torch.cat([v.flatten() for k, v in single.items() if k.startswith("param_grad/")])
        assert norm.norm().item() == pytest.approx(1e-4, rel=1e-2)  # torch adds 1e-6 to the norm
    if case.startswith("adv"):  # D took its step
        assert int(single["state/terms.adv.optimizer.steps"]) == 1
