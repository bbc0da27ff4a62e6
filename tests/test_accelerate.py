"""accelerate's fp16 path through the PPO update, with a CPU GradScaler at the boundary.

On a CPU accelerate runs fp16 without a scaler, so the test gives the Accelerator torch's CPU
GradScaler: the update must then step through it - gradients unscaled before the clip and the
step (so the update equals the unscaled one exactly: the scale is a power of two), and a step
with an inf gradient skipped and the scale backed off - as on a GPU.
"""

from contextlib import nullcontext

import numpy as np
import pytest
import torch
from accelerate import Accelerator
from test_speed import make_policy, tiny  # noqa: F401  (tests/ is on sys.path; the fixture)

from trainers.policy.encoding import PromptEncoder
from trainers.stackelberg.config import StackelbergPPOConfig
from trainers.stackelberg.rollout import RolloutWorker
from trainers.stackelberg.update import ppo_update

pytestmark = pytest.mark.usefixtures("one_thread")
SCALE = 2.0**12


class ScaledAccelerator(Accelerator):
    """fp16 as accelerate runs it on a GPU (its process-wide state stays as it is)."""

    mixed_precision = "fp16"

    def autocast(self, *args, **kwargs):
        return nullcontext()  # the model itself stays fp32


def scaled_accelerator() -> Accelerator:
    accelerator = ScaledAccelerator(cpu=True)
    accelerator.scaler = torch.amp.GradScaler("cpu", init_scale=SCALE)
    accelerator.native_amp = True  # backward scales, clip_grad_norm_ unscales
    return accelerator


def one_update(path, tokenizer, decisions, config, accelerator, poison=False):
    policy = make_policy(path)
    params = policy.role_parameters("leader")
    optimizer = torch.optim.AdamW(params, lr=1e-3)
    if accelerator is not None:
        optimizer = accelerator.prepare_optimizer(optimizer)
    if poison:  # an overflowing gradient in one adapter matrix
        params[0].register_hook(lambda grad: torch.full_like(grad, float("inf")))
    ppo_update(policy, "leader", decisions, optimizer, config,
               accelerator or Accelerator(cpu=True), np.random.default_rng(0),
               tokenizer.eos_token_id, tokenizer.pad_token_id)
    return [p.detach().clone() for p in params], optimizer


def test_fp16_scaled_updates_are_unscaled_and_overflows_skipped(tiny):  # noqa: F811
    path, tokenizer = tiny
    config = StackelbergPPOConfig(scenario={"cell": {"ue_counts": [2], "n_rbgs": 2,
                                                     "episode_ttis": 2}},
                                  n_envs=2, episodes_per_epoch=2, minibatch_size=64,
                                  leader_ppo_epochs=1)
    leader, _, _ = RolloutWorker(make_policy(path), tokenizer, PromptEncoder(tokenizer),
                                 config).collect(0)
    start = [p.detach().clone() for p in make_policy(path).role_parameters("leader")]
    plain, _ = one_update(path, tokenizer, leader, config, None)
    accelerator = scaled_accelerator()
    scaled, optimizer = one_update(path, tokenizer, leader, config, accelerator)
    assert any(not torch.equal(a, b) for a, b in zip(plain, start, strict=True))
    for a, b in zip(scaled, plain, strict=True):
        torch.testing.assert_close(a, b, atol=1e-7, rtol=1e-6)  # unscaled before clip and step
    assert not optimizer.step_was_skipped and accelerator.scaler.get_scale() == SCALE
    accelerator = scaled_accelerator()
    skipped, optimizer = one_update(path, tokenizer, leader, config, accelerator, poison=True)
    assert optimizer.step_was_skipped and accelerator.scaler.get_scale() < SCALE
    assert all(torch.equal(a, b) for a, b in zip(skipped, start, strict=True))
