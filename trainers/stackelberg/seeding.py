"""Expert seeding (paper §IV, design §6): SFT warm-start of each adapter on expert play.

:func:`expert_dataset` plays the numeric experts - a Max-Weight or Round-Robin leader and
obedient (Dictator) followers - inside :class:`TextStackelbergEnv`, so every prompt is exactly what
the LLM sees during PPO and every completion is the expert's action as text, fed back through
the text env (the trajectories are the experts' own). The data are TRL's prompt-completion
format: the prompt ends with the cue ("DCM:", "Action:" or a chat template's generation prompt)
and the completion is the bare action text, without EOS: ``SFTTrainer`` appends
``tokenizer.eos_token``, which is where the PAG grammar stops (action tokens, then EOS).

:func:`seed_adapter` trains one named LoRA adapter of a multi-adapter ``PeftModel`` with
``SFTTrainer`` (completion-only loss, the LM head on the labelled positions only); every other
adapter is frozen and left bit-identical.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import os
import random
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np

from grammars import ROLES
from textgame.config import ScenarioConfig
from textgame.policies import make_follower, make_leader
from textgame.prompts import TextConfig
from textgame.text_env import TextStackelbergEnv
from trainers.policy.chat import chat_render

if TYPE_CHECKING:
    from datasets import Dataset

    from trainers.stackelberg.config import StackelbergPPOConfig

EXPERT_LEADERS = ("max_weight", "round_robin")


def _check_count(name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} = {value!r} is invalid; allowed: an integer >= 1")


def expert_dataset(scenario: ScenarioConfig, *, leader: str = "max_weight", episodes: int = 64,
                   n_envs: int = 8, seed: int = 0, text_config: TextConfig | None = None,
                   render: Callable[[str, str], str] | None = None) -> dict[str, Dataset]:
    """``{"leader": ds, "follower": ds}``, each with string columns "prompt" and "completion".

    ``episodes`` are played in lock-step batches of up to ``n_envs`` envs; each batch gets its
    own child of ``SeedSequence(seed)`` for the game and for the policies (as
    :func:`textgame.runner.run_episodes`), so the data depend only on the arguments. Rows run
    batch by batch, TTI by TTI: the leader has one row per env and TTI (episodes x T), the
    followers one per active UE and TTI, in ``follower_slots`` order.
    """
    from datasets import Dataset

    if leader not in EXPERT_LEADERS:
        raise ValueError(f"leader = {leader!r} is invalid; allowed: {list(EXPERT_LEADERS)}")
    _check_count("episodes", episodes)
    _check_count("n_envs", n_envs)
    # strict: an expert action the text env cannot read is a bug, not a no-op to imitate
    config = dataclasses.replace(text_config or TextConfig(), strict=True)
    expert, obedient = make_leader(leader, scenario.cell), make_follower("dictator")
    rows = {role: {"prompt": [], "completion": []} for role in ROLES}
    remaining = episodes
    for batch_seed in np.random.SeedSequence(seed).spawn(math.ceil(episodes / n_envs)):
        b = min(n_envs, remaining)
        game_seed, policy_seed = batch_seed.spawn(2)
        env = TextStackelbergEnv(scenario, b, config, render)
        policy_rng = np.random.default_rng(policy_seed)
        expert.reset(b, env.max_ues, env.n_rbgs, policy_rng)
        obedient.reset(b, env.max_ues, env.n_rbgs, env.ucm_levels, policy_rng)
        prompts = env.reset(game_seed)
        while prompts is not None:
            actions = env.leader_texts(expert.act(env.game.leader_obs()))
            rows["leader"]["prompt"] += prompts
            rows["leader"]["completion"] += actions
            prompts = env.step_leader(actions)
            actions = env.follower_texts(*obedient.act(env.follower_obs))
            rows["follower"]["prompt"] += prompts
            rows["follower"]["completion"] += actions
            prompts = env.step_followers(actions).leader_prompts
        remaining -= b
    return {role: Dataset.from_dict(columns) for role, columns in rows.items()}


@contextlib.contextmanager
def _global_rngs_kept():
    """``SFTTrainer`` re-seeds Python's, numpy's and torch's global RNGs; the caller's are kept."""
    import torch

    python_state, numpy_state = random.getstate(), np.random.get_state()
    try:
        with torch.random.fork_rng(devices=range(torch.cuda.device_count())):
            yield
    finally:
        random.setstate(python_state)
        np.random.set_state(numpy_state)


def sft_config(output_dir: str | os.PathLike, *, epochs: float = 1.0,
               learning_rate: float = 1e-4, batch_size: int = 8, seed: int = 0, **kwargs):
    """The ``SFTConfig`` of :func:`seed_adapter`; ``kwargs`` override any field set here.

    Completion-only loss (the action and EOS, never the prompt), no truncation (it would cut the
    completion, which sits at the end), no checkpoints, no trackers, and fp32 without activation
    checkpointing - TRL's defaults (bf16, checkpointing) assume a large model on a GPU.
    """
    from trl import SFTConfig

    settings = dict(
        output_dir=str(output_dir), num_train_epochs=epochs, learning_rate=learning_rate,
        per_device_train_batch_size=batch_size, seed=seed, data_seed=seed,
        completion_only_loss=True, max_length=None, save_strategy="no", report_to=[],
        bf16=False, activation_checkpointing=False)
    return SFTConfig(**{**settings, **kwargs})


def _labelled_loss_trainer():
    """``SFTTrainer`` whose loss runs the LM head on the labelled (completion) positions only.

    TRL's loss outside CUDA/XPU scores every position over the whole vocabulary (log-probs,
    entropy and top-1 for a ~3 % completion share) and recomputes the head in the backward;
    here the decoder's final states are gathered at the positions whose next token is
    labelled, and the head, the cross-entropy, the entropy and top-1 accuracy (TRL's
    ``mean_token_accuracy``/``entropy`` logs) run on those n rows only: the same loss and
    gradients, a fraction of the work. With adapters on the top layers only, the backward
    stops at the first of them (nothing below needs a gradient).
    """
    import torch
    from trl import SFTTrainer

    class LabelledLossSFTTrainer(SFTTrainer):
        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            labels = inputs["labels"]  # (B, L), -100 where nothing is learnt
            peft = self.accelerator.unwrap_model(model)
            base = peft.get_base_model()
            extra = {k: inputs[k] for k in ("attention_mask", "position_ids") if k in inputs}
            hidden = base.get_decoder()(input_ids=inputs["input_ids"], use_cache=False,
                                        **extra).last_hidden_state  # (B, L, H)
            target = labels[:, 1:]  # position t predicts token t + 1
            keep = target != -100  # (B, L - 1)
            logits = base.get_output_embeddings()(hidden[:, :-1][keep]).float()  # (n, V)
            logp = torch.log_softmax(logits, dim=-1)
            token_logp = logp.gather(-1, target[keep][:, None]).squeeze(-1)  # (n,)
            count = keep.sum() if num_items_in_batch is None else num_items_in_batch
            loss = -token_logp.sum() / torch.as_tensor(count).clamp(min=1)
            if self.args.average_tokens_across_devices and num_items_in_batch is not None:
                loss = loss * self.accelerator.num_processes
            with torch.no_grad():
                n = self.accelerator.gather_for_metrics(keep.sum()).sum()
                entropy = -(logp.exp() * logp.nan_to_num(neginf=0.0)).sum(-1).sum()
                correct = (logits.argmax(-1) == target[keep]).sum()
                entropy = self.accelerator.gather_for_metrics(entropy).sum()
                correct = self.accelerator.gather_for_metrics(correct).sum()
                mode = "train" if model.training else "eval"
                self._metrics[mode]["entropy"].append(float(entropy / n) if n else 0.0)
                self._metrics[mode]["mean_token_accuracy"].append(
                    float(correct / n) if n else 0.0)
            return (loss, None) if return_outputs else loss

    return LabelledLossSFTTrainer


def seed_adapter(model, tokenizer, dataset: Dataset, *, adapter_name: str,
                 output_dir: str | os.PathLike, epochs: float = 1.0,
                 learning_rate: float = 1e-4, batch_size: int = 8, seed: int = 0,
                 **kwargs) -> dict[str, Any]:
    """Warm-start the LoRA adapter ``adapter_name`` of ``model`` (a ``PeftModel``) by SFT.

    ``SFTTrainer`` gets the ``PeftModel`` itself and no ``peft_config`` (TRL refuses both
    together); ``set_adapter`` first makes ``adapter_name`` active and its parameters the only
    trainable ones, so the optimizer never holds another adapter. Afterwards the previously
    active adapter, every parameter's ``requires_grad`` and dtype (TRL casts a quantized model's
    trainable parameters to bf16), the train/eval mode and the global RNGs (which TRL re-seeds
    with ``seed``) are restored. ``kwargs`` go to :func:`sft_config` (e.g. ``bf16``,
    ``activation_checkpointing``, ``logging_steps``). Returns the trainer's metrics plus
    ``loss_history`` and ``token_accuracy_history``: the loss and the completion tokens' top-1
    accuracy of every logged step.
    """
    if adapter_name not in model.peft_config:
        raise ValueError(f"adapter_name = {adapter_name!r} is invalid; allowed: one of the "
                         f"model's adapters {sorted(model.peft_config)}")
    args = sft_config(output_dir, epochs=epochs, learning_rate=learning_rate,
                      batch_size=batch_size, seed=seed, **kwargs)
    active, training = model.active_adapter, model.training
    kept = {name: (p.requires_grad, p.dtype) for name, p in model.named_parameters()}
    model.set_adapter(adapter_name)
    try:
        with _global_rngs_kept():
            trainer = _labelled_loss_trainer()(model=model, args=args, train_dataset=dataset,
                                               processing_class=tokenizer)
            metrics = dict(trainer.train().metrics)
    finally:
        model.set_adapter(active)
        for name, p in model.named_parameters():  # TRL casts trainable params to bf16 (QLoRA)
            requires_grad, dtype = kept[name]
            if p.dtype != dtype:
                p.data = p.data.to(dtype)
            p.requires_grad_(requires_grad)
        model.train(training)
    logs = trainer.state.log_history
    metrics["loss_history"] = [log["loss"] for log in logs if "loss" in log]
    metrics["token_accuracy_history"] = [log["mean_token_accuracy"] for log in logs
                                         if "mean_token_accuracy" in log]
    return metrics


def seed_policy(model, tokenizer, config: StackelbergPPOConfig,
                output_dir: str | os.PathLike) -> dict[str, dict[str, Any]]:
    """Expert data from ``config`` and SFT of both adapters; ``{role: metrics}``.

    Prompts go through the tokenizer's chat template when it has one and
    ``config.use_chat_template`` is set, as in the rollout. Each role trains in
    ``output_dir/<role>`` with the config's seeding epochs (per role), learning rate, seed,
    precision and gradient checkpointing, logging every step (the loss and token-accuracy
    histories are whole learning curves).
    """
    render = chat_render(tokenizer) if config.use_chat_template else None
    datasets = expert_dataset(
        config.scenario_config(), leader=config.expert_leader, episodes=config.expert_episodes,
        n_envs=config.n_envs, seed=config.seed, text_config=config.text_config(), render=render)
    precision = {"bf16": config.mixed_precision == "bf16",
                 "fp16": config.mixed_precision == "fp16"}
    return {role: seed_adapter(
        model, tokenizer, datasets[role], adapter_name=role,
        output_dir=os.path.join(output_dir, role), epochs=config.sft_epochs(role),
        learning_rate=config.expert_learning_rate, seed=config.seed,
        activation_checkpointing=config.gradient_checkpointing, logging_steps=1,
        **precision)
        for role in ROLES}
