"""``MARLTrainer``: PPO for the MARL baselines on the vectorised numeric game (CTDE).

Per update: B episodes in lock step (:func:`trainers.marl.rollout.collect`), then a PPO update
of the BS (actor + centralised critic, leader utility eq. 5) and one of the shared UE actor +
critic (follower utility eq. 2), each with its own Adam, learning rates and cosine schedule.
Actor and critic gradients are clipped separately (value losses of returns ~20 would otherwise
swamp the policy gradient in a joint norm). The PPO maths is :mod:`trainers.ppo`'s.

Exact resume: an update's episodes and minibatch order are seeded by (seed, update), so a
checkpoint at an update boundary (weights, optimizers, schedulers, torch/numpy RNG states,
history) is all the state there is; it is written atomically (temp dir + ``os.replace``).
"""

from __future__ import annotations

import os
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file
from tqdm.auto import tqdm

from grammars import ROLES
from textgame.config import ScenarioConfig
from textgame.metrics import means
from textgame.runner import run_episodes
from trainers.marl.config import OWNER, MARLConfig
from trainers.marl.model import WEIGHTS_FILE, MARLAgents
from trainers.marl.policies import MARLFollower, MARLLeader
from trainers.marl.rollout import collect
from trainers.ppo import explained_variance, lr_scheduler, ppo_losses
from trainers.runs.run_dir import (
    CHECKPOINT_PREFIX,
    TRACKER_PROJECT,
    Trackers,
    begin_checkpoint,
    checkpoint_problem,
    finish_checkpoint,
    latest_complete_checkpoint,
    list_checkpoints,
    load_json,
    load_trainer_state,
    open_run,
    rng_state,
    save_json,
    save_trainer_state,
    set_rng_state,
    write_metrics,
)

RNG_STATE = "rng_state.json"
HEADLINE = ("leader_utility", "follower_utility", "throughput_mbps", "fairness",
            "collision_rate", "idle_rbg_rate")


def ppo_epochs(batch: dict[str, torch.Tensor], evaluate: Callable[[dict], tuple],
               optimizer: torch.optim.Optimizer, clip_groups: Sequence[list], config,
               shuffle: torch.Generator) -> dict:
    """``config.ppo_epochs`` passes of shuffled minibatches of one role's ``batch`` (``logp``,
    ``values``, ``advantages``, ``returns`` and the inputs ``evaluate`` reads);
    ``evaluate(minibatch)`` -> (new log-probs, entropies, values), each (M,). Each parameter
    list of ``clip_groups`` (actor, critic) is clipped to ``max_grad_norm`` on its own.
    ``config`` has ppo_epochs, minibatch_size, max_grad_norm and :func:`ppo_losses`' fields.
    Returns the mean losses and diagnostics, ``explained_variance`` and ``decisions``."""
    c, n = config, len(batch["logp"])
    stats: dict[str, list[float]] = defaultdict(list)
    for _ in range(c.ppo_epochs):
        order = torch.randperm(n, generator=shuffle)
        for start in range(0, n, c.minibatch_size):
            idx = order[start:start + c.minibatch_size]
            mb = {k: v[idx] for k, v in batch.items()}
            logp, entropy, values = evaluate(mb)
            out = ppo_losses(logp, mb["logp"], mb["advantages"], values, mb["values"],
                             mb["returns"], entropy, torch.zeros_like(logp), c)
            optimizer.zero_grad()
            out["loss"].backward()
            for params in clip_groups:
                torch.nn.utils.clip_grad_norm_(params, c.max_grad_norm)
            optimizer.step()
            for k in ("pg_loss", "v_loss", "entropy_loss", "approx_kl", "clipfrac"):
                stats[k].append(out[k].detach().item())
    result = {k: float(np.mean(v)) for k, v in stats.items()}
    result["explained_variance"] = explained_variance(batch["values"], batch["returns"])
    result["decisions"] = n
    return result


class MARLTrainer:
    """Trains the MAPPO or G-MAC baseline of ``config.algo`` on ``config.scenario``."""

    def __init__(self, config: MARLConfig | None = None) -> None:
        self.config = config = config or MARLConfig()
        self.scenario = config.scenario_config()
        with torch.random.fork_rng():  # initialisation seeded without touching global state
            torch.manual_seed(config.seed)
            self.agents = MARLAgents(config, self.scenario)
        self.optimizers, self.schedulers = {}, {}
        for role in ROLES:
            actor, critic = self.agents.role_parameters(role)
            lr = config.leader_learning_rate if role == "leader" else config.follower_learning_rate
            self.optimizers[role] = torch.optim.Adam(
                [{"params": actor, "lr": lr},
                 {"params": critic, "lr": config.critic_learning_rate}])
            self.schedulers[role] = lr_scheduler(self.optimizers[role], "cosine",
                                                 config.total_updates)
        self.output_dir = Path(config.output_dir)
        self.update = 0
        self.history: list[dict] = []
        self.trackers = Trackers((), self.output_dir, {})  # report_to's, while training
        self._started = False

    # --------------------------------------------------------------------------- training
    def train(self, stop_at: int | None = None) -> list[dict]:
        """Run (or resume) to ``total_updates`` -- or stop after update ``stop_at`` (as if
        interrupted there; a checkpoint is written). Returns the per-update metrics."""
        c = self.config
        if not self._started:  # output_dir checked, checkpoint loaded: once per trainer
            checkpoint = open_run(OWNER, self.output_dir, c.resume_from_checkpoint,
                                  c.overwrite_output_dir, (TRACKER_PROJECT,))
            if checkpoint is not None:
                self.load_checkpoint(checkpoint)
            self._started = True
        end = c.total_updates if stop_at is None else min(stop_at, c.total_updates)
        self.trackers = Trackers(c.report_to, self.output_dir, vars(c))
        bar = tqdm(range(self.update, end), initial=self.update, total=c.total_updates,
                   unit="update", desc=c.algo, disable=c.disable_tqdm)
        for update in bar:
            record = self.train_update(update)
            bar.set_postfix(leader=f"{record['leader_utility']:.3f}",
                            follower=f"{record['follower_utility']:.3f}")
            self.update = update + 1
            self.log(record)
            if c.save_every and self.update % c.save_every == 0:
                self.save_checkpoint()
        if checkpoint_problem(self.output_dir / f"{CHECKPOINT_PREFIX}{self.update}"):
            self.save_checkpoint()
        self.trackers.finish()
        return self.history

    def train_update(self, update: int) -> dict:
        """One rollout of ``n_envs`` episodes and a PPO update of each role."""
        c, agents = self.config, self.agents
        start = time.perf_counter()
        rollout_seed, shuffle_seed = np.random.SeedSequence([c.seed, update]).spawn(2)
        agents.eval()
        leader, follower, kpis = collect(agents, self.scenario, c.n_envs, rollout_seed,
                                         c.gamma, c.gae_lambda)
        record: dict = {"update": update + 1}
        record.update({k: float(np.nanmean(v)) for k, v in kpis.items()})
        shuffle = torch.Generator().manual_seed(int(shuffle_seed.generate_state(1)[0]))
        agents.train()

        def leader_eval(b):
            logp, entropy = agents.leader_actor.evaluate(b["global_x"], b["ue_x"], b["mask"],
                                                         b["dcm"])
            return logp, entropy, agents.leader_critic(b["global_x"], b["ue_x"], b["mask"])

        def follower_eval(b):
            logp, entropy = agents.follower_actor.log_prob(b["ue_x"], b["transmit"], b["ucm"],
                                                           b["bits"])
            return logp, entropy, agents.follower_critic(b["critic_x"])

        for role, batch, evaluate in (("leader", leader, leader_eval),
                                      ("follower", follower, follower_eval)):
            stats = self.ppo_update(role, batch, evaluate, shuffle)
            record.update({f"{role}/{k}": v for k, v in stats.items()})
            record[f"{role}/learning_rate"] = self.schedulers[role].get_last_lr()[0]
            self.schedulers[role].step()
        record["seconds"] = time.perf_counter() - start
        return record

    def ppo_update(self, role: str, batch: dict[str, torch.Tensor],
                   evaluate: Callable[[dict], tuple], shuffle: torch.Generator) -> dict:
        return ppo_epochs(batch, evaluate, self.optimizers[role],
                          self.agents.role_parameters(role), self.config, shuffle)

    # ------------------------------------------------------------------------- evaluation
    @torch.no_grad()
    def evaluate(self, scenario: ScenarioConfig | None = None, episodes: int | None = None,
                 greedy: bool = False, seed: int = 10**6) -> dict[str, float]:
        """Mean KPIs of the current policies on ``scenario`` (default: the training cell)."""
        return means(self.play(scenario, episodes, greedy, seed))

    def play(self, scenario: ScenarioConfig | None = None, episodes: int | None = None,
             greedy: bool = False, seed: int = 10**6) -> dict[str, np.ndarray]:
        """Every episode's KPIs (episodes,) of the current policies on ``scenario``."""
        self.agents.eval()
        episodes = episodes or self.config.eval_episodes
        return run_episodes(scenario or self.scenario, MARLLeader(self.agents, greedy),
                            MARLFollower(self.agents, greedy), episodes,
                            n_envs=min(episodes, 64), seed=seed)

    # ----------------------------------------------------------------------------- logging
    def log(self, record: dict) -> None:
        self.history.append(record)
        self.trackers.log(record, "update")
        if record["update"] % self.config.log_every:
            return
        write_metrics(self.output_dir, self._logged(), "update", append=record)

    def _logged(self) -> list[dict]:
        return [r for r in self.history if r["update"] % self.config.log_every == 0]

    # ------------------------------------------------------------------------- checkpoints
    def checkpoints(self) -> list[Path]:
        return list_checkpoints(self.output_dir)

    def last_checkpoint(self) -> Path | None:
        """The newest complete checkpoint (incomplete ones are skipped with a warning)."""
        return latest_complete_checkpoint(self.output_dir)

    def save_checkpoint(self) -> Path:
        """``output_dir/checkpoint-<update>``: a loadable model plus the trainer state
        (``trainer_state.json``: the update, history and schedulers; ``optimizer.pt``)."""
        tmp = begin_checkpoint(self.output_dir, self.update)
        self.agents.save(tmp)
        save_trainer_state(tmp, self.update, self.history, self.optimizers, self.schedulers,
                           step="update")
        save_json(tmp / RNG_STATE, rng_state({}))
        return finish_checkpoint(tmp, self.config.save_total_limit)

    def load_checkpoint(self, path: str | os.PathLike) -> None:
        """Everything :meth:`save_checkpoint` wrote, or the single ``trainer_state.pt`` of a
        checkpoint from before ``trainer_state.json``, without unpickling objects."""
        path = Path(path)
        self.agents.load_state_dict(load_file(str(path / WEIGHTS_FILE)))
        state = load_trainer_state(path)
        self.update, self.history = state["update"], state["history"]
        for role in ROLES:
            self.optimizers[role].load_state_dict(state["optimizers"][role])
            self.schedulers[role].load_state_dict(state["schedulers"][role])
        set_rng_state(load_json(path / RNG_STATE), {})
        write_metrics(self.output_dir, self._logged(), "update")  # later ones are replayed

    # ---------------------------------------------------------------------- final model
    def save_model(self, directory: str | os.PathLike | None = None) -> Path:
        """The trained networks, loadable by :func:`trainers.marl.load_marl_policies`."""
        return self.agents.save(directory or self.output_dir / "final")

