"""The policy model (design §6): one base LM, LoRA adapters ``leader``/``follower``, value heads.

:func:`load_base_model` loads the base from TRL's ``ModelConfig`` (bf16/fp32, or 4-bit NF4 =
QLoRA). :class:`StackelbergPolicy` wraps it with PEFT and one fp32 value head per role, read off
the final hidden state of the last prompt token. Rollout calls :meth:`~StackelbergPolicy.
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

import dataclasses
import functools
import json
import os
from collections.abc import Sequence
from contextlib import contextmanager, nullcontext
from pathlib import Path

import torch
from peft import (
    LoraConfig,
    PeftModel,
    get_peft_model,
    get_peft_model_state_dict,
    prepare_model_for_kbit_training,
    set_peft_model_state_dict,
)
from safetensors.torch import load_file, save_file
from torch import nn
from transformers import AutoModelForCausalLM, PreTrainedModel
from transformers.modeling_layers import GradientCheckpointingLayer
from trl import ModelConfig, get_peft_config, get_quantization_config

from grammars import ROLES
from trainers.cache_api import cache_kwargs
from trainers.pag.sampler import ActionGrammar, ActionSample, sample_constrained
from trainers.policy.encoding import left_pad
from trainers.policy.prefix_cache import (
    PrefixCache,
    action_inputs,
    keep_cache_under_checkpointing,
    rows_and_cuts,
)
from trainers.policy.trunk import (
    TrunkCapture,
    TrunkStore,
    adapter_trainable_layers,
    check_saved_trainable_layers,
    decoder_layers,
    run_layers,
    top_layer_lora,
    trunk_states,
)
from trainers.runs.hub import VALUE_HEADS, VALUE_HEADS_CONFIG, download
from trainers.stackelberg.config import StackelbergPPOConfig

_DTYPES = ("auto", "bfloat16", "float16", "float32")
_CHECKPOINTING = {"use_reentrant": False}  # frozen embeddings: no input-grad hook needed


# ------------------------------------------------------------------------------ base model
def _torch_dtype(value):
    if value is None or value == "auto" or isinstance(value, torch.dtype):
        return value
    if value in _DTYPES:
        return getattr(torch, value)
    raise ValueError(f"ModelConfig.dtype = {value!r} is invalid; allowed: one of {list(_DTYPES)}")


def kbit_device_map() -> dict[str, str]:
    """Whole quantised model on this process's device (TRL 1.16 no longer has a helper)."""
    from accelerate import PartialState

    return {"": str(PartialState().device)}


def load_base_model(model_config: ModelConfig, *, gradient_checkpointing: bool = False,
                    device_map=None) -> PreTrainedModel:
    """The base ``AutoModelForCausalLM`` of ``model_config`` (a local directory or a Hub id).

    ``load_in_4bit``/``load_in_8bit`` quantise with bitsandbytes (TRL's
    ``get_quantization_config``), place the model with :func:`kbit_device_map` unless
    ``device_map`` is given, and prepare it for k-bit training (norms in fp32, base frozen).
    Unquantised bases load on the CPU (``device_map=None``) for accelerate to place.
    """
    if not model_config.model_name_or_path:
        raise ValueError("ModelConfig.model_name_or_path is empty; allowed: a local model "
                         "directory or a Hub model id")
    quantization = get_quantization_config(model_config)
    if quantization is not None and device_map is None:
        device_map = kbit_device_map()
    model = AutoModelForCausalLM.from_pretrained(
        model_config.model_name_or_path, revision=model_config.model_revision,
        dtype=_torch_dtype(model_config.dtype),
        attn_implementation=model_config.attn_implementation,
        quantization_config=quantization, device_map=device_map,
        trust_remote_code=getattr(model_config, "trust_remote_code", False))
    if quantization is not None:
        return prepare_model_for_kbit_training(
            model, use_gradient_checkpointing=gradient_checkpointing,
            gradient_checkpointing_kwargs=_CHECKPOINTING)
    if gradient_checkpointing:
        model.activation_checkpointing_enable(activation_checkpointing_kwargs=_CHECKPOINTING)
    return model


def lora_config(model_config: ModelConfig) -> LoraConfig:
    """TRL's ``get_peft_config``; the policy always has adapters, whatever ``use_peft`` says."""
    if model_config.lora_task_type != "CAUSAL_LM":
        raise ValueError(f"ModelConfig.lora_task_type = {model_config.lora_task_type!r} is "
                         "invalid; allowed: 'CAUSAL_LM'")
    return get_peft_config(dataclasses.replace(model_config, use_peft=True))


# ----------------------------------------------------------------------------- value heads
def value_head(hidden_size: int, width: int) -> nn.Sequential:
    """3-layer ReLU MLP hidden -> width -> width -> 1, fp32 (design §6)."""
    return nn.Sequential(nn.Linear(hidden_size, width), nn.ReLU(), nn.Linear(width, width),
                         nn.ReLU(), nn.Linear(width, 1)).float()


@contextmanager
def _seeded(seed: int):
    """Adapter and head initialisation from ``seed`` without touching the global CPU/CUDA RNGs."""
    with torch.random.fork_rng(devices=[]):
        torch.random.default_generator.manual_seed(seed)
        yield


@contextmanager
def _last_prompt_hidden(decoder: nn.Module, index: int):
    """Yields a list that receives the decoder's final hidden state (B, H) at ``index``.

    A forward hook on the decoder (the backbone under ``lm_head``) keeps one position of the
    first call only (the prefill when sampling), so no path materialises every layer's states.
    """
    captured: list[torch.Tensor] = []

    def hook(module, args, output):
        if not captured:
            captured.append(output[0][:, index])

    handle = decoder.register_forward_hook(hook)
    try:
        yield captured
    finally:
        handle.remove()


def reference_adapter(role: str) -> str:
    """The PEFT adapter holding ``role``'s frozen KL reference (``kl_reference: start``)."""
    return f"{role}_ref"


def _adapter_of(name: str) -> str | None:
    """The role that owns parameter ``name`` of the PEFT model, or None for a base parameter."""
    parts = name.split(".")
    if any(p.startswith("lora_") or p == "modules_to_save" for p in parts):
        return next((p for p in parts if p in ROLES), None)
    return None


# ------------------------------------------------------------------------------ the policy
class StackelbergPolicy(nn.Module):
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
        with _seeded(seed):
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
        config = config or StackelbergPPOConfig()
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

    # ------------------------------------------------------------------------- forwards
    def prompt_values_from_hidden(self, role: str, hidden: torch.Tensor) -> torch.Tensor:
        """(B,) fp32 values of ``role``'s head on final hidden states (B, H), autocast off."""
        with torch.autocast(hidden.device.type, enabled=False):
            return self.value_heads[role](hidden.float()).squeeze(-1)

    def _forward(self, input_ids, attention_mask, action_tokens, action_lengths,
                 prefix_lengths=None, trunk=None, vocab_ids=None):
        """Logits (B, T, V) fp32 and the last prompt token's final hidden state (B, H); with
        ``prefix_lengths`` each distinct meta-prompt runs once (:func:`action_inputs`); with
        ``trunk`` (each row's boundary states) only the layers above the trunk run; with
        ``vocab_ids`` (U,) the LM head scores those tokens only: logits (B, T, U)."""
        if (trunk is not None and self.boundary) or vocab_ids is not None:
            return self._forward_hidden(input_ids, attention_mask, action_tokens, action_lengths,
                                        prefix_lengths, trunk if self.boundary else None,
                                        vocab_ids)
        steps = action_tokens.shape[1]
        with keep_cache_under_checkpointing(self.peft_model, prefix_lengths is not None) as keeps:
            ids, mask, position, past, _ = action_inputs(
                self._decoder(), input_ids, attention_mask, action_tokens, action_lengths,
                prefix_lengths if keeps else None)
            with _last_prompt_hidden(self._decoder(), ids.shape[1] - steps - 1) as hidden:
                out = self.peft_model(input_ids=ids, attention_mask=mask, position_ids=position,
                                      use_cache=False, logits_to_keep=steps + 1,
                                      **cache_kwargs(self.peft_model, past))
        return out.logits[:, :steps].float(), hidden[0]  # (B, T, V): P-1+t predicts token t

    def _forward_hidden(self, input_ids, attention_mask, action_tokens, action_lengths,
                        prefix_lengths, trunk, vocab_ids):
        """:meth:`_forward` through the decoder itself: on the frozen trunk's states (layers
        [boundary, L) only) when ``trunk`` is given, the final norm, and the LM head on the T
        scored positions (and the ``vocab_ids`` tokens) only."""
        decoder, steps = self._decoder(), action_tokens.shape[1]
        window = slice(self.boundary if trunk is not None else 0, len(decoder_layers(decoder)))
        with keep_cache_under_checkpointing(self.peft_model, prefix_lengths is not None) as keeps:
            ids, mask, position, past, embeds = action_inputs(
                decoder, input_ids, attention_mask, action_tokens, action_lengths,
                prefix_lengths if keeps else None, trunk=trunk,
                boundary=window.start)
            inputs = {"input_ids": ids} if embeds is None else {"inputs_embeds": embeds}
            with run_layers(decoder, window):
                hidden = decoder(**inputs, attention_mask=mask, position_ids=position,
                                 use_cache=False, **cache_kwargs(decoder, past)).last_hidden_state
        logits = self._lm_head(hidden[:, -steps - 1:-1], vocab_ids)  # P-1+t predicts token t
        return logits.float(), hidden[:, -steps - 1]

    def _lm_head(self, hidden: torch.Tensor, vocab_ids: torch.Tensor | None) -> torch.Tensor:
        """Logits (..., V) of ``hidden`` (..., H), or (..., U) of the tokens ``vocab_ids``."""
        head = self.peft_model.get_base_model().get_output_embeddings()
        if vocab_ids is None:
            return head(hidden)
        bias = None if getattr(head, "bias", None) is None else head.bias[vocab_ids]
        return torch.nn.functional.linear(hidden, head.weight[vocab_ids], bias)

    @torch.no_grad()
    def trunk_rows(self, rows: Sequence[int | None], prompts: Sequence[Sequence[int]],
                   actions: Sequence[Sequence[int]]) -> list[torch.Tensor] | None:
        """Each decision's boundary states (P + n - 1, H) from :attr:`trunk` (ids of the
        rollout's ``trunk_out``), recomputed by one trunk forward for those it dropped; None
        without a frozen trunk."""
        if not self.boundary or not rows or any(r is None for r in rows):
            return None
        out = [self.trunk.full(r, self.device) for r in rows]
        missing = [k for k, t in enumerate(out) if t is None]
        if missing:
            ids, mask = left_pad([list(prompts[k]) + list(actions[k][:-1]) for k in missing],
                                 0, self.device)
            states = trunk_states(self._decoder(), self.boundary, ids, mask)
            for k, row, m in zip(missing, states, mask.sum(-1).tolist(), strict=True):
                out[k] = row[row.shape[0] - m:]
        return out

    def forward_actions(self, role: str, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                        action_tokens: torch.Tensor, action_lengths: torch.Tensor,
                        prefix_lengths: Sequence[int] | None = None,
                        trunk: list[torch.Tensor] | None = None,
                        vocab_ids: torch.Tensor | None = None,
                        ) -> tuple[torch.Tensor, torch.Tensor]:
        """``(logits (B, T, V) fp32, values (B,) fp32)`` of ``role`` in one forward.

        ``input_ids``/``attention_mask`` (B, P) are the left-padded prompts, ``action_tokens``
        (B, T) the recorded actions (EOS-padded past ``action_lengths`` (B,)). ``logits[:, t]``
        predicts ``action_tokens[:, t]``; values come from the last prompt token. ``role`` stays
        active afterwards (see the module docstring); LoRA dropout follows train/eval mode.
        ``prefix_lengths`` (B,): each row's meta-prompt tokens, computed once per distinct
        meta-prompt (:func:`~trainers.policy.prefix_cache.action_inputs`); None = every row in
        full. ``trunk`` (B,) of (P_b + n_b - 1, H): the rows' frozen-trunk states
        (:meth:`trunk_rows`), on which only the top ``trainable_layers`` run (the same
        log-probs and values up to summation order); None = the whole model. ``vocab_ids``
        (U,) sorted token ids: the LM head scores those only, logits (B, T, U) - all a masked
        distribution needs when they hold every allowed token (eq. 13: the rest are -inf).
        """
        self.set_role(role)
        logits, hidden = self._forward(input_ids, attention_mask, action_tokens, action_lengths,
                                       prefix_lengths, trunk, vocab_ids)
        if logits.requires_grad and (
                self.peft_model.get_base_model().is_activation_checkpointing):
            for tensor in (logits, hidden):  # their grads come before any layer's recompute
                tensor.register_hook(functools.partial(self._check_role, role))
        return logits, self.prompt_values_from_hidden(role, hidden)

    def _check_role(self, role: str, grad: torch.Tensor) -> None:
        if self.role != role:
            raise RuntimeError(
                f"backward of forward_actions({role!r}) while the {self.role!r} adapter is "
                "active: gradient checkpointing would recompute the layers with the wrong "
                f"adapter; backpropagate before set_role/use({self.role!r})")

    @torch.no_grad()
    def reference_logits(self, role: str, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                         action_tokens: torch.Tensor, action_lengths: torch.Tensor,
                         prefix_lengths: Sequence[int] | None = None,
                         trunk: list[torch.Tensor] | None = None,
                         vocab_ids: torch.Tensor | None = None) -> torch.Tensor:
        """Logits (B, T, V) fp32 of ``role``'s KL reference: the base with every adapter
        disabled, the same model for both roles (or ``role``'s frozen copy after
        :meth:`freeze_reference`) (``role`` keeps call sites symmetric);
        ``prefix_lengths``, ``trunk`` and ``vocab_ids`` as in :meth:`forward_actions` (the trunk
        has no adapter: the same states serve the reference)."""
        if role not in ROLES:
            raise ValueError(f"role = {role!r} is invalid; allowed: one of {list(ROLES)}")
        inputs = (input_ids, attention_mask, action_tokens, action_lengths, prefix_lengths,
                  trunk, vocab_ids)
        try:
            if self.has_frozen_reference:  # kl_reference: start
                self.peft_model.set_adapter(reference_adapter(role))
                return self._forward(*inputs)[0]
            with self.peft_model.disable_adapter():
                return self._forward(*inputs)[0]
        finally:
            self.peft_model.set_adapter(self.role)
            self._all_adapters_trainable()  # re-enabling adapters freezes the inactive ones

    @torch.no_grad()
    def values(self, role: str, input_ids: torch.Tensor,
               attention_mask: torch.Tensor) -> torch.Tensor:
        """(B,) values of left-padded prompts under ``role`` (eval mode)."""
        with self._evaluating(), self.use(role), _last_prompt_hidden(self._decoder(), -1) as hidden:
            position = (attention_mask.long().cumsum(-1) - 1).clamp(min=0)
            self.peft_model(input_ids=input_ids, attention_mask=attention_mask,
                            position_ids=position, use_cache=False, logits_to_keep=1)
        return self.prompt_values_from_hidden(role, hidden[0])

    def adapter_stamp(self, role: str) -> tuple:
        """Changes whenever ``role``'s adapter weights may have: their storages and in-place
        version counters (optimizer steps, ``load_state_dict`` and ``copy_`` bump them)."""
        return tuple((p.data_ptr(), p._version) for p in self._adapters[role])

    @torch.no_grad()
    def generate_actions(self, role: str, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                         grammars: Sequence[ActionGrammar], *, generator: torch.Generator,
                         temperature: float = 1.0, max_new_tokens: int | None = None,
                         greedy: bool = False, timings: dict | None = None,
                         prefix_lengths: Sequence[int] | None = None,
                         trunk_out: list | None = None, hidden_out: list | None = None,
                         ) -> tuple[ActionSample, torch.Tensor]:
        """PAG-constrained sampling with ``role``'s adapter (eval mode, restored afterwards)
        and the prompts' values (B,), read off the sampling prefill.

        ``prefix_lengths`` (B,): each row's meta-prompt tokens, whose KV states are reused from
        :attr:`prefix_cache`. ``trunk_out`` (a list; only with a frozen trunk) receives one
        :attr:`trunk` id per row: the boundary states the sampling computed, for the update;
        ``hidden_out`` (a list) the value heads' input (B, H), for fitting them
        (:mod:`trainers.stackelberg.critic`).
        """
        keep = trunk_out is not None and self.boundary > 0
        keys = [()] * len(input_ids)
        with self._evaluating(), self.use(role):
            past = past_mask = None
            if prefix_lengths is not None and any(prefix_lengths):
                if keep:
                    rows, cut = rows_and_cuts(input_ids, attention_mask, prefix_lengths)
                    keys = [tuple(r[:n]) for r, n in zip(rows, cut, strict=True)]
                input_ids, attention_mask, past_mask, past = self.prefix_cache.split(
                    self.peft_model, role, self.adapter_stamp(role), input_ids, attention_mask,
                    prefix_lengths)
            capture = TrunkCapture(self._decoder(), self.boundary) if keep else nullcontext()
            with _last_prompt_hidden(self._decoder(), -1) as hidden, capture:
                sample = sample_constrained(self.peft_model, input_ids, attention_mask, grammars,
                                            generator=generator, temperature=temperature,
                                            max_new_tokens=max_new_tokens, greedy=greedy,
                                            timings=timings,
                                            past_key_values=past, past_mask=past_mask)
        if keep:
            self._keep_prefixes(keys)
            trunk_out += [self.trunk.add(key, rest) for key, rest in
                          zip(keys, capture.rows(attention_mask, sample.lengths), strict=True)]
        if hidden_out is not None:
            hidden_out.append(hidden[0].detach().float())
        return sample, self.prompt_values_from_hidden(role, hidden[0])

    def _keep_prefixes(self, keys: Sequence[tuple[int, ...]]) -> None:
        """Trunk states of the meta-prompts not yet in :attr:`trunk`: one forward, once a run
        (the trunk has no adapter, so they hold for both roles and every epoch)."""
        missing = [k for k in dict.fromkeys(keys) if k and not self.trunk.has_prefix(k)]
        if not missing:
            return
        ids, mask = left_pad([list(k) for k in missing], 0, self.device)  # (m, Lp)
        states = trunk_states(self._decoder(), self.boundary, ids, mask)  # (m, Lp, H)
        for key, row in zip(missing, states, strict=True):
            self.trunk.add_prefix(key, row[row.shape[0] - len(key):].clone())
