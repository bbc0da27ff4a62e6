"""``StackelbergPPOConfig``: every hyperparameter of the Stackelberg PPO trainer (design §6).

The model side (checkpoint, dtype, LoRA rank and targets, 4-bit quantisation) is TRL's
``ModelConfig``; this dataclass holds the game, the rollout, PPO per role, seeding, checkpoints
and logging. Field metadata carry the help strings that ``TrlParser``/``HfArgumentParser`` print;
defaults are the design doc's, those marked *assumed* are ours where the paper gives no number.
It composes :class:`~trainers.policy.play_config.PlayConfig`: the fields a trained policy plays
with take their defaults, help and checks from there, and :meth:`StackelbergPPOConfig.play_config`
is what every saved policy carries.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from typing import Any, Literal

from textgame.config import ScenarioConfig, check_int_at_least, check_positive, check_real_in
from textgame.config import fail_field as _fail_field
from textgame.config import help_field as _help
from textgame.prompts import TextConfig
from trainers.policy.play_config import PlayConfig, check_play_fields, play_field
from trainers.runs.run_dir import DISABLE_TQDM_HELP, OVERWRITE_HELP, RESUME_HELP, resume_option

OWNER = "StackelbergPPOConfig"


def _fail(name: str, value: Any, allowed: str) -> None:
    _fail_field(OWNER, name, value, allowed)


@dataclass
class StackelbergPPOConfig:
    r"""Configuration of :class:`~trainers.stackelberg.trainer.StackelbergPPOTrainer`.

    Every field is a ``--flag`` of ``agentic-mac train`` and a key of its YAML ``--config``;
    the model itself (checkpoint, dtype, LoRA, 4-bit) is TRL's ``ModelConfig``.

    Parameters that control the game and the text layer:
        scenario, history_ttis, prompt_format, use_chat_template, pag_backend, follower_policy,
        legacy_ues, legacy_policy
    Parameters that control the rollout:
        n_envs, prefix_cache, trainable_layers, trunk_cache_gib, trunk_overflow,
        episodes_per_epoch, total_epochs, temperature_start, temperature_end
    Parameters of PPO, shared by both roles (design §6, eqs. 8-10):
        gamma, gae_lambda, clip_range, value_clip_range, vf_coef, ent_coef, kl_coef,
        max_grad_norm, minibatch_size, normalize_advantages, weight_decay, lr_scheduler_type,
        warmup_ratio, shared_prefix_update, group_by_prefix, allowed_vocab_head
    Parameters per role (two-timescale Stackelberg learning):
        leader_learning_rate, follower_learning_rate, leader_ppo_epochs, follower_ppo_epochs,
        value_head_hidden
    Parameters of the expert warm start (TRL ``SFTTrainer``) and the critic's:
        expert_seeding, expert_leader, expert_episodes, expert_sft_epochs, expert_learning_rate,
        critic_warmup_episodes, critic_warmup_steps, critic_warmup_learning_rate
    Parameters of evaluation and logging:
        eval_every, eval_episodes, log_every, report_to, disable_tqdm
    Parameters of the run, its checkpoints and the Hub:
        output_dir, save_every, save_total_limit, resume_from_checkpoint, overwrite_output_dir,
        seed, num_threads, deterministic, mixed_precision, gradient_accumulation_steps,
        gradient_checkpointing, push_to_hub, hub_model_id, hub_private
    """

    # ------------------------------------------------------------------ game and text layer
    scenario: dict | str | None = play_field("scenario")
    history_ttis: int = play_field("history_ttis")
    prompt_format: int = play_field("prompt_format")
    use_chat_template: bool = play_field("use_chat_template")
    pag_backend: Literal["llguidance", "regex", "none"] = play_field("pag_backend")
    follower_policy: Literal["llm", "dictator", "s_aloha", "random"] = play_field(
        "follower_policy")
    legacy_ues: int = _help(
        "Legacy UEs per env beside the agentic ones (paper Table VII): the last this many "
        "active UEs by rank play legacy_policy and are not trained.", default=0)
    legacy_policy: Literal["s_aloha", "dictator", "random"] = play_field("legacy_policy")

    # ---------------------------------------------------------------------------- rollout
    n_envs: int = _help("B: environments simulated in lock step per process.", default=8)
    prefix_cache: bool = _help(
        "Reuse the KV cache of each meta-prompt (the prompt lines before the observation) "
        "across decisions while acting, rebuilt whenever an adapter's weights change; False = "
        "prefill every prompt in full (the same actions and log-probs, slower).", default=True)
    shared_prefix_update: bool = _help(
        "In the PPO update and the KL reference pass, run each distinct meta-prompt of a "
        "minibatch once (with gradients for the policy) and let every decision attend to it "
        "from its observation and action tokens; False = every decision's prompt in full "
        "(the same log-probs, values and gradients up to summation order; slower, more memory).",
        default=True)
    allowed_vocab_head: bool = _help(
        "In the PPO update and the KL reference pass, run the LM head on the tokens some "
        "position of the minibatch allows (PAG, eq. 13) only, not on the whole vocabulary: the "
        "same masked log-probs, entropies and gradients up to summation order; False = the "
        "full head (bit-identical to the update before this field).", default=True)
    group_by_prefix: bool = _help(
        "Sort each PPO pass's shuffled decisions by meta-prompt and prompt length before cutting "
        "minibatches (as transformers' group_by_length), then shuffle the minibatches: fewer "
        "distinct meta-prompts and less padding per minibatch (with shared_prefix_update, ~18 % "
        "fewer follower tokens at I = 3..5). Changes which decisions share a minibatch and its "
        "advantage normalisation; False = minibatches of a plain shuffle.", default=False)
    trainable_layers: int = play_field("trainable_layers")
    trunk_cache_gib: float = _help(
        "Budget of the frozen trunk's kept states per epoch (GiB); past it trunk_overflow "
        "decides.", default=2.0)
    trunk_overflow: Literal["recompute", "offload"] = _help(
        "Past trunk_cache_gib: 'recompute' keeps no more states and the update recomputes "
        "them (one trunk forward, no grad); 'offload' keeps them in CPU memory (on a CPU "
        "nothing changes).", default="recompute")
    episodes_per_epoch: int = _help(
        "E: episodes collected per epoch and process (a multiple of n_envs).", default=8)
    total_epochs: int = _help(
        "Training epochs (paper Fig. 5 converges by ~1250); 0 = no PPO: the starting policy "
        "(fresh adapters = the base model, init_adapters or expert seeding) is evaluated and "
        "saved.", default=1500)
    temperature_start: float = _help("Sampling temperature at epoch 0 (design §6).", default=1.0)
    temperature_end: float = _help(
        "Sampling temperature at the last epoch; decays linearly from temperature_start.",
        default=0.3)

    # --------------------------------------------------------------------- PPO (both roles)
    gamma: float = _help("Discount factor of both roles' returns (eqs. 4, 6).", default=0.99)
    gae_lambda: float = _help("lambda of GAE over TTIs (eq. 8).", default=0.95)
    clip_range: float = _help("epsilon of the clipped surrogate (eq. 10).", default=0.2)
    value_clip_range: float = _help("Clip range of the clipped value loss.", default=0.2)
    vf_coef: float = _help("Weight of the value loss.", default=0.5)
    ent_coef: float = _help("Weight of the masked-distribution entropy bonus.", default=0.01)
    kl_coef: float = _help(
        "beta: weight of the KL penalty to the reference (kl_reference).", default=0.02)
    kl_reference: Literal["base", "start"] = _help(
        "The KL reference: 'base' = the base model, adapters off (design §6); 'start' = frozen "
        "copies of the adapters PPO starts from (after expert seeding or init_adapters), the "
        "SFT reference of RLHF, so the penalty does not pull a seeded policy back to the base.",
        default="base")
    max_grad_norm: float = _help("Gradient clipping (global norm) per role.", default=1.0)
    minibatch_size: int = _help("Decisions per PPO minibatch (per process).", default=64)
    normalize_advantages: bool = _help("Normalise advantages per minibatch.", default=True)
    weight_decay: float = _help("AdamW weight decay.", default=0.0)
    lr_scheduler_type: Literal["cosine", "linear", "constant", "constant_with_warmup"] = _help(
        "transformers' get_scheduler of both roles' LRs, stepped once per epoch.",
        default="cosine")
    warmup_ratio: float = _help(
        "Share of total_epochs with a linear LR warm-up (rounded up to whole epochs).",
        default=0.0)

    # ---------------------------------------------------------- two-timescale, per role
    leader_learning_rate: float = _help(
        "AdamW LR of the leader adapter and value head; slower than the followers' "
        "(two-timescale Stackelberg learning, Thm. 2; assumed).", default=2e-5)
    follower_learning_rate: float = _help(
        "AdamW LR of the follower adapter and value head (assumed).", default=5e-5)
    leader_ppo_epochs: int = _help("K for the leader: PPO passes over each batch.", default=2)
    follower_ppo_epochs: int = _help("K for the followers: PPO passes per batch.", default=4)
    value_head_hidden: int = _help("Hidden width of the 3-layer ReLU value heads.", default=256)

    # ------------------------------------------------------------------- expert seeding
    expert_seeding: bool = _help(
        "Warm-start each adapter with TRL's SFTTrainer on expert prompt/completion pairs "
        "(paper §IV) before PPO.", default=False)
    expert_leader: Literal["max_weight", "round_robin"] = _help(
        "Expert leader: 'max_weight' or 'round_robin'.", default="max_weight")
    expert_episodes: int = _help("Episodes of expert play in the seeding dataset.", default=64)
    expert_sft_epochs: float = _help("SFT epochs over the expert dataset.", default=1.0)
    expert_follower_sft_epochs: float | None = _help(
        "SFT epochs over the followers' rows (I_t per leader row; obeying the DCM is learnt "
        "from far fewer than the leader needs); None = expert_sft_epochs.", default=None)
    expert_learning_rate: float = _help("SFT learning rate.", default=1e-4)
    expert_agreement_episodes: int = _help(
        "After seeding, greedy PAG play of this many held-out episodes per I of the scenario's "
        "ue_counts, printing the leader's per-RBG agreement with the expert and the followers' "
        "obedience (0 = skip).", default=4)
    expert_agreement_ttis: int = _help(
        "TTIs per agreement episode (0 = the scenario's episode length).", default=10)
    critic_warmup_episodes: int = _help(
        "Before PPO, play this many episodes of the starting policy (seeded or loaded) and fit "
        "each role's value head to their Monte-Carlo returns, the last n_envs held out for the "
        "explained variance (design §6.6); a multiple of n_envs, at least 2 x n_envs; 0 = off.",
        default=0)
    critic_warmup_steps: int = _help("Full-batch Adam steps of the critic warm-up.", default=1000)
    critic_warmup_learning_rate: float = _help("Adam LR of the critic warm-up.", default=1e-3)
    init_adapters: str | None = _help(
        "Start from the adapters and value heads of a saved policy directory or Hub repo id "
        "instead of fresh ones: 'agentic-mac seed's <output_dir>/seeded, a run's final/ or a "
        "checkpoint; None = fresh adapters (then expert_seeding, if set).", default=None)

    # ------------------------------------------------------------- evaluation, logging
    eval_every: int = _help("Evaluate every this many epochs (0 = only at the end).", default=50)
    eval_episodes: int = _help("Episodes per evaluation (greedy decoding under PAG).",
                               default=32)
    log_every: int = _help("Write metrics every this many epochs.", default=1)
    report_to: list[str] = _help(
        "accelerate trackers ('tensorboard', ...); empty = JSONL/CSV only.",
        default_factory=list)
    disable_tqdm: bool = _help(DISABLE_TQDM_HELP, default=False)

    # ------------------------------------------------------------- run, checkpoints, hub
    output_dir: str = _help("Run directory: checkpoints, metrics, final adapters.",
                            default="runs/stackelberg-ppo")
    save_every: int = _help("Checkpoint every this many epochs (0 = only at the end).",
                            default=10)
    save_total_limit: int = _help("Checkpoints kept (oldest deleted first).", default=2)
    resume_from_checkpoint: str | None = _help(RESUME_HELP, default=None)
    overwrite_output_dir: bool = _help(OVERWRITE_HELP, default=False)
    seed: int = _help("Seed of environments, sampling and initialisation.", default=0)
    num_threads: int | None = _help(
        "Torch CPU threads per process; None = OMP_NUM_THREADS when set (accelerate launch "
        "sets 1 unless given --num_cpu_threads_per_process), else the cores this process may "
        "use divided among the processes of the machine (LOCAL_WORLD_SIZE).", default=None)
    deterministic: bool = _help(
        "Deterministic torch kernels (torch.use_deterministic_algorithms with cuDNN's "
        "deterministic mode and cuBLAS's fixed workspace, design §6.11), for the same bytes "
        "from two runs of one config on a GPU. On the CPU the default kernels already give the "
        "same bytes at any fixed thread count (and a resumed run those of an uninterrupted "
        "one); there this changes nothing in the update.", default=False)
    mixed_precision: Literal["no", "fp16", "bf16"] = _help(
        "accelerate mixed precision: 'no', 'fp16' or 'bf16'.", default="no")
    gradient_accumulation_steps: int = _help("Minibatches per optimizer step.", default=1)
    gradient_checkpointing: bool = _help("Recompute activations in the backward pass.",
                                         default=False)
    push_to_hub: bool = _help("Push the final adapters to the Hub.", default=False)
    hub_model_id: str | None = _help("Hub repository id, e.g. 'user/agentic-mac-llama1b'.",
                                     default=None)
    hub_private: bool = _help("Create the Hub repository as private.", default=True)

    def __post_init__(self) -> None:
        check_play_fields(OWNER, self)
        if self.expert_leader not in ("max_weight", "round_robin"):
            _fail("expert_leader", self.expert_leader, "'max_weight' or 'round_robin'")
        for name in ("prefix_cache", "shared_prefix_update", "group_by_prefix",
                     "allowed_vocab_head", "disable_tqdm", "deterministic"):
            if not isinstance(getattr(self, name), bool):
                _fail(name, getattr(self, name), "True or False")
        from trainers.ppo import SCHEDULERS

        if self.lr_scheduler_type not in SCHEDULERS:
            _fail("lr_scheduler_type", self.lr_scheduler_type, f"one of {list(SCHEDULERS)}")
        check_real_in(OWNER, "warmup_ratio", self.warmup_ratio, 0.0, 1.0)
        if self.trunk_overflow not in ("recompute", "offload"):
            _fail("trunk_overflow", self.trunk_overflow, "'recompute' or 'offload'")
        if self.kl_reference not in ("base", "start"):
            _fail("kl_reference", self.kl_reference, "'base' or 'start'")
        if self.mixed_precision not in ("no", "fp16", "bf16"):
            _fail("mixed_precision", self.mixed_precision, "'no', 'fp16' or 'bf16'")
        for name in ("n_envs", "episodes_per_epoch", "minibatch_size",
                     "leader_ppo_epochs", "follower_ppo_epochs", "value_head_hidden",
                     "expert_episodes", "eval_episodes", "log_every", "save_total_limit",
                     "gradient_accumulation_steps"):
            check_int_at_least(OWNER, name, getattr(self, name), 1)
        for name in ("total_epochs", "legacy_ues",
                     "critic_warmup_episodes", "critic_warmup_steps",
                     "eval_every", "save_every",
                     "expert_agreement_episodes", "expert_agreement_ttis"):
            check_int_at_least(OWNER, name, getattr(self, name), 0)
        if self.num_threads is not None:
            check_int_at_least(OWNER, "num_threads", self.num_threads, 1)
        check_int_at_least(OWNER, "seed", self.seed, 0)
        if not self.output_dir:
            _fail("output_dir", self.output_dir, "a directory path")
        if self.critic_warmup_episodes and (self.critic_warmup_episodes % self.n_envs
                                            or self.critic_warmup_episodes < 2 * self.n_envs):
            _fail("critic_warmup_episodes", self.critic_warmup_episodes,
                  f"0 or a multiple of n_envs ({self.n_envs}) of at least {2 * self.n_envs}")
        if self.episodes_per_epoch % self.n_envs:
            _fail("episodes_per_epoch", self.episodes_per_epoch,
                  f"a multiple of n_envs ({self.n_envs})")
        for name in ("gamma", "gae_lambda"):
            check_real_in(OWNER, name, getattr(self, name), 0.0, 1.0)
        for name in ("vf_coef", "ent_coef", "kl_coef", "weight_decay", "trunk_cache_gib"):
            check_real_in(OWNER, name, getattr(self, name), 0.0, math.inf)
        for name in ("clip_range", "value_clip_range", "temperature_start", "temperature_end",
                     "max_grad_norm", "leader_learning_rate", "follower_learning_rate",
                     "expert_learning_rate", "expert_sft_epochs",
                     "critic_warmup_learning_rate"):
            check_positive(OWNER, name, getattr(self, name))
        self.resume_from_checkpoint = resume_option(OWNER, self.resume_from_checkpoint,
                                                    self.overwrite_output_dir)
        if self.expert_follower_sft_epochs is not None:
            check_positive(OWNER, "expert_follower_sft_epochs", self.expert_follower_sft_epochs)
        if self.init_adapters is not None and self.expert_seeding:
            _fail("init_adapters", self.init_adapters,
                  "None when expert_seeding is set (the adapters come from one or the other)")
        if self.init_adapters is not None and not self.init_adapters:
            _fail("init_adapters", self.init_adapters, "a policy directory or Hub repo id")
        if self.push_to_hub and not self.hub_model_id:
            _fail("hub_model_id", self.hub_model_id, "a repository id when push_to_hub is set")

    # ------------------------------------------------------------------------- derived
    def scenario_config(self) -> ScenarioConfig:
        return ScenarioConfig.from_dict(self.scenario)

    def text_config(self) -> TextConfig:
        return self.play_config().text_config()

    def play_config(self) -> PlayConfig:
        """What playing the trained policy needs (saved beside its adapters), its temperature
        the last epoch's."""
        return PlayConfig(**{f.name: getattr(self, f.name) for f in fields(PlayConfig)
                             if f.name != "temperature"}, temperature=self.temperature_end)

    def temperature(self, epoch: int) -> float:
        """Linear decay from temperature_start (epoch 0) to temperature_end (last epoch)."""
        progress = min(epoch / max(self.total_epochs - 1, 1), 1.0)
        return (1.0 - progress) * self.temperature_start + progress * self.temperature_end

    def learning_rate(self, role: str) -> float:
        return {"leader": self.leader_learning_rate,
                "follower": self.follower_learning_rate}[role]

    def sft_epochs(self, role: str) -> float:
        """SFT epochs of ``role``'s expert seeding."""
        if role == "follower" and self.expert_follower_sft_epochs is not None:
            return self.expert_follower_sft_epochs
        return self.expert_sft_epochs

    def warmup_steps(self) -> int:
        """Warm-up epochs of the LR schedule: ``ceil(warmup_ratio * total_epochs)``."""
        return math.ceil(self.warmup_ratio * self.total_epochs)

    def ppo_epochs(self, role: str) -> int:
        return {"leader": self.leader_ppo_epochs, "follower": self.follower_ppo_epochs}[role]
