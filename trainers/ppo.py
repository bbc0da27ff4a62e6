"""The PPO maths of design §6, as plain functions to read next to eqs. 8-10 (and 12-13).

The trainer calls these; it does not re-derive them.

- :func:`gae` — eq. 8 advantages and eq. 9 value targets over TTIs: per env for the leader,
  per UE slot for the followers (inactive TTIs skipped, churn restarts a trajectory).
- :func:`masked_logits`, :func:`masked_log_softmax`, :func:`token_logprobs` — eq. 13 logit
  masking and the eq. 12 token log-probs; the PAG sampler (:mod:`trainers.pag.sampler`) draws
  from the same maths, so sampling and PPO score a token alike.
- :func:`masked_entropy` — entropy of the PAG-masked distribution (eq. 13).
- :func:`kl_to_reference` — k3 estimate of KL(pi || pi_ref) summed over an action's tokens.
- :func:`normalize_advantages`, :func:`ppo_losses` — eq. 10 clipped surrogate on action-level
  ratios (eq. 12: an action's log-prob is the sum of its token log-probs), clipped value loss,
  entropy bonus, KL penalty, and the diagnostics (``approx_kl``, ``clipfrac``, ratios).
- :func:`explained_variance`, :func:`cosine_with_warmup`, :func:`lr_scheduler` (transformers'
  ``get_scheduler``).
"""

from __future__ import annotations

import math
import os

import torch


# ------------------------------------------------------------------------------ eqs. 8-9
@torch.no_grad()
def gae(rewards: torch.Tensor, values: torch.Tensor, *, gamma: float, lam: float,
        active: torch.Tensor | None = None, starts: torch.Tensor | None = None,
        last_value: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Eq. 8 advantages and eq. 9 returns ``(advantages, returns)``, both (N, T).

    ``rewards``, ``values``: (N, T), one row per trajectory owner — an env for the leader
    (T = the episode's TTIs), a UE slot of an env for the followers (N = B * I_max; any leading
    shape (..., T) works). One reversed loop over t:

        delta_t = r_t + gamma * V_next - V_t                      (TD error)
        A_t     = delta_t + gamma * lam * A_next                  (eq. 8)
        R_t     = A_t + V_t                                       (eq. 9, the value target)

    Follower conventions:

    - ``active`` (N, T) bool (default all True): a slot's trajectory is the sequence of its
      active TTIs. Inactive steps are skipped: each active step is linked to the NEXT ACTIVE
      step of its row, with one factor gamma per link (a follower's clock counts its own
      decisions, not wall TTIs). Inactive steps get advantage 0 and return 0; their rewards
      and values are ignored.
    - ``starts`` (N, T) bool (default all False): True at t cuts the row before t — no step
      before t is linked to any step at or after t. Mark the first TTI of a UE that (re)joins
      a slot: the previous occupant's last active step then bootstraps with 0 (it left the
      cell; nothing follows it). A True on an inactive step cuts just the same.
    - ``last_value`` (N,) (default 0): V of the state after TTI T-1, bootstrapping the last
      trajectory of each row. Episodes are finite (T TTIs), so the default 0 treats T as the
      end; pass the value head's estimate to bootstrap a truncated episode, and 0 for a slot
      whose UE left before T (its last trajectory has ended).

    The leader is the plain case: ``gae(r, v, gamma=, lam=)`` with all steps active.
    """
    if rewards.shape != values.shape:
        raise ValueError(f"rewards.shape = {tuple(rewards.shape)} is invalid; allowed: "
                         f"values.shape = {tuple(values.shape)}")
    values = values.to(rewards.dtype)
    lead = rewards.shape[:-1]
    active = torch.ones_like(rewards, dtype=torch.bool) if active is None else active.bool()
    starts = torch.zeros_like(rewards, dtype=torch.bool) if starts is None else starts.bool()
    next_value = (torch.zeros(lead, dtype=rewards.dtype, device=rewards.device)
                  if last_value is None else last_value.to(rewards.dtype).expand(lead))  # (N,)
    next_advantage = torch.zeros_like(next_value)  # (N,)
    advantages = torch.zeros_like(rewards)  # (N, T)
    for t in reversed(range(rewards.shape[-1])):
        delta = rewards[..., t] + gamma * next_value - values[..., t]
        advantage = delta + gamma * lam * next_advantage  # eq. 8
        on = active[..., t]
        advantages[..., t] = torch.where(on, advantage, 0.0)
        next_value = torch.where(on, values[..., t], next_value)  # inactive: carry across
        next_advantage = torch.where(on, advantage, next_advantage)
        cut = starts[..., t]
        next_value = next_value.masked_fill(cut, 0.0)  # the step before a start is terminal
        next_advantage = next_advantage.masked_fill(cut, 0.0)
    returns = torch.where(active, advantages + values, 0.0)  # eq. 9
    return advantages, returns


# -------------------------------------------------------------------------- eqs. 12-13
def masked_logits(logits: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Eq. 13: -inf outside V^- (``mask`` False), the logits inside."""
    return logits.masked_fill(~mask, float("-inf"))


def masked_log_softmax(logits: torch.Tensor, mask: torch.Tensor,
                       temperature: float) -> torch.Tensor:
    """log pi(. | s) of the masked distribution at ``temperature``, in fp32 (..., V)."""
    return torch.log_softmax(masked_logits(logits.float() / temperature, mask), dim=-1)


def token_logprobs(logits: torch.Tensor, mask: torch.Tensor, tokens: torch.Tensor,
                   temperature: float) -> torch.Tensor:
    """Eq. 12 terms: masked log-probs (...,) of ``tokens`` (...,) given logits/mask (..., V)."""
    logp = masked_log_softmax(logits, mask, temperature)
    return logp.gather(-1, tokens.unsqueeze(-1)).squeeze(-1)


# --------------------------------------------------------------------- eq. 13, KL penalty
def masked_entropy(logits: torch.Tensor, mask: torch.Tensor,
                   temperature: float = 1.0) -> torch.Tensor:
    """Entropy (...,) of the masked distribution softmax(eq. 13 logits / temperature), fp32.

    ``logits`` (..., V), ``mask`` (..., V) bool with at least one True per row. Disallowed
    tokens have p = 0 and contribute exactly 0 (their log-prob is zeroed before the product,
    so no 0 * -inf); a single allowed token (e.g. the {EOS} padding past an action's end)
    gives exactly 0. Summing over an action's token steps gives its entropy bonus term.
    """
    logp = masked_log_softmax(logits, mask, temperature)  # (..., V), -inf outside V^-
    return -(logp.exp() * logp.masked_fill(~mask, 0.0)).sum(-1)


def kl_to_reference(logp: torch.Tensor, ref_logp: torch.Tensor,
                    token_mask: torch.Tensor | None = None) -> torch.Tensor:
    """KL(pi || pi_ref) of each action (...,): the k3 estimator summed over its tokens.

    ``logp``, ``ref_logp`` (..., L): masked token log-probs of the sampled tokens under the
    policy and the reference (base model, adapters off); ``token_mask`` (..., L) bool marks the
    action's tokens (default all; EOS padding has log-prob 0 under both, so it adds 0 anyway).

    Per token, with log r = ref_logp - logp:  k3 = r - 1 - log r  (Schulman, "Approximating KL
    divergence"). Unbiased for KL(pi || pi_ref) on tokens sampled from pi, like k1 = -log r,
    but k3 >= 0 for every sample (x - 1 - log x >= 0) and has much lower variance, so a
    minibatch mean never rewards moving away from the reference. Its gradient w.r.t. logp is
    1 - r. No clamping: exp(log r) can grow large if the policy puts tiny mass on a sampled
    token the reference likes; gradient clipping bounds the step.
    """
    log_ratio = ref_logp - logp  # (..., L)
    if token_mask is not None:
        log_ratio = log_ratio.masked_fill(~token_mask.bool(), 0.0)  # k3(0) = 0
    return (torch.exp(log_ratio) - log_ratio - 1.0).sum(-1)


# ------------------------------------------------------------------------------- eq. 10
def normalize_advantages(advantages: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """(B,) zero mean, unit std (unbiased). A minibatch of one is returned unchanged: its
    std is undefined, and centring it would zero its only learning signal."""
    if advantages.numel() < 2:
        return advantages
    return (advantages - advantages.mean()) / (advantages.std() + eps)


def ppo_losses(new_logp_action: torch.Tensor, old_logp_action: torch.Tensor,
               advantages: torch.Tensor, new_values: torch.Tensor, old_values: torch.Tensor,
               returns: torch.Tensor, entropy: torch.Tensor, kl: torch.Tensor,
               config) -> dict[str, torch.Tensor]:
    """The PPO losses of one minibatch of B decisions; every input is (B,).

    ``*_logp_action``: eq. 12 action log-probs (sums of masked token log-probs) under the
    current and the rollout policy; ``entropy``, ``kl``: per action (summed over its tokens,
    :func:`masked_entropy`, :func:`kl_to_reference`). ``config`` has clip_range,
    value_clip_range, vf_coef, ent_coef, kl_coef and normalize_advantages
    (:class:`trainers.stackelberg.config.StackelbergPPOConfig`).

    Returns ``loss`` = pg_loss + vf_coef * v_loss - ent_coef * entropy_loss + kl_coef * kl_loss
    (what to backpropagate), the four terms, and the detached diagnostics ``approx_kl``
    (mean of (ratio - 1) - log ratio, k3 of old vs new), ``clipfrac`` (fraction of
    |ratio - 1| > clip_range), ``ratio_mean``, ``ratio_max``.
    """
    if config.normalize_advantages:
        advantages = normalize_advantages(advantages)
    log_ratio = new_logp_action - old_logp_action  # (B,)
    ratio = log_ratio.exp()
    eps = config.clip_range
    pg_loss1 = -advantages * ratio  # eq. 10, as a loss to minimise
    pg_loss2 = -advantages * torch.clamp(ratio, 1.0 - eps, 1.0 + eps)
    pg_loss = torch.max(pg_loss1, pg_loss2).mean()

    v_clipped = old_values + torch.clamp(new_values - old_values, -config.value_clip_range,
                                         config.value_clip_range)
    v_loss_unclipped = (new_values - returns) ** 2
    v_loss_clipped = (v_clipped - returns) ** 2
    v_loss = 0.5 * torch.max(v_loss_unclipped, v_loss_clipped).mean()

    entropy_loss = entropy.mean()
    kl_loss = kl.mean()
    loss = (pg_loss + config.vf_coef * v_loss - config.ent_coef * entropy_loss
            + config.kl_coef * kl_loss)
    with torch.no_grad():
        approx_kl = ((ratio - 1.0) - log_ratio).mean()
        clipfrac = ((ratio - 1.0).abs() > eps).float().mean()
    return {"loss": loss, "pg_loss": pg_loss, "v_loss": v_loss, "entropy_loss": entropy_loss,
            "kl_loss": kl_loss, "approx_kl": approx_kl, "clipfrac": clipfrac,
            "ratio_mean": ratio.detach().mean(), "ratio_max": ratio.detach().max()}


# --------------------------------------------------------------------------- diagnostics
@torch.no_grad()
def explained_variance(values: torch.Tensor, returns: torch.Tensor) -> float:
    """1 - Var(returns - values) / Var(returns): 1 = perfect, 0 = no better than the mean,
    < 0 = worse; nan when the returns are constant."""
    var_returns = returns.var(unbiased=False)
    if var_returns == 0:
        return math.nan
    return float(1.0 - (returns - values).var(unbiased=False) / var_returns)


# --------------------------------------------------------------------------- LR schedule
def cosine_with_warmup(step: int, total: int, warmup: int = 0) -> float:
    """LR factor: linear 0 -> 1 over ``warmup`` steps, then cosine 1 -> 0 at ``total`` (design §6;
    the trainers step per epoch or update). Same curve as transformers'
    ``get_cosine_schedule_with_warmup`` up to ``total``."""
    if step < warmup:
        return step / warmup
    progress = (step - warmup) / max(total - warmup, 1)
    return max(0.0, 0.5 * (1.0 + math.cos(math.pi * min(progress, 1.0))))


def deterministic_algorithms(enabled: bool) -> None:
    """torch's deterministic kernels for this process (``torch.use_deterministic_algorithms``,
    ``warn_only``: an op without one warns rather than fails; cuDNN's deterministic mode and
    cuBLAS's fixed workspace on a GPU), so two runs of one config at one thread count give the
    same bits on a GPU too. The CPU update already does with the default kernels (design
    §6.11: its one order-varying op, the shared meta-prompts' gather, is ``index_select``)."""
    if enabled:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # before cuBLAS starts
    torch.use_deterministic_algorithms(enabled, warn_only=True)
    torch.backends.cudnn.deterministic = enabled


SCHEDULERS = ("cosine", "linear", "constant", "constant_with_warmup")
"""The ``lr_scheduler_type`` values of transformers' ``get_scheduler`` the trainers accept."""


def lr_scheduler(optimizer: torch.optim.Optimizer, name: str, total: int,
                 warmup: int = 0) -> torch.optim.lr_scheduler.LambdaLR:
    """transformers' ``get_scheduler(name)`` over ``total`` steps (the trainers step it once per
    epoch or update), the first ``warmup`` a linear warm-up; ``cosine`` is
    :func:`cosine_with_warmup` (design §6)."""
    from transformers import get_scheduler

    if name not in SCHEDULERS:
        raise ValueError(f"lr_scheduler_type = {name!r} is invalid; allowed: one of "
                         f"{list(SCHEDULERS)}")
    return get_scheduler(name, optimizer, num_warmup_steps=warmup, num_training_steps=total)
