r"""MasKD's stage 1 as a kind of run (``maskd_tokens``): receptive tokens learned on the frozen
teacher, executed by :func:`learn_tokens` under the run's lease instead of training a network.

The run (:func:`kdbench.config.stages.stage_run`) needs the teacher and reads its weights; its
method terms are ``(("maskd", {"num_tokens": T, "token_steps": S}),)``. With the teacher's
logits z^T (N, K, h, w) on the teacher's augmented training batches (its data recipe, the
run's seed), tokens E (T, K) start at N(0, 0.01²) (:func:`methods.maskd.initial_tokens`, from
a generator seeded by the run's seed) and minimise

    CE(up(Σ_t M_t ⊙ z^T), y) + dice(M),   M_t(p) = σ(⟨E_t, z^T(p)⟩)

(:func:`methods.maskd.token_loss`) by SGD (lr 0.1, momentum 0.9, weight decay 1e-3, poly 0.9
over S steps: :data:`methods.maskd.STAGE`'s recipe in ``spec.train``). The teacher's weights are
frozen and its batch norm is in train mode (it normalises with each batch's statistics), as the
authors train the tokens; everything else of the teacher is in eval mode.

Resumable: every ``checkpoint_every`` steps, and at a stop request, the tokens, the optimiser's
momentum and where the run is (step, loss history, step times) go to the run's checkpoint; the
batches are a function of (seed, step) (:mod:`kdbench.train.pipeline`) and the batch-norm
statistics a step uses are its batch's, so a resumed stage equals an unbroken one. At the end,
the tokens go to ``tokens.pt`` in the run's folder (:data:`methods.maskd.TOKENS_FILE`), the loss
curve to its history, and the record gains ``tokens`` (shape, final loss), ``cost`` (steps,
FLOPs, step time, memory, device-hours), ``timing`` and ``metrics``: the scores, on the
evaluation split under the suite's protocol, of what stage 1 trains, the teacher's logits
recombined by the tokens Σ_t M_t ⊙ z^T (:class:`Recombined`, the teacher in eval mode).
Under data parallelism each rank takes its shard of every batch (the teacher's batch norm then
uses the rank's statistics, as per-GPU batch norm does) and the ranks' token gradients are
averaged; rank 0 writes.
"""

from __future__ import annotations

import sys
import time
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from kdbench.config import RunSpec
from kdbench.cpus import configure_threads
from kdbench.distributed import agreed_stop, current, mean_over_ranks
from kdbench.errors import KdbenchError
from kdbench.models.outputs import Outputs
from kdbench.results.files import write_json_atomic
from kdbench.results.store import RunStore
from kdbench.train import checkpoint
from kdbench.train.build import build_datasets, load_teacher, pick_device, teacher_spec
from kdbench.train.context import Stopped, stop_requested
from kdbench.train.cost import counted, median_step_seconds
from kdbench.train.environment import environment, memory_source, peak_memory_mb, session
from kdbench.train.evaluation import describe as describe_protocol
from kdbench.train.evaluation import evaluate
from kdbench.train.fit import Progress
from kdbench.train.loop import derived_seed, lr_factor, to_device
from kdbench.train.pipeline import resolve_workers, train_loader
from kdbench.train.pipeline import start as start_workers
from kdbench.train.precision import NonFiniteError, autocast
from methods.maskd import TOKENS_FILE, initial_tokens, token_loss, token_masks

TOKEN_STREAM = 7
"""Stream of :func:`~kdbench.train.loop.derived_seed` for the initial tokens."""


@dataclass
class TokenState:
    """Where a stage run is; saved in its checkpoint beside the tokens and the optimiser."""

    step: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)
    window: list[dict[str, float]] = field(default_factory=list)
    """Losses of the steps since the last history entry."""
    step_times: list[float] = field(default_factory=list)
    elapsed: float = 0.0
    resumed_from: list[int] = field(default_factory=list)
    sessions: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class Stage:
    """One session of a stage run, built and restored."""

    spec: RunSpec
    teacher: nn.Module
    tokens: nn.Parameter
    optimizer: torch.optim.SGD
    state: TokenState
    device: torch.device
    checkpoint: Path
    started: float
    per_epoch: int
    """Steps per epoch of the training split (for progress lines)."""


class Recombined(nn.Module):
    """The teacher with its logits recombined by the tokens: z ↦ Σ_t M_t ⊙ z, (N, K, h, w)."""

    def __init__(self, teacher: nn.Module, tokens: Tensor) -> None:
        super().__init__()
        self.teacher, self.tokens = teacher, tokens

    def forward(self, rgb: Tensor, x: Tensor | None) -> Outputs:  # noqa: D102
        out = self.teacher(rgb, x)
        z = out.logits.float()
        return replace(out, logits=token_masks(z, self.tokens).sum(1, keepdim=True) * z)


def learn_tokens(spec: RunSpec, store: RunStore, progress: Progress | None) -> dict[str, Any]:
    """Execute the ``maskd_tokens`` run ``spec`` (module doc); return what its record gains."""
    started = time.perf_counter()
    cpu_threads = configure_threads()
    train_set, eval_set = build_datasets(spec)
    stage = _build(spec, store, train_set, started)
    cfg = spec.train
    batches = start_workers(train_loader(
        train_set, seed=spec.seed, train=cfg, start=stage.state.step, device=stage.device,
        normals=spec.dataset_options.get("modality") == "normals",
    ))
    stage.state.sessions.append({**session(), "step": stage.state.step})
    first = stage.state.step
    flops = 0
    while stage.state.step < cfg["steps"]:
        data = to_device(next(batches), stage.device, False)
        if stage.state.step == first:
            flops = _step_flops(stage, data)
        _step(stage, data)
        _after_step(stage, progress)
    result = _finish(stage, store, flops, cpu_threads)
    return {**result, **_scores(stage, eval_set)}


def _build(spec: RunSpec, store: RunStore, train_set: Any, started: float) -> Stage:
    """The frozen teacher (batch norm in train mode), the tokens and their optimiser, restored
    from the run's checkpoint if it has one."""
    device = pick_device(spec.device)
    ((_, options),) = spec.method_terms
    k = train_set.num_classes
    teacher = load_teacher(store, teacher_spec(spec, store), k, train_set.x_channels)
    for module in teacher.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            module.train()
    teacher.to(device)
    generator = torch.Generator().manual_seed(derived_seed(spec.seed, 0, TOKEN_STREAM))
    tokens = nn.Parameter(initial_tokens(options["num_tokens"], k, generator).to(device))
    cfg = spec.train
    optimizer = torch.optim.SGD(
        [tokens], lr=cfg["lr"], momentum=cfg["momentum"], weight_decay=cfg["weight_decay"]
    )
    path = store.checkpoint_path(spec.id)
    state = _restore(path, tokens, optimizer)
    per_epoch = max(1, len(train_set) // cfg["batch_size"])
    return Stage(spec, teacher, tokens, optimizer, state, device, path, started, per_epoch)


def _restore(path: Path, tokens: nn.Parameter, optimizer: torch.optim.SGD) -> TokenState:
    """The state saved at ``path`` loaded into ``tokens`` and ``optimizer``; fresh if none. A
    checkpoint that cannot be loaded is moved aside to ``checkpoint.pt.corrupt`` and the stage
    starts from step 0 with its initial tokens (as the trainer does:
    :func:`kdbench.train.state.restore`)."""
    if not path.exists():
        return TokenState()
    initial = tokens.detach().clone()
    try:
        saved = checkpoint.load(path)
        missing = [k for k in ("tokens", "optimizer", *(f.name for f in fields(TokenState)))
                   if k not in saved]
        if missing:
            raise KdbenchError(f"{path}: incomplete token checkpoint (no {', '.join(missing)})")
        state = TokenState(**{f.name: saved[f.name] for f in fields(TokenState)})
        with torch.no_grad():
            tokens.copy_(saved["tokens"])
        optimizer.load_state_dict(saved["optimizer"])
    except (KdbenchError, KeyError, RuntimeError, ValueError, TypeError) as exc:
        with torch.no_grad():
            tokens.copy_(initial)
        optimizer.state.clear()
        aside = path.with_name(f"{path.name}.corrupt")
        path.replace(aside)
        print(f"kdbench: {exc}; moved to {aside}, learning the tokens from step 0",
              file=sys.stderr)
        return TokenState()
    state.resumed_from = [*state.resumed_from, state.step]
    return state


def _loss(stage: Stage, data: dict[str, Tensor]) -> Tensor:
    """The token loss of one batch (teacher under the run's autocast, loss in float32)."""
    with torch.no_grad(), autocast(stage.device, stage.spec.train["amp"]):
        logits = stage.teacher(data["rgb"], data["x"]).logits
    return token_loss(logits.float(), stage.tokens, data["label"])


def _step(stage: Stage, data: dict[str, Tensor]) -> None:
    """One SGD step of the tokens at the poly learning rate of this step."""
    state, cfg = stage.state, stage.spec.train
    t0 = time.perf_counter()
    lr = cfg["lr"] * lr_factor(cfg["schedule"], state.step, cfg["steps"], cfg["warmup_steps"])
    for group in stage.optimizer.param_groups:
        group["lr"] = lr
    loss = _loss(stage, data)
    stage.optimizer.zero_grad(set_to_none=True)
    loss.backward()
    if stage.tokens.grad is not None:
        stage.tokens.grad = mean_over_ranks(stage.tokens.grad)
    stage.optimizer.step()
    state.window.append({"loss": loss.detach(), "lr": lr})  # read at the next log step
    state.step += 1
    state.step_times.append(time.perf_counter() - t0)


def _step_flops(stage: Stage, data: dict[str, Tensor]) -> int:
    """FLOPs of one step (teacher forward, token loss forward and backward), counted on a copy
    of the tokens so that nothing of the run changes."""
    tokens = stage.tokens.detach().clone().requires_grad_(True)
    with torch.random.fork_rng(devices=[]):
        return counted(lambda: _loss(replace(stage, tokens=tokens), data).backward())[1]


def _after_step(stage: Stage, progress: Progress | None) -> None:
    """Log every ``log_every`` steps, checkpoint every ``checkpoint_every`` and at a stop."""
    state, cfg = stage.state, stage.spec.train
    step, total = state.step, cfg["steps"]
    logs = step % cfg["log_every"] == 0 or step == total
    saves = step % cfg["checkpoint_every"] == 0 and step < total
    boundary = current().world == 1 or logs or saves
    reason = agreed_stop(stop_requested()) if step < total and boundary else None
    if logs or saves or reason:
        _read_window(state)
    if logs:
        loss = sum(w["loss"] for w in state.window) / len(state.window)
        state.history.append({"step": step, "lr": state.window[-1]["lr"], "loss": loss})
        state.window.clear()
        if progress is not None:
            eta = sum(state.step_times[-cfg["log_every"]:]) / cfg["log_every"] * (total - step)
            progress(stage.spec, {"step": step, "total": total, "loss": loss, "eta_s": eta,
                                  "epoch": step // stage.per_epoch + 1})
    if (saves or reason) and current().writer:
        _save(stage)
    if reason:
        raise Stopped(reason, step)


def _read_window(state: TokenState) -> None:
    """The window's losses, averaged over the ranks, read to the host (one read); a non-finite
    one fails the run. Every rank calls it at the same steps (a collective)."""
    pending = [i for i, w in enumerate(state.window) if isinstance(w["loss"], Tensor)]
    if not pending:
        return
    values = mean_over_ranks(torch.stack([state.window[i]["loss"] for i in pending])).tolist()
    for i, value in zip(pending, values, strict=True):
        if not torch.isfinite(torch.tensor(value)):
            step = state.step - len(state.window) + i + 1
            raise NonFiniteError(f"maskd_tokens: token loss is {value} at step {step}")
        state.window[i] = {**state.window[i], "loss": value}


def _save(stage: Stage) -> None:
    """The run's checkpoint: tokens, optimiser and state (elapsed time included)."""
    elapsed = stage.state.elapsed + time.perf_counter() - stage.started
    state = {**asdict(stage.state), "elapsed": elapsed}
    checkpoint.save(stage.checkpoint, {"tokens": stage.tokens.detach().cpu(),
                                       "optimizer": stage.optimizer.state_dict(), **state})


def _scores(stage: Stage, eval_set: Any) -> dict[str, Any]:
    """The recombined teacher's metrics on the evaluation split (module doc)."""
    spec = stage.spec
    protocol = {**spec.eval, "batch_size": spec.eval["batch_size"] or spec.train["batch_size"]}
    model = Recombined(stage.teacher, stage.tokens.detach())
    metrics = evaluate(
        model, eval_set, uses_x=True, protocol=protocol, device=stage.device,
        workers=resolve_workers(spec.train["workers"]),
        autocast=lambda: autocast(stage.device, spec.train["amp"]),
    )
    return {"metrics": metrics, "eval_protocol": describe_protocol(protocol)}


def _finish(
    stage: Stage, store: RunStore, flops: int, cpu_threads: dict[str, Any]
) -> dict[str, Any]:
    """Write the tokens and the loss curve (rank 0), drop the checkpoint, return the record's
    results."""
    state, spec, ranks = stage.state, stage.spec, current()
    _read_window(state)
    wall = state.elapsed + time.perf_counter() - stage.started
    memory = peak_memory_mb(stage.device)
    if ranks.writer:
        tokens = stage.tokens.detach().float().cpu()
        checkpoint.save(store.run_dir(spec.id) / TOKENS_FILE, {"tokens": tokens})
        write_json_atomic(store.history_path(spec.id), state.history)
        stage.checkpoint.unlink(missing_ok=True)
    steps = spec.train["steps"]
    return {
        "tokens": {"file": TOKENS_FILE, "shape": list(stage.tokens.shape),
                   "final_loss": state.history[-1]["loss"] if state.history else None},
        "resumed_from": state.resumed_from,
        "sessions": state.sessions,
        "timing": {"wall_time_s": wall, "step_time_s": sum(state.step_times) / max(1, steps),
                   "peak_memory_mb": memory, "peak_memory_source": memory_source(stage.device)},
        "cost": {
            "flops_per_step": {"teacher_forward_and_tokens": flops * ranks.world},
            "steps": steps,
            "flops": flops * ranks.world * steps,
            "step_s_median": median_step_seconds(state.step_times, state.resumed_from),
            "peak_memory_mb": memory,
            "device_hours": wall * ranks.world / 3600,
        },
        "env": {**environment(stage.device), "cpu_threads": cpu_threads,
                "processes": ranks.world, "backend": ranks.backend},
    }
