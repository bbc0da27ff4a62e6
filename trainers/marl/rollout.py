"""One batch of B episodes in lock step, played through ``MARLLeader``/``MARLFollower``.

The seeding mirrors :func:`textgame.runner.run_episodes`: the batch's ``SeedSequence`` spawns a
game seed and a policy seed, so a rollout depends only on (weights, scenario, B, seed).
Returns the decisions, values and rewards stacked over TTIs, GAE advantages and returns
(:func:`trainers.ppo.gae`, per env for the leader and per UE slot for the followers), and the
episodes' KPIs.
"""

from __future__ import annotations

import numpy as np
import torch

from textgame.config import ScenarioConfig
from textgame.game import StackelbergGame
from textgame.metrics import EpisodeKPIs
from trainers.marl.model import MARLAgents
from trainers.marl.networks import FollowerCritic
from trainers.marl.policies import MARLFollower, MARLLeader
from trainers.ppo import gae

LEADER_KEYS = ("global_x", "ue_x", "mask", "dcm", "logp")
FOLLOWER_KEYS = ("ue_x", "transmit", "ucm", "bits", "logp", "active")


def _rows(x: torch.Tensor) -> torch.Tensor:
    """(T, B, I) -> (B * I, T): one GAE row per UE slot."""
    return x.permute(1, 2, 0).reshape(-1, x.shape[0])


@torch.no_grad()
def collect(agents: MARLAgents, scenario: ScenarioConfig, n_envs: int,
            seed: np.random.SeedSequence, gamma: float, lam: float
            ) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor], dict[str, np.ndarray]]:
    """Play one episode per env with sampled actions.

    Returns ``(leader, follower, kpis)``: ``leader`` maps LEADER_KEYS, ``values``,
    ``advantages``, ``returns`` to tensors flattened over (T, B) -> T*B decisions;
    ``follower`` the same over the *active* UE decisions of (T, B, I_max), with the critic's
    input ``critic_x``; ``kpis`` is ``EpisodeKPIs.result()``.
    """
    cell = scenario.cell
    game_seed, policy_seed = seed.spawn(2)
    game = StackelbergGame(scenario, n_envs)
    kpis = EpisodeKPIs(cell, n_envs)
    rng = np.random.default_rng(policy_seed)
    leader, follower = MARLLeader(agents), MARLFollower(agents)
    leader.reset(n_envs, cell.max_ues, cell.n_rbgs, rng)
    follower.reset(n_envs, cell.max_ues, cell.n_rbgs, cell.ucm_levels, rng)
    lead: dict[str, list] = {k: [] for k in (*LEADER_KEYS, "values", "rewards")}
    foll: dict[str, list] = {k: [] for k in (*FOLLOWER_KEYS, "critic_x", "values", "rewards")}
    obs = game.reset(game_seed)
    while True:
        follower_obs = game.step_leader(leader.act(obs))
        step = game.step_followers(*follower.act(follower_obs))
        kpis.update(step)
        L, F = leader.last, follower.last
        for k in LEADER_KEYS:
            lead[k].append(L[k])
        lead["values"].append(agents.leader_critic(L["global_x"], L["ue_x"], L["mask"]))  # (B,)
        lead["rewards"].append(torch.from_numpy(step.leader_reward).float())  # (B,)
        critic_x = FollowerCritic.inputs(F["ue_x"], L["bs_ue_x"], L["global_x"], F["active"])
        for k in FOLLOWER_KEYS:
            foll[k].append(F[k])
        foll["critic_x"].append(critic_x)  # (B, I_max, Dc)
        foll["values"].append(agents.follower_critic(critic_x))  # (B, I_max)
        foll["rewards"].append(torch.from_numpy(step.follower_reward).float())  # (B, I_max)
        if step.done:
            break
        obs = step.leader_obs
    return with_advantages(lead, foll, gamma, lam) + (kpis.result(),)


def with_advantages(lead: dict[str, list], foll: dict[str, list], gamma: float, lam: float
                    ) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """Per-TTI lists -> PPO batches with GAE ``advantages`` and ``returns`` (eqs. 8-9).

    ``lead`` holds (B, ...) tensors per TTI, ``values`` and ``rewards`` (B,) among them;
    ``foll`` holds (B, I_max, ...) tensors, ``values``, ``rewards`` and ``active`` (B, I_max).
    The leader's batch is flattened over (T, B), the followers' over the active (T, B, I_max).
    """
    lead_t = {k: torch.stack(v) for k, v in lead.items()}  # (T, B, ...)
    foll_t = {k: torch.stack(v) for k, v in foll.items()}  # (T, B, I_max, ...)

    # eq. 8-9: leader per env (rows = B); followers per UE slot (rows = B * I_max)
    adv, ret = gae(lead_t["rewards"].T, lead_t["values"].T, gamma=gamma, lam=lam)  # (B, T)
    lead_t["advantages"], lead_t["returns"] = adv.T, ret.T
    active = foll_t["active"]  # (T, B, I)
    starts = torch.zeros_like(active)
    starts[1:] = active[1:] & ~active[:-1]  # a UE (re)joining starts a new trajectory
    adv, ret = gae(_rows(foll_t["rewards"]), _rows(foll_t["values"]), gamma=gamma, lam=lam,
                   active=_rows(active), starts=_rows(starts))
    shape = active.shape[1:] + active.shape[:1]  # (B, I, T)
    foll_t["advantages"] = adv.reshape(shape).permute(2, 0, 1)
    foll_t["returns"] = ret.reshape(shape).permute(2, 0, 1)

    leader_batch = {k: v.flatten(0, 1) for k, v in lead_t.items() if k != "rewards"}
    on = active.reshape(-1)
    follower_batch = {k: v.flatten(0, 2)[on] for k, v in foll_t.items()
                      if k not in ("rewards", "active")}
    return leader_batch, follower_batch
