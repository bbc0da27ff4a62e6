"""``MARLConfig``: every hyperparameter of the learned MARL baselines (design §3, paper App. B-E).

MAPPO (MAPPO-S when retrained per scenario, MAPPO-G when the model trained at one I is applied
to others) and G-MAC share the UE policy, the features, the critics and the PPO loop; they differ
only in the BS actor. The paper's numbers in App. B-E were lost in extraction: defaults marked
*assumed* are ours, chosen so that a run trains on two CPU cores in a few minutes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal

from textgame.config import (
    ScenarioConfig,
    check_int_at_least,
    check_positive,
    check_real_in,
    scenario_field,
)
from textgame.config import fail_field as _fail_field
from textgame.config import help_field as _help
from trainers.runs.run_dir import (
    DISABLE_TQDM_HELP,
    OVERWRITE_HELP,
    REPORT_TO_HELP,
    RESUME_HELP,
    report_to_option,
    resume_option,
)

ALGOS = ("mappo", "gmac")
OWNER = "MARLConfig"
# The paper trains MAPPO-G and G-MAC "exclusively in the 5-UEs scenario" (Fig. 5).
TRAIN_SCENARIO = {"cell": {"ue_counts": [5], "n_rbgs": 4, "episode_ttis": 50}}


def _fail(name: str, value: Any, allowed: str) -> None:
    _fail_field(OWNER, name, value, allowed)


def _sizes(name: str, value: Any) -> tuple[int, ...]:
    if (not isinstance(value, (list, tuple)) or len(value) == 0
            or any(isinstance(x, bool) or not isinstance(x, int) or x < 1 for x in value)):
        _fail(name, value, "a non-empty list of integers >= 1 (hidden layer widths)")
    return tuple(value)


@dataclass
class MARLConfig:
    r"""Configuration of :class:`~trainers.marl.trainer.MARLTrainer` (MAPPO-S/-G and G-MAC).

    Every field is a ``--flag`` of ``agentic-mac train-marl`` and a key of its YAML ``--config``.

    Parameters that choose the algorithm and the game:
        algo, scenario, history_len, max_ues
    Parameters of the networks (paper App. B-E; widths assumed):
        ue_hidden, ue_latent, bs_hidden, bs_latent, encoder_hidden, embedding_dim,
        dcm_embedding_dim, gru_hidden, critic_hidden
    Parameters that control the rollout:
        n_envs, total_updates
    Parameters of PPO:
        leader_learning_rate, follower_learning_rate, critic_learning_rate, gamma, gae_lambda,
        clip_range, value_clip_range, vf_coef, ent_coef, max_grad_norm, minibatch_size,
        ppo_epochs, normalize_advantages
    Parameters of the run and its checkpoints:
        seed, num_threads, output_dir, save_every, save_total_limit, resume_from_checkpoint,
        overwrite_output_dir, log_every, report_to, disable_tqdm, eval_episodes
    """

    # ---------------------------------------------------------------- algorithm and game
    algo: Literal["mappo", "gmac"] = _help(
        "BS actor: 'mappo' (monolithic MLP for a fixed UE capacity; MAPPO-S/-G) or 'gmac' "
        "(GRU unrolled over the active UEs; any I without architecture change).",
        default="mappo")
    scenario: dict | str | None = _help(
        "Training cell (design §2) as a mapping (YAML) or a JSON string with sections cell, "
        "traffic, channel, reward; None = the paper's MARL training cell (I = 5 fixed, N = 4, "
        "T = 50).", default=None)
    history_len: int = _help(
        "H: TTIs in the UE and BS history stacks (assumed).", default=4)
    max_ues: int | None = _help(
        "I_cap: fixed UE capacity of the MAPPO BS MLP; None = the training cell's I_max. UEs "
        "beyond it are invisible to the BS and never scheduled (MAPPO-G truncation); fewer UEs "
        "are zero-padded. Ignored by G-MAC.", default=None)

    # ----------------------------------------------------------------------- networks
    ue_hidden: list[int] = _help(
        "Hidden widths of the shared UE actor MLP (ReLU; paper: four layers, widths assumed).",
        default_factory=lambda: [128, 128, 128, 128])
    ue_latent: int = _help("Width of the UE actor's latent feeding its three heads (paper).",
                           default=512)
    bs_hidden: list[int] = _help(
        "Hidden widths of the MAPPO BS MLP (ReLU; assumed).", default_factory=lambda: [256, 256])
    bs_latent: int = _help("Output width of the MAPPO BS MLP feeding its per-UE DCM heads "
                           "(assumed).", default=256)
    encoder_hidden: list[int] = _help(
        "Hidden widths of G-MAC's global and per-UE encoders (paper: two layers; widths "
        "assumed).", default_factory=lambda: [128, 128])
    embedding_dim: int = _help("Width of G-MAC's per-UE embedding and context (assumed).",
                               default=64)
    dcm_embedding_dim: int = _help(
        "Width of G-MAC's learned embedding of the previous UE's DCM decision (assumed).",
        default=16)
    gru_hidden: int = _help("Hidden size of G-MAC's GRU cell (assumed).", default=128)
    critic_hidden: list[int] = _help("Hidden widths of the centralised critics (assumed).",
                                     default_factory=lambda: [256, 256])

    # ------------------------------------------------------------------------ rollout
    n_envs: int = _help("B: environments in lock step; one episode each per update "
                        "(assumed).", default=32)
    total_updates: int = _help("PPO updates (each one batch of n_envs episodes; assumed).",
                               default=150)

    # ------------------------------------------------------------------------------ PPO
    leader_learning_rate: float = _help(
        "Adam LR of the BS actor (slower than the UEs': two-timescale Stackelberg learning; "
        "assumed).", default=3e-4)
    follower_learning_rate: float = _help("Adam LR of the UE actor (assumed).", default=5e-4)
    critic_learning_rate: float = _help("Adam LR of both critics (assumed).", default=1e-3)
    gamma: float = _help("Discount factor (paper).", default=0.99)
    gae_lambda: float = _help("GAE lambda (paper).", default=0.95)
    clip_range: float = _help("PPO clipping ratio epsilon (paper).", default=0.2)
    value_clip_range: float = _help(
        "Clip range of the clipped value loss; returns reach ~20, so it is wide (assumed).",
        default=10.0)
    vf_coef: float = _help("Weight of the value loss.", default=0.5)
    ent_coef: float = _help("Weight of the entropy bonus (assumed).", default=0.01)
    max_grad_norm: float = _help("Gradient clipping, per network (assumed).", default=0.5)
    minibatch_size: int = _help("Decisions per PPO minibatch (assumed).", default=512)
    ppo_epochs: int = _help("PPO passes over each batch (assumed).", default=4)
    normalize_advantages: bool = _help("Normalise advantages per minibatch.", default=True)

    # -------------------------------------------------------------- run and checkpoints
    seed: int = _help("Seed of initialisation, environments and sampling.", default=0)
    num_threads: int | None = _help(
        "Torch CPU threads per process; None = the cores this process may use divided among "
        "the processes of the machine (accelerate launch's LOCAL_WORLD_SIZE).", default=None)
    output_dir: str = _help("Run directory: checkpoints, metrics, final model.",
                            default="runs/marl")
    save_every: int = _help("Checkpoint every this many updates (0 = only at the end).",
                            default=50)
    save_total_limit: int = _help("Checkpoints kept (oldest deleted first).", default=2)
    resume_from_checkpoint: str | None = _help(RESUME_HELP, default=None)
    overwrite_output_dir: bool = _help(OVERWRITE_HELP, default=False)
    log_every: int = _help("Write metrics every this many updates.", default=1)
    report_to: list[str] = _help(REPORT_TO_HELP, default_factory=list)
    disable_tqdm: bool = _help(DISABLE_TQDM_HELP, default=False)
    eval_episodes: int = _help("Episodes of the final evaluation in the recipe.", default=128)

    def __post_init__(self) -> None:
        if self.algo not in ALGOS:
            _fail("algo", self.algo, f"one of {list(ALGOS)}")
        self.scenario = scenario_field(OWNER, self.scenario)
        cell = self.scenario_config().cell  # validates every section and field
        for name in ("ue_hidden", "bs_hidden", "encoder_hidden", "critic_hidden"):
            setattr(self, name, list(_sizes(name, getattr(self, name))))
        for name in ("history_len", "ue_latent", "bs_latent", "embedding_dim",
                     "dcm_embedding_dim", "gru_hidden", "n_envs", "total_updates",
                     "minibatch_size", "ppo_epochs", "save_total_limit", "log_every",
                     "eval_episodes"):
            check_int_at_least(OWNER, name, getattr(self, name), 1)
        check_int_at_least(OWNER, "save_every", self.save_every, 0)
        check_int_at_least(OWNER, "seed", self.seed, 0)
        if self.max_ues is not None:
            check_int_at_least(OWNER, "max_ues", self.max_ues, 1)
        if self.num_threads is not None:
            check_int_at_least(OWNER, "num_threads", self.num_threads, 1)
        if not self.output_dir:
            _fail("output_dir", self.output_dir, "a directory path")
        if cell.n_rbgs > 16 and self.algo == "gmac":
            _fail("scenario", self.scenario, "n_rbgs <= 16 for G-MAC (2^N DCM embeddings)")
        for name in ("gamma", "gae_lambda"):
            check_real_in(OWNER, name, getattr(self, name), 0.0, 1.0)
        for name in ("vf_coef", "ent_coef"):
            check_real_in(OWNER, name, getattr(self, name), 0.0, math.inf)
        for name in ("leader_learning_rate", "follower_learning_rate", "critic_learning_rate",
                     "clip_range", "value_clip_range", "max_grad_norm"):
            check_positive(OWNER, name, getattr(self, name))
        self.resume_from_checkpoint = resume_option(OWNER, self.resume_from_checkpoint,
                                                    self.overwrite_output_dir)
        self.report_to = report_to_option(OWNER, self.report_to)
        if not isinstance(self.disable_tqdm, bool):
            _fail("disable_tqdm", self.disable_tqdm, "True or False")

    # --------------------------------------------------------------------------- derived
    def scenario_config(self) -> ScenarioConfig:
        return ScenarioConfig.from_dict(TRAIN_SCENARIO if self.scenario is None
                                        else self.scenario)

    @property
    def ue_capacity(self) -> int:
        """I_cap of the MAPPO BS: ``max_ues`` or the training cell's I_max."""
        return self.max_ues or self.scenario_config().cell.max_ues

    @property
    def kl_coef(self) -> float:
        """No reference policy in MARL: the KL term of ``trainers.ppo.ppo_losses`` is off."""
        return 0.0
