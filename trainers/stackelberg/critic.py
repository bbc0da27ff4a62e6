"""Critic warm-up (design §6.6): value heads fitted to the starting policy's returns before PPO.

A seeded (or loaded) policy acts well from its first epoch, but its value heads are fresh: the
first PPO epochs then spend their advantages (eq. 8) on a critic that predicts nothing, and the
policy gradient is mostly noise. :func:`warm_up_critic` plays ``critic_warmup_episodes`` of the
starting policy (the rollout's own code, at ``temperature_start``), keeps each decision's
value-head input (the final hidden state of its last prompt token, computed while sampling) and
its Monte-Carlo return (discounted rewards to go, lambda = 1: a target that does not depend on
the head), and fits each role's head alone (Adam on the squared error; the adapters are not
touched, so the inputs stay valid). The last batch of episodes is held out: the explained
variance (CleanRL's ``explained_variance``) of the fresh and the fitted head on it is returned.
"""

from __future__ import annotations

import torch
from torch import nn

from trainers.ppo import explained_variance

WARMUP_EPOCH = 10**9 + 1  # the warm-up episodes' epoch key: no training epoch or evaluation uses it


def fit_value_head(head: nn.Module, features: torch.Tensor, returns: torch.Tensor, *,
                   steps: int, learning_rate: float) -> float:
    """Full-batch Adam on 0.5 * (V(x) - R)^2 for ``steps`` steps, fp32: ``features`` (n, H),
    ``returns`` (n,); returns the final loss."""
    optimizer = torch.optim.Adam(head.parameters(), lr=learning_rate)
    loss = torch.zeros(())
    for _ in range(steps):
        optimizer.zero_grad(set_to_none=True)
        loss = 0.5 * (head(features).squeeze(-1) - returns).square().mean()
        loss.backward()
        optimizer.step()
    return float(loss.detach())


def _batches(worker, config, roles) -> list[dict[str, tuple[torch.Tensor, torch.Tensor]]]:
    """Per batch of episodes, per role: (value-head inputs (n, H), Monte-Carlo returns (n,))."""
    owners = {"leader": worker.env.n_envs,
              "follower": worker.env.n_envs * worker.scenario.cell.max_ues}
    out = []
    for batch in range(config.critic_warmup_episodes // config.n_envs):
        traces = dict(zip(("leader", "follower"), worker.play(
            WARMUP_EPOCH, batch, config.temperature_start, keep_hidden=True)[:2], strict=False))
        part = {}
        for role in roles:
            trace = traces[role]
            if trace.rows:
                _, returns = worker.advantages(trace, owners[role], monte_carlo=True)
                part[role] = (torch.cat(trace.hiddens), torch.tensor(returns))
        out.append(part)
    return out


def warm_up_critic(policy, worker, config) -> dict[str, float]:
    """Fit ``policy``'s value heads to its own returns (see the module docstring);
    ``{role/explained_variance_fresh, role/explained_variance_warm, role/decisions}`` on the
    held-out last batch of episodes."""
    roles = ["leader"] + (["follower"] if config.follower_policy == "llm" else [])
    batches = _batches(worker, config, roles)
    metrics: dict[str, float] = {}
    for role in roles:
        train = [b[role] for b in batches[:-1] if role in b]
        held = batches[-1].get(role)
        if not train or held is None:
            continue
        head = policy.value_heads[role]
        features, returns = (torch.cat(parts).to(policy.device) for parts in zip(*train,
                                                                                   strict=True))
        held_features, held_returns = (t.to(policy.device) for t in held)
        with torch.no_grad():
            fresh = head(held_features).squeeze(-1)
        fit_value_head(head, features, returns, steps=config.critic_warmup_steps,
                       learning_rate=config.critic_warmup_learning_rate)
        with torch.no_grad():
            warm = head(held_features).squeeze(-1)
        metrics[f"{role}/explained_variance_fresh"] = explained_variance(fresh.cpu(),
                                                                        held_returns.cpu())
        metrics[f"{role}/explained_variance_warm"] = explained_variance(warm.cpu(),
                                                                       held_returns.cpu())
        metrics[f"{role}/decisions"] = float(len(returns))
    return metrics
