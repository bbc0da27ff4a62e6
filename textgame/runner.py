"""Run numeric policies on a scenario and collect per-episode KPIs."""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

from textgame.config import ScenarioConfig
from textgame.game import StackelbergGame
from textgame.metrics import EpisodeKPIs
from textgame.policies import FollowerPolicy, LeaderPolicy


def batch_seeds(episodes: int, n_envs: int, seed: int = 0,
                ) -> list[tuple[int, np.random.SeedSequence, np.random.SeedSequence]]:
    """(envs, game seed, policy seed) of each lock-step batch that plays ``episodes`` episodes.

    Any runner that plays a policy on the same (episodes, n_envs, seed) with these seeds meets
    the same environments (common random numbers across policies, LLM ones included).
    """
    n_batches = math.ceil(episodes / n_envs)
    out = []
    for k, batch_seed in enumerate(np.random.SeedSequence(seed).spawn(n_batches)):
        game_seed, policy_seed = batch_seed.spawn(2)
        out.append((min(n_envs, episodes - k * n_envs), game_seed, policy_seed))
    return out


def run_episodes(scenario: ScenarioConfig, leader: LeaderPolicy, follower: FollowerPolicy,
                 episodes: int, n_envs: int = 64, seed: int = 0,
                 on_batch: Callable[[int], None] | None = None) -> dict[str, np.ndarray]:
    """Play ``episodes`` episodes in lock-step batches of up to ``n_envs`` environments.

    Every batch gets its own child of ``SeedSequence(seed)`` for the game and for the policies,
    so results depend only on (scenario, policies, episodes, n_envs, seed). ``on_batch(k)`` is
    called with the number of episodes each finished batch added (for progress bars).
    Returns ``{kpi: (episodes,) array}``.
    """
    if isinstance(episodes, bool) or not isinstance(episodes, int) or episodes < 1:
        raise ValueError(f"episodes = {episodes!r} is invalid; allowed: an integer >= 1")
    cell = scenario.cell
    results: dict[str, list[np.ndarray]] = {}
    for b, game_seed, policy_seed in batch_seeds(episodes, n_envs, seed):
        game = StackelbergGame(scenario, b)
        kpis = EpisodeKPIs(cell, b)
        policy_rng = np.random.default_rng(policy_seed)
        leader.reset(b, cell.max_ues, cell.n_rbgs, policy_rng)
        follower.reset(b, cell.max_ues, cell.n_rbgs, cell.ucm_levels, policy_rng)
        obs = game.reset(game_seed)
        while True:
            follower_obs = game.step_leader(leader.act(obs))
            step = game.step_followers(*follower.act(follower_obs))
            kpis.update(step)
            if step.done:
                break
            obs = step.leader_obs
        for kpi, values in kpis.result().items():
            results.setdefault(kpi, []).append(values)
        if on_batch is not None:
            on_batch(b)
    return {kpi: np.concatenate(v) for kpi, v in results.items()}
