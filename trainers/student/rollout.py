"""DAgger rollouts: a beta-mixture of teacher and student plays, the teacher labels every state.

Per TTI and env, one draw u ~ U[0, 1) decides who executes: the teacher if u < beta, the
student otherwise (beta = 1: behaviour cloning on teacher rollouts; beta = 0: the student's own
state distribution). Both policies see every observation, so their histories stay in step, and
both leaders are told the executed DCM. The student acts by its ``decoding`` (greedy or
sampled). The seeding mirrors :func:`textgame.runner.batch_seeds`: each batch spawns a game
seed, a policy seed (which also seeds a sampling student's generators) and a mixing seed.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from textgame.config import ScenarioConfig
from textgame.game import StackelbergGame
from textgame.metrics import EpisodeKPIs
from trainers.student.model import StudentModel
from trainers.student.policies import StudentFollower, StudentLeader
from trainers.student.teachers import Teacher

KPI_KEYS = ("leader_utility", "follower_utility", "throughput_mbps", "fairness",
            "collision_rate")


def pad_ues(ue_x: torch.Tensor, mask: torch.Tensor, width: int
             ) -> tuple[torch.Tensor, torch.Tensor]:
    """(M, W, D), (M, W) -> (M, width, D), (M, width) with padding rows (zeros, False)."""
    pad = width - ue_x.shape[1]
    if pad == 0:
        return ue_x, mask
    return (torch.cat([ue_x, ue_x.new_zeros(len(ue_x), pad, ue_x.shape[2])], 1),
            torch.cat([mask, mask.new_zeros(len(mask), pad)], 1))


def collect(student: StudentModel, teacher: Teacher, scenario: ScenarioConfig, episodes: int,
            n_envs: int, seed: np.random.SeedSequence, beta: float
            ) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor], dict[str, float]]:
    """``episodes`` episodes in batches of ``n_envs``.

    Returns the leader data ``global_x`` (M, Dg), ``ue_x`` (M, I_max, Db), ``mask`` (M, I_max),
    ``dcm`` (M, N) (the teacher's label) over M = TTIs x envs; the follower data
    ``follower_x`` (U, Du), ``bitmap`` (U, N) float, ``ucm`` (U,) over the U active UE
    decisions; and the round's statistics: how often the student's action (by its decoding)
    matched the teacher's label (``rbg_agreement`` per DCM entry, ``bitmap_agreement`` per bit,
    ``ucm_agreement``) and the mean KPIs of the played episodes.
    """
    cell = scenario.cell
    lead: dict[str, list] = {k: [] for k in ("global_x", "ue_x", "mask", "dcm")}
    follow: dict[str, list] = {k: [] for k in ("follower_x", "bitmap", "ucm")}
    counts = np.zeros(6)  # rbg hits, rbgs, bit hits, bits, ucm hits, ucms
    kpis: dict[str, list] = {k: [] for k in KPI_KEYS}
    for k, batch_seed in enumerate(seed.spawn(math.ceil(episodes / n_envs))):
        size = min(n_envs, episodes - k * n_envs)
        game_seed, policy_seed, mix_seed = batch_seed.spawn(3)
        game, tracker = StackelbergGame(scenario, size), EpisodeKPIs(cell, size)
        policy_rng, mix = np.random.default_rng(policy_seed), np.random.default_rng(mix_seed)
        leader, follower = StudentLeader(student), StudentFollower(student)
        for policy in (leader, teacher.leader):
            policy.reset(size, cell.max_ues, cell.n_rbgs, policy_rng)
        for policy in (follower, teacher.follower):
            policy.reset(size, cell.max_ues, cell.n_rbgs, cell.ucm_levels, policy_rng)
        obs = game.reset(game_seed)
        while True:
            own, label = leader.act(obs), teacher.leader.act(obs)  # (B, N) each
            by_teacher = mix.random(size) < beta  # (B,)
            dcm = np.where(by_teacher[:, None], label, own)
            leader.executed(dcm, obs.active)
            teacher.executed(dcm, obs.active)
            width = cell.max_ues
            ue_x, mask = pad_ues(torch.from_numpy(leader.last["ue_x"]),
                                 torch.from_numpy(leader.last["mask"]), width)
            for key, value in (("global_x", torch.from_numpy(leader.last["global_x"])),
                               ("ue_x", ue_x), ("mask", mask), ("dcm", torch.from_numpy(label))):
                lead[key].append(value)
            counts[:2] += (own == label).sum(), own.size
            follower_obs = game.step_leader(dcm)
            own_bits, own_ucm = follower.act(follower_obs)
            bits, ucm = teacher.follower.act(follower_obs)
            active = follower_obs.active  # (B, I_max)
            follow["follower_x"].append(torch.from_numpy(follower.last["ue_x"][active]))
            follow["bitmap"].append(torch.from_numpy(bits[active].astype(np.float32)))
            follow["ucm"].append(torch.from_numpy(ucm[active].astype(np.int64)))
            counts[2:] += ((own_bits == bits)[active].sum(), bits[active].size,
                           (own_ucm == ucm)[active].sum(), active.sum())
            step = game.step_followers(np.where(by_teacher[:, None, None], bits, own_bits),
                                       np.where(by_teacher[:, None], ucm, own_ucm))
            tracker.update(step)
            if step.done:
                break
            obs = step.leader_obs
        result = tracker.result()
        for key in KPI_KEYS:
            kpis[key].append(result[key])
    stats = {"rbg_agreement": float(counts[0] / counts[1]),
             "bitmap_agreement": float(counts[2] / max(counts[3], 1)),
             "ucm_agreement": float(counts[4] / max(counts[5], 1))}
    stats.update({k: float(np.nanmean(np.concatenate(v))) for k, v in kpis.items()})
    return ({k: torch.cat(v) for k, v in lead.items()},
            {k: torch.cat(v) for k, v in follow.items()}, stats)
