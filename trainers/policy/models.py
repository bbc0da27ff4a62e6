"""The policy model (design §6): one base LM, LoRA adapters ``leader``/``follower``, value heads.

:func:`~trainers.policy.base_model.load_base_model` loads the base from TRL's ``ModelConfig``
(bf16/fp32, or 4-bit NF4 = QLoRA). :class:`StackelbergPolicy` wraps it with PEFT and one fp32
value head per role, read off the final hidden state of the last prompt token, and holds the
adapters' lifecycle (roles, saving, loading, the frozen KL reference); its forwards are the
mixin :class:`~trainers.policy.forwards.PolicyForwards`. Rollout calls :meth:`~StackelbergPolicy.
generate_actions` (PAG-constrained sampling + the prompts' values); PPO calls
:meth:`~StackelbergPolicy.forward_actions` (log-prob logits of recorded actions + values) and
:meth:`~StackelbergPolicy.reference_logits` (the KL reference: the base with adapters off, or
frozen copies of the adapters PPO started from after :meth:`~StackelbergPolicy.freeze_reference`),
both computing each distinct meta-prompt of a minibatch once when given the rows' prefix lengths.

Roles. Exactly one adapter is active at a time (PEFT ``set_adapter``). Both adapters' LoRA
parameters always keep ``requires_grad=True``; a role is isolated because (a) only the active
adapter and that role's head take part in a forward, so the other role's parameters get no
gradient, and (b) each role's optimizer holds :meth:`~StackelbergPolicy.role_parameters` of that
role only. With gradient checkpointing the backward pass re-runs the forward with the adapter
active *then*, so ``forward_actions`` leaves its role active, and a backward pass after a switch
raises instead of silently mixing adapters.
"""

from __future__ import annotations

import json
import os
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from peft import (
    LoraConfig,
    PeftModel,
    get_peft_model,
    get_peft_model_state_dict,
    set_peft_model_state_dict,
)
from safetensors.torch import load_file, save_file
from torch import nn
from transformers import PreTrainedModel
from transformers.modeling_layers import GradientCheckpointingLayer
from trl import ModelConfig

from grammars import ROLES
from trainers.policy.base_model import load_base_model, lora_config, seeded, value_head
from trainers.policy.forwards import PolicyForwards, reference_adapter
from trainers.policy.prefix_cache import PrefixCache
from trainers.policy.trunk import (
    TrunkStore,
    adapter_trainable_layers,
    check_saved_trainable_layers,
    decoder_layers,
    top_layer_lora,
)
from trainers.runs.hub import VALUE_HEADS, VALUE_HEADS_CONFIG, download

if TYPE_CHECKING:  # training only: playing a saved policy needs no trainer config
    from trainers.stackelberg.config import StackelbergPPOConfig


def _adapter_of(name: str) -> str | None:
    """The role that owns parameter ``name`` of the PEFT model, or None for a base parameter."""
    parts = name.split(".")
    if any(p.startswith("lora_") or p == "modules_to_save" for p in parts):
        return next((p for p in parts if p in ROLES), None)
    return None


# ------------------------------------------------------------------------------ the policy
class StackelbergPolicy(PolicyForwards, nn.Module):
    """One base model, LoRA adapters ``leader``/``follower`` and an fp32 value head per role.

    ``base_model`` is modified in place (PEFT injects the LoRA layers). Both adapters start as
    LoRA init (B = 0), so at init each role's policy is the base model. ``seed`` draws the LoRA
    A matrices and the heads' weights. ``trainable_layers`` = k > 0 puts both adapters on the
    top k decoder layers only (:mod:`trainers.policy.trunk`: the layers below are the frozen
    trunk, computed once per decision); 0 = every layer.
    """

    def __init__(self, base_model: PreTrainedModel, lora: LoraConfig, *,
                 value_head_hidden: int = 256, seed: int = 0, trainable_layers: int = 0) -> None:
        super().__init__()
        if lora.task_type != "CAUSAL_LM":
            raise ValueError(f"lora.task_type = {lora.task_type!r} is invalid; allowed: "
                             "'CAUSAL_LM'")
        lora = top_layer_lora(lora, base_model, trainable_layers)
        with seeded(seed):
            peft_model = get_peft_model(base_model, lora, adapter_name=ROLES[0])
            for role in ROLES[1:]:
                peft_model.add_adapter(role, lora)
            heads = nn.ModuleDict({role: value_head(base_model.config.get_text_config()
                                                    .hidden_size, value_head_hidden)
                                   for role in ROLES})
        self._attach(peft_model, heads)

    def _attach(self, peft_model: PeftModel, heads: nn.ModuleDict) -> None:
        self.peft_model = peft_model
        self.value_heads = heads.to(peft_model.get_base_model().device)
        adapters = {role: [] for role in ROLES}
        for name, parameter in peft_model.named_parameters():
            role = _adapter_of(name)
            if role is not None:
                adapters[role].append(parameter)
        if not all(adapters.values()):
            raise ValueError(f"the PEFT model has no parameters for adapters "
                             f"{[r for r in ROLES if not adapters[r]]}")
        self._adapters = adapters
        self._reference: list[nn.Parameter] = []  # frozen adapter copies (freeze_reference)
        self.prefix_cache = PrefixCache()  # meta-prompt KV states while acting, per role
        n_layers = peft_model.get_base_model().config.get_text_config().num_hidden_layers
        self.trainable_layers = adapter_trainable_layers(peft_model.peft_config[ROLES[0]],
                                                         n_layers)
        self.boundary = n_layers - self.trainable_layers if self.trainable_layers else 0
        if self.boundary:
            decoder_layers(self._decoder())  # a Llama-style decoder, or one clear error
        self.trunk = TrunkStore()  # boundary states of the frozen trunk (trainable_layers)
        self.role = ROLES[0]
        peft_model.set_adapter(self.role)
        self._all_adapters_trainable()

    @classmethod
    def from_model_config(cls, model_config: ModelConfig,
                          config: StackelbergPPOConfig | None = None, *,
                          device_map=None) -> StackelbergPolicy:
        """Base from ``model_config``, fresh adapters; head width, seed and gradient
        checkpointing from ``config`` (design defaults when None)."""
        if config is None:
            from trainers.stackelberg.config import StackelbergPPOConfig

            config = StackelbergPPOConfig()
        base = load_base_model(model_config, device_map=device_map,
                               gradient_checkpointing=config.gradient_checkpointing)
        policy = cls(base, lora_config(model_config), value_head_hidden=config.value_head_hidden,
                     seed=config.seed, trainable_layers=config.trainable_layers)
        policy.trunk = TrunkStore(config.trunk_cache_gib, config.trunk_overflow)
        return policy

    @classmethod
    def from_pretrained(cls, base_model: PreTrainedModel | ModelConfig | str,
                        path_or_repo_id: str | os.PathLike, *, revision: str | None = None,
                        token: str | None = None) -> StackelbergPolicy:
        """Both adapters and heads written by :meth:`save_adapters`, from a local directory or a
        Hub repo id, on ``base_model`` (a model, which is modified in place, a ``ModelConfig``
        or a model name/path loaded in fp32). The adapters are trainable (resume)."""
        folder = download(path_or_repo_id, revision=revision, token=token)
        if isinstance(base_model, (str, os.PathLike)):
            base_model = ModelConfig(model_name_or_path=str(base_model))
        if isinstance(base_model, ModelConfig):
            base_model = load_base_model(base_model)
        peft_model = PeftModel.from_pretrained(base_model, folder / ROLES[0],
                                               adapter_name=ROLES[0], is_trainable=True)
        for role in ROLES[1:]:
            peft_model.load_adapter(folder / role, adapter_name=role, is_trainable=True)
        spec = json.loads((folder / VALUE_HEADS_CONFIG).read_text())
        heads = nn.ModuleDict({role: value_head(spec["hidden_size"], spec["width"])
                               for role in spec["roles"]})
        heads.load_state_dict(load_file(folder / VALUE_HEADS))
        policy = cls.__new__(cls)
        nn.Module.__init__(policy)
        policy._attach(peft_model, heads)
        return policy

    def save_adapters(self, directory: str | os.PathLike) -> None:
        """``leader/`` and ``follower/`` (PEFT adapter dirs), ``value_heads.safetensors`` and
        ``value_heads.json``. Writes in place; checkpoints make it atomic around this call."""
        directory = Path(directory)
        self.peft_model.save_pretrained(directory, selected_adapters=list(ROLES))
        state = {k: v.detach().cpu().contiguous() for k, v in self.value_heads.state_dict().items()}
        save_file(state, directory / VALUE_HEADS)
        first = self.value_heads[ROLES[0]][0]
        spec = {"roles": list(ROLES), "hidden_size": first.in_features,
                "width": first.out_features, "layers": 3, "activation": "relu",
                "dtype": "float32", "input": "final hidden state of the last prompt token"}
        (directory / VALUE_HEADS_CONFIG).write_text(json.dumps(spec, indent=2) + "\n")

    def load_adapter_weights(self, directory: str | os.PathLike) -> None:
        """Copy the adapters and heads of :meth:`save_adapters` into this policy in place: the
        parameters (hence the optimizers holding them) stay the same objects. For resuming."""
        directory = Path(directory)
        check_saved_trainable_layers("adapters", directory, self.trainable_layers)
        for role in ROLES:
            state = load_file(directory / role / "adapter_model.safetensors")
            result = set_peft_model_state_dict(self.peft_model, state, adapter_name=role)
            if getattr(result, "unexpected_keys", None):
                raise ValueError(f"{directory / role} holds weights this policy does not have: "
                                 f"{result.unexpected_keys[:3]}")
        self.value_heads.load_state_dict(load_file(directory / VALUE_HEADS))
        self.prefix_cache.invalidate()

    # ------------------------------------------------------------------ the KL reference
    def freeze_reference(self, directory: str | os.PathLike | None = None) -> None:
        """Make frozen copies of both adapters (``leader_ref``/``follower_ref``) the KL
        reference instead of the base (``kl_reference: start``): the adapters as they are now,
        or as saved under ``directory/<role>_ref`` (a checkpoint's)."""
        for role in ROLES:
            name = reference_adapter(role)
            if name not in self.peft_model.peft_config:
                self.peft_model.add_adapter(name, self.peft_model.peft_config[role])
            state = (get_peft_model_state_dict(self.peft_model, adapter_name=role)
                     if directory is None
                     else load_file(Path(directory) / name / "adapter_model.safetensors"))
            set_peft_model_state_dict(self.peft_model, state, adapter_name=name)
        names = {f".{reference_adapter(role)}." for role in ROLES}
        self._reference = [p for n, p in self.peft_model.named_parameters()
                           if any(part in n for part in names)]
        self.peft_model.set_adapter(self.role)
        self._all_adapters_trainable()  # and the reference frozen

    def save_reference(self, directory: str | os.PathLike) -> None:
        """``directory/<role>_ref/`` of :meth:`freeze_reference` (nothing when the base is)."""
        if self.has_frozen_reference:
            self.peft_model.save_pretrained(directory, selected_adapters=[
                reference_adapter(role) for role in ROLES])

    @property
    def has_frozen_reference(self) -> bool:
        return reference_adapter(ROLES[0]) in self.peft_model.peft_config

    @property
    def device(self) -> torch.device:
        return self.peft_model.get_base_model().device

    @property
    def vocab_size(self) -> int:
        """V: the model's output rows, which the grammars are compiled for."""
        return self.peft_model.get_base_model().config.get_text_config().vocab_size

    def _decoder(self) -> nn.Module:
        return self.peft_model.get_base_model().get_decoder()  # not an attribute: no 2nd copy

    # ------------------------------------------------------------------------------ roles
    def _all_adapters_trainable(self) -> None:
        # PEFT's set_adapter freezes the inactive adapters; keep every role's set stable instead
        # (and a frozen KL reference frozen).
        for parameters in self._adapters.values():
            for parameter in parameters:
                parameter.requires_grad_(True)
        for parameter in self._reference:
            parameter.requires_grad_(False)

    def set_role(self, role: str) -> None:
        """Make ``role``'s adapter the active one."""
        if role not in ROLES:
            raise ValueError(f"role = {role!r} is invalid; allowed: one of {list(ROLES)}")
        if role != self.role:
            self.peft_model.set_adapter(role)
            self._all_adapters_trainable()
            self.role = role

    @contextmanager
    def use(self, role: str):
        """``role``'s adapter active inside the block, the previous one after it."""
        previous = self.role
        self.set_role(role)
        try:
            yield self
        finally:
            self.set_role(previous)

    def role_parameters(self, role: str) -> list[nn.Parameter]:
        """What ``role``'s optimizer holds: its adapter's parameters and its value head's."""
        if role not in ROLES:
            raise ValueError(f"role = {role!r} is invalid; allowed: one of {list(ROLES)}")
        return [*self._adapters[role], *self.value_heads[role].parameters()]

    @contextmanager
    def _evaluating(self):
        training = self.training
        self.eval()  # no LoRA dropout while acting
        try:
            yield
        finally:
            self.train(training)

    def ppo_mode(self) -> StackelbergPolicy:
        """Eval mode (no dropout: the first PPO pass recomputes the sampling log-probs
        exactly) in which gradient checkpointing still works: transformers checkpoints a decoder
        layer only in training mode, so those layers alone are put in it (their attention and
        LoRA dropouts are submodules and stay off)."""
        self.eval()
        for module in self.peft_model.modules():
            if isinstance(module, GradientCheckpointingLayer) and module.gradient_checkpointing:
                module.training = True
        return self

    def adapter_stamp(self, role: str) -> tuple:
        """Changes whenever ``role``'s adapter weights may have: their storages and in-place
        version counters (optimizer steps, ``load_state_dict`` and ``copy_`` bump them)."""
        return tuple((p.data_ptr(), p._version) for p in self._adapters[role])
