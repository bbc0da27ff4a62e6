"""The undistilled baseline of Fig. 14: the student's own networks trained from scratch by PPO.

Same :class:`trainers.student.model.StudentModel` (the leader's bid auction, sampled from its
Plackett-Luce distribution; the follower MLP with Bernoulli bitmap and categorical UCM heads),
same features and the same D(I) as the distillation, but no teacher: PPO on the numeric game
(design §6) for a fixed wall time, with the centralised critics of the MARL baselines
(:class:`trainers.marl.networks.PooledLeaderCritic` for any I, :class:`FollowerCritic`), their
GAE (:func:`trainers.marl.rollout.with_advantages`, eqs. 8-9) and PPO epochs
(:func:`trainers.marl.trainer.ppo_epochs`, eq. 10). The learning rates decay on a cosine over
the wall time. Deployed greedily, the result is a student like any other (``final/``).

    agentic-mac distill --teacher max_weight/dictator --baseline ppo --output_dir runs/fig14
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from textgame.config import (
    ConfigError,
    ScenarioConfig,
    check_int_at_least,
    check_positive,
    check_real_in,
)
from textgame.game import StackelbergGame
from textgame.metrics import EpisodeKPIs
from trainers.marl.networks import (
    FollowerCritic,
    PooledLeaderCritic,
    bernoulli_entropy,
    bernoulli_log_prob,
    categorical_entropy,
    categorical_log_prob,
    sample_bernoulli,
    sample_categorical,
)
from trainers.marl.rollout import with_advantages
from trainers.marl.trainer import ppo_epochs
from trainers.ppo import cosine_with_warmup
from trainers.runs.run_dir import clear_run, write_metrics
from trainers.student.features import (
    RAW_COLUMNS,
    CellShape,
    follower_dim,
    leader_dims,
    scatter_by_rank,
)
from trainers.student.model import StudentModel
from trainers.student.policies import StudentFollower, StudentLeader, TorchBackend
from trainers.student.rollout import pad_ues

OWNER = "PPOBaselineConfig"


@dataclass
class PPOBaselineConfig:
    """PPO of the student networks from scratch; PPO fields as in ``MARLConfig``."""

    history_len: int = 2
    leader_hidden: int = 64
    follower_hidden: list[int] = field(default_factory=lambda: [64, 64])
    critic_hidden: list[int] = field(default_factory=lambda: [128, 128])
    n_envs: int = 32
    ppo_epochs: int = 4
    minibatch_size: int = 512
    leader_learning_rate: float = 3e-4
    follower_learning_rate: float = 5e-4
    critic_learning_rate: float = 1e-3
    gamma: float = 0.99
    gae_lambda: float = 0.95
    clip_range: float = 0.2
    value_clip_range: float = 10.0
    vf_coef: float = 0.5
    ent_coef: float = 0.01
    kl_coef: float = 0.0  # no reference policy
    max_grad_norm: float = 0.5
    normalize_advantages: bool = True
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("history_len", "leader_hidden", "n_envs", "ppo_epochs", "minibatch_size"):
            check_int_at_least(OWNER, name, getattr(self, name), 1)
        check_int_at_least(OWNER, "seed", self.seed, 0)
        for name in ("leader_learning_rate", "follower_learning_rate", "critic_learning_rate",
                     "clip_range", "value_clip_range", "max_grad_norm"):
            check_positive(OWNER, name, getattr(self, name))
        for name in ("gamma", "gae_lambda"):
            check_real_in(OWNER, name, getattr(self, name), 0.0, 1.0)
        if self.kl_coef != 0.0:
            raise ConfigError(f"{OWNER}.kl_coef = {self.kl_coef!r} is invalid; allowed: 0.0 "
                              "(PPO from scratch has no reference policy)")


def plackett_luce_log_prob(logits: torch.Tensor, dcm: torch.Tensor) -> torch.Tensor:
    """(B, N, 1 + I) factors, (B, N) DCM -> (B,) log P(DCM): the sum over RBGs of each
    owner's log-softmax given the grants before it (eq. 12: the action's log-prob is a sum)."""
    return categorical_log_prob(logits, dcm).sum(-1)


class SamplingBackend(TorchBackend):
    """A 'sample' :class:`TorchBackend` that keeps the log-probs of what it drew in ``last``
    (PPO rollouts; no_grad rather than inference mode, as they enter the PPO ratio)."""

    def __init__(self, model: StudentModel) -> None:
        super().__init__(model, "sample")
        self.last: dict[str, torch.Tensor] = {}

    @torch.no_grad()
    def leader(self, global_x: np.ndarray, ue_x: np.ndarray, mask: np.ndarray,
               generator: torch.Generator | None = None) -> np.ndarray:
        dcm, logits = self.model.leader.sample(torch.from_numpy(global_x),
                                               torch.from_numpy(ue_x),
                                               torch.from_numpy(mask), generator)
        self.last["leader_logp"] = plackett_luce_log_prob(logits, dcm)  # (B,)
        return dcm.numpy()  # (B, N)

    @torch.no_grad()
    def follower(self, ue_x: np.ndarray, generator: torch.Generator | None = None
                 ) -> tuple[np.ndarray, np.ndarray]:
        bitmap_logits, ucm_logits = self.model.follower.logits(torch.from_numpy(ue_x))
        bits = sample_bernoulli(bitmap_logits, generator, greedy=False)  # (B, I_max, N)
        ucm = sample_categorical(ucm_logits, generator, greedy=False)  # (B, I_max)
        self.last["bits"], self.last["ucm"] = bits, ucm
        self.last["follower_logp"] = follower_log_prob(bitmap_logits, ucm_logits, bits, ucm)
        return bits.numpy(), ucm.numpy()


def follower_log_prob(bitmap_logits: torch.Tensor, ucm_logits: torch.Tensor,
                      bits: torch.Tensor, ucm: torch.Tensor) -> torch.Tensor:
    """(...,) log-prob of a bitmap (N Bernoullis) and a UCM (categorical)."""
    return (bernoulli_log_prob(bitmap_logits, bits).sum(-1)
            + categorical_log_prob(ucm_logits, ucm))


class PPOBaseline:
    """The student networks, the two critics and one Adam per role (actor + critic groups)."""

    def __init__(self, config: PPOBaselineConfig, scenario: ScenarioConfig) -> None:
        self.config, self.scenario = config, scenario
        c = config
        shape = CellShape.of(scenario.cell)
        global_dim, ue_dim = leader_dims(shape, c.history_len)
        with torch.random.fork_rng():  # initialisation seeded without touching global state
            torch.manual_seed(c.seed)
            self.student = StudentModel(shape, c.history_len, c.leader_hidden,
                                        c.follower_hidden, "ppo")
            self.leader_critic = PooledLeaderCritic(global_dim, ue_dim - RAW_COLUMNS,
                                                    c.critic_hidden[0], c.critic_hidden)
            self.follower_critic = FollowerCritic(follower_dim(shape, c.history_len),
                                                  ue_dim, global_dim, c.critic_hidden)
        self.params = {"leader": (list(self.student.leader.parameters()),
                                  list(self.leader_critic.parameters())),
                       "follower": (list(self.student.follower.parameters()),
                                    list(self.follower_critic.parameters()))}
        rates = {"leader": c.leader_learning_rate, "follower": c.follower_learning_rate}
        self.optimizers = {role: torch.optim.Adam(
            [{"params": actor, "lr": rates[role]},
             {"params": critic, "lr": c.critic_learning_rate}])
            for role, (actor, critic) in self.params.items()}
        self.base_lrs = {role: [g["lr"] for g in o.param_groups]
                         for role, o in self.optimizers.items()}

    def leader_value(self, global_x, ue_x, mask) -> torch.Tensor:
        return self.leader_critic(global_x, ue_x[..., RAW_COLUMNS:], mask)  # (B,)

    @torch.no_grad()
    def collect(self, seed: np.random.SeedSequence) -> tuple[dict, dict, dict]:
        """One episode per env with sampled actions -> (leader batch, follower batch, KPIs),
        as :func:`trainers.marl.rollout.collect`."""
        c, cell = self.config, self.scenario.cell
        game_seed, policy_seed = seed.spawn(2)
        backend, policy_rng = SamplingBackend(self.student), np.random.default_rng(policy_seed)
        leader, follower = StudentLeader(self.student, backend), StudentFollower(self.student,
                                                                                  backend)
        leader.reset(c.n_envs, cell.max_ues, cell.n_rbgs, policy_rng)  # seeds its generator
        follower.reset(c.n_envs, cell.max_ues, cell.n_rbgs, cell.ucm_levels, policy_rng)
        game, kpis = StackelbergGame(self.scenario, c.n_envs), EpisodeKPIs(cell, c.n_envs)
        lead: dict[str, list] = {k: [] for k in ("global_x", "ue_x", "mask", "dcm", "logp",
                                                 "values", "rewards")}
        foll: dict[str, list] = {k: [] for k in ("ue_x", "bits", "ucm", "logp", "critic_x",
                                                 "values", "rewards", "active")}
        obs = game.reset(game_seed)
        while True:
            dcm = leader.act(obs)  # (B, N), drawn from the Plackett-Luce distribution
            L = leader.last
            global_x = torch.from_numpy(L["global_x"])  # (B, Dg)
            ue_x, mask = pad_ues(torch.from_numpy(L["ue_x"]), torch.from_numpy(L["mask"]),
                                 cell.max_ues)  # (B, I_max, Db), (B, I_max)
            for k, v in (("global_x", global_x), ("ue_x", ue_x), ("mask", mask),
                         ("dcm", torch.from_numpy(dcm)), ("logp", backend.last["leader_logp"]),
                         ("values", self.leader_value(global_x, ue_x, mask))):
                lead[k].append(v)
            follower_obs = game.step_leader(dcm)
            step = game.step_followers(*follower.act(follower_obs))
            kpis.update(step)
            active = torch.from_numpy(follower_obs.active)  # (B, I_max)
            bs_ue_x = torch.from_numpy(scatter_by_rank(L["ue_x"], follower_obs.active))
            follower_x = torch.from_numpy(follower.last["ue_x"])  # (B, I_max, Du)
            critic_x = FollowerCritic.inputs(follower_x, bs_ue_x, global_x, active)
            for k, v in (("ue_x", follower_x), ("bits", backend.last["bits"]),
                         ("ucm", backend.last["ucm"]), ("logp", backend.last["follower_logp"]),
                         ("critic_x", critic_x), ("values", self.follower_critic(critic_x)),
                         ("active", active)):
                foll[k].append(v)
            lead["rewards"].append(torch.from_numpy(step.leader_reward).float())  # (B,)
            foll["rewards"].append(torch.from_numpy(step.follower_reward).float())  # (B, I)
            if step.done:
                break
            obs = step.leader_obs
        return with_advantages(lead, foll, c.gamma, c.gae_lambda) + (kpis.result(),)

    def evaluate_leader(self, b: dict) -> tuple[torch.Tensor, ...]:
        """New log-probs, entropies and values (M,) of a leader minibatch; the entropy is the
        sum of the RBGs' conditional entropies on the taken path (chain rule: unbiased)."""
        width = max(int(b["mask"].sum(1).max()), 1)  # drop all-padding columns
        x, mask = b["ue_x"][:, :width], b["mask"][:, :width]
        logits = self.student.leader.teacher_forced(b["global_x"], x, mask, b["dcm"])
        return (plackett_luce_log_prob(logits, b["dcm"]), categorical_entropy(logits).sum(-1),
                self.leader_value(b["global_x"], x, mask))

    def evaluate_follower(self, b: dict) -> tuple[torch.Tensor, ...]:
        bitmap_logits, ucm_logits = self.student.follower.logits(b["ue_x"])
        entropy = bernoulli_entropy(bitmap_logits).sum(-1) + categorical_entropy(ucm_logits)
        return (follower_log_prob(bitmap_logits, ucm_logits, b["bits"], b["ucm"]), entropy,
                self.follower_critic(b["critic_x"]))

    def train_update(self, update: int, lr_factor: float) -> dict:
        """One rollout of ``n_envs`` episodes and a PPO update of each role."""
        start = time.perf_counter()
        rollout_seed, shuffle_seed = np.random.SeedSequence([self.config.seed, update]).spawn(2)
        leader, follower, kpis = self.collect(rollout_seed)
        record: dict = {"update": update + 1, "lr_factor": lr_factor}
        record.update({k: float(np.nanmean(v)) for k, v in kpis.items()})
        shuffle = torch.Generator().manual_seed(int(shuffle_seed.generate_state(1)[0]))
        self.student.train()
        for role, batch, evaluate in (("leader", leader, self.evaluate_leader),
                                      ("follower", follower, self.evaluate_follower)):
            for group, base in zip(self.optimizers[role].param_groups, self.base_lrs[role],
                                   strict=True):
                group["lr"] = base * lr_factor
            stats = ppo_epochs(batch, evaluate, self.optimizers[role], self.params[role],
                               self.config, shuffle)
            record.update({f"{role}/{k}": v for k, v in stats.items()})
        self.student.eval()
        record["seconds"] = time.perf_counter() - start
        return record


def train_from_scratch(config: PPOBaselineConfig, scenario: ScenarioConfig,
                       wall_seconds: float, output_dir: str | Path,
                       max_updates: int | None = None) -> dict:
    """PPO updates while less than ``wall_seconds`` have passed (at least one; at most
    ``max_updates``), the LRs on a cosine over the wall time
    (:func:`trainers.ppo.cosine_with_warmup`). ``output_dir`` is started afresh: per-update
    metrics, and the greedy student in ``final/`` (loadable by ``load_student``).

    Returns ``{"final": path, "history": [...], "seconds": ..., "updates": ...}``.
    """
    output_dir = Path(output_dir)
    clear_run(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    baseline, history = PPOBaseline(config, scenario), []
    start = time.perf_counter()
    while max_updates is None or len(history) < max_updates:
        elapsed = time.perf_counter() - start
        if history and elapsed >= wall_seconds:
            break
        record = baseline.train_update(len(history), cosine_with_warmup(elapsed, wall_seconds))
        history.append(record)
        write_metrics(output_dir, history, "update", append=record)
    seconds = time.perf_counter() - start
    final = baseline.student.save(output_dir / "final")
    (final / "ppo_config.json").write_text(json.dumps(asdict(config), indent=2))
    return {"final": final, "history": history, "seconds": seconds, "updates": len(history)}
