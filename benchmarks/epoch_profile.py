"""Where a Stackelberg PPO epoch spends its time, next to what the machine can do.

:class:`EpochProfile` wraps a :class:`~trainers.stackelberg.trainer.StackelbergPPOTrainer`'s
policy, optimizers and accelerator (instance attributes and optimizer hooks only: the trainer
runs its own ``train_epoch``) and adds up, per epoch, the seconds of the rollout's prefill
(meta-prompt KV included), decode steps and grammar masks, and of the update's forward,
backward, optimizer steps, reference pass and mask replay. It counts the update's tokens (real
prompt + action tokens per decision and forward, the same for the shared-prefix and the plain
path) and FLOPs (:class:`FlopCount`: ``torch.utils.flop_counter``'s formulas, CPU attention
kernels added; a recompute under gradient checkpointing counts), and the update's peak memory:
the RSS high-water mark reset before each update (``/proc/self/clear_refs``) on CPU,
``max_memory_allocated`` on GPU.
:func:`matmul_peak` measures the machine's dense matmul FLOP/s in a dtype.
"""

from __future__ import annotations

import re
import time
from contextlib import contextmanager
from pathlib import Path

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import (
    flop_registry,
    sdpa_backward_flop_count,
    sdpa_flop_count,
    shape_wrapper,
)

ROLLOUT = ("prefill", "decode", "mask")  # sample_constrained's timings; "sample" is the rest
UPDATE = ("update_forward", "backward", "optimizer", "reference", "update_masks")
_CLEAR_REFS = Path("/proc/self/clear_refs")


def _flop_formulas() -> dict:
    """torch's FLOP formulas (matmuls, attention kernels) plus the CPU attention kernels."""
    aten = torch.ops.aten
    forward = lambda q, k, v, *a, **kw: sdpa_flop_count(q, k, v)  # noqa: E731
    backward = lambda g, q, k, v, *a, **kw: sdpa_backward_flop_count(g, q, k, v)  # noqa: E731
    return {**flop_registry,
            aten._scaled_dot_product_flash_attention_for_cpu: shape_wrapper(forward),
            aten._scaled_dot_product_flash_attention_for_cpu_backward: shape_wrapper(backward)}


class FlopCount(TorchDispatchMode):
    """FLOPs of the ops that run inside (forward, backward and recompute alike): the formulas
    of ``FlopCounterMode`` without its per-module hooks, which would slow what is timed."""

    def __init__(self, formulas: dict) -> None:
        super().__init__()
        self.formulas, self.total = formulas, 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        formula = self.formulas.get(func._overloadpacket)
        if formula is not None:
            self.total += formula(*args, **kwargs, out_val=out)
        return out


def rss_high_water_gib() -> float:
    """VmHWM of this process (peak RSS since start or the last :func:`reset_rss_peak`)."""
    status = Path("/proc/self/status").read_text()
    return int(re.search(r"VmHWM:\s+(\d+)", status).group(1)) / 2**20


def reset_rss_peak() -> bool:
    try:
        _CLEAR_REFS.write_text("5")
        return True
    except OSError:
        return False


def matmul_peak(dtype: torch.dtype, device: str, size: int = 2048, seconds: float = 1.0) -> float:
    """Best FLOP/s of (size x size) @ (size x size) matmuls in ``dtype`` over a few trials,
    per second of this process's CPU time on a CPU (a shared machine's load does not count;
    divide by the threads used), of wall-clock time on a GPU."""
    clock = time.perf_counter if device == "cuda" else time.process_time
    a = torch.randn(size, size, device=device).to(dtype)
    b = torch.randn(size, size, device=device).to(dtype)
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    a @ b
    sync()
    best = 0.0
    for _ in range(3):
        reps, start = 0, clock()
        while (elapsed := clock() - start) < seconds / 3:
            a @ b
            sync()
            reps += 1
        best = max(best, 2 * size**3 * reps / elapsed)
    return best


class EpochProfile:
    """Seconds, tokens, FLOPs and peak memory of the epochs a trainer runs (module docstring)."""

    def __init__(self, trainer, cuda: bool) -> None:
        self.cuda = cuda
        self._open: dict[str, float] = {}
        self.seconds: dict[str, float] = {}
        self.update_cpu_s = 0.0  # the update's process CPU time: robust to a shared CPU's load
        self.tokens = self.flops = 0
        self.update_peak_gib = 0.0
        self.process_peak_gib = 0.0  # CPU: kept across the resets, which lower ru_maxrss too
        self._formulas = _flop_formulas()
        policy = trainer.policy
        self._wrap(policy, "forward_actions", "update_forward", count=True)
        self._wrap(policy, "reference_logits", "reference")
        self._wrap(trainer.accelerator, "backward", "backward")
        self._wrap_generate(policy)
        self._wrap_split(policy.prefix_cache)
        for optimizer in trainer.optimizers.values():
            optimizer = getattr(optimizer, "optimizer", optimizer)  # accelerate's wrapper
            optimizer.register_step_pre_hook(lambda *a: self._start("optimizer"))
            optimizer.register_step_post_hook(lambda *a: self._stop("optimizer"))
        import trainers.stackelberg.update as update  # the update replays masks by name

        replay = update.replay_masks
        update.replay_masks = lambda *a: self._timed("update_masks", replay, *a)
        self._update = update.ppo_update
        import trainers.stackelberg.trainer as trainer_module

        trainer_module.ppo_update = self._profiled_update

    def reset(self) -> None:
        self.seconds.clear()
        self.update_cpu_s = 0.0
        self.tokens = self.flops = 0
        self.update_peak_gib = 0.0

    # ------------------------------------------------------------------------- timing
    def _sync(self) -> None:
        if self.cuda:
            torch.cuda.synchronize()

    def _start(self, key: str) -> None:
        self._sync()
        self._open[key] = time.perf_counter()

    def _stop(self, key: str) -> None:
        self._sync()
        self.seconds[key] = self.seconds.get(key, 0.0) + time.perf_counter() - self._open.pop(key)

    def _timed(self, key: str, fn, *args, **kwargs):
        self._start(key)
        try:
            return fn(*args, **kwargs)
        finally:
            self._stop(key)

    @contextmanager
    def _counting(self):
        with FlopCount(self._formulas) as counter:
            yield
        self.flops += counter.total

    def _wrap(self, owner, name: str, key: str, count: bool = False) -> None:
        original = getattr(owner, name)

        def wrapper(*args, **kwargs):
            if count:  # forward_actions(role, ids, mask, tokens, lengths, ...)
                self.tokens += int(args[2].sum()) + int(args[4].sum())
            with self._counting():
                return self._timed(key, original, *args, **kwargs)

        setattr(owner, name, wrapper)

    def _wrap_generate(self, policy) -> None:
        original = policy.generate_actions

        def wrapper(*args, **kwargs):
            return original(*args, timings=self.seconds, **kwargs)

        policy.generate_actions = wrapper

    def _wrap_split(self, cache) -> None:
        original = cache.split
        cache.split = lambda *a, **k: self._timed("prefill", original, *a, **k)

    def _profiled_update(self, *args, **kwargs):
        if self.cuda:
            torch.cuda.reset_peak_memory_stats()
        self.process_peak_gib = max(self.process_peak_gib, rss_high_water_gib())
        reset_rss_peak()
        cpu = time.process_time()
        try:
            return self._timed("update", self._update, *args, **kwargs)
        finally:
            self.update_cpu_s += time.process_time() - cpu
            rss = rss_high_water_gib()
            peak = torch.cuda.max_memory_allocated() / 2**30 if self.cuda else rss
            self.update_peak_gib = max(self.update_peak_gib, peak)
            self.process_peak_gib = max(self.process_peak_gib, rss)

    def record(self, decisions: float, matmul_flops: float) -> dict[str, float]:
        """This epoch's figures (seconds per phase, tokens/s, FLOP/s and its share of peak)."""
        out = {f"{k}_s": self.seconds.get(k, 0.0) for k in (*ROLLOUT, *UPDATE, "update")}
        update = max(out["update_s"], 1e-9)
        out["update_ms_per_decision"] = 1e3 * out["update_s"] / max(decisions, 1)
        out["update_tokens_per_s"] = self.tokens / update
        out["update_gflops"] = self.flops / 1e9
        busy = update if self.cuda else max(self.update_cpu_s, 1e-9)  # as in matmul_peak
        out["update_cpu_s"] = self.update_cpu_s
        out["update_cpu_ms_per_decision"] = 1e3 * self.update_cpu_s / max(decisions, 1)
        out["update_gflop_per_s"] = self.flops / busy / 1e9
        out["matmul_gflop_per_s"] = matmul_flops / 1e9
        out["peak_share"] = self.flops / busy / matmul_flops
        out["update_peak_gib"] = self.update_peak_gib
        return out
