"""The base model under the policy (design §6): loaded from TRL's ``ModelConfig`` (bf16/fp32, or
4-bit NF4 = QLoRA), its LoRA config, and the value heads' shape."""

from __future__ import annotations

import dataclasses
from contextlib import contextmanager

import torch
from peft import LoraConfig, prepare_model_for_kbit_training
from torch import nn
from transformers import AutoModelForCausalLM, PreTrainedModel
from trl import ModelConfig, get_peft_config, get_quantization_config

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
def seeded(seed: int):
    """Adapter and head initialisation from ``seed`` without touching the global CPU/CUDA RNGs."""
    with torch.random.fork_rng(devices=[]):
        torch.random.default_generator.manual_seed(seed)
        yield
