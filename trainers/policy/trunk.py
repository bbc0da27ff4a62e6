"""The frozen trunk (design §6.10): adapters on the top k decoder layers, the rest computed once.

With ``trainable_layers = k`` (0 < k < L) both roles' LoRA adapters sit on the decoder layers
[L - k, L) only (PEFT ``layers_to_transform``). Layers [0, L - k) - the **trunk** - then hold no
adapter: they are the base model's own for the leader, the followers and the KL reference
alike, so their output at the **boundary** (the input of layer L - k) is a fixed function of a
row's tokens. The policy gradient (eq. 10) is unchanged; only which parameters it updates is.

* The rollout keeps, for every decision, the boundary states its sampling already computed
  (:class:`TrunkCapture`: the prefill's and every decode step's input of layer L - k), and the
  trunk states of each distinct meta-prompt once per run (:meth:`TrunkStore.prefix`).
* The PPO update, the KL reference and the value heads then run the top k layers only, on those
  states (:func:`run_layers` with ``inputs_embeds``), with the top layers' own shared-prefix cache.

Kept states are counted in bytes against ``trunk_cache_gib``; past it, a decision's states are
``offload``-ed to CPU memory (on an accelerator) or dropped and ``recompute``-d by a trunk
forward (no grad) when the update needs them.
"""

from __future__ import annotations

import dataclasses
import json
import os
from contextlib import contextmanager
from pathlib import Path

import torch
from torch import nn

OVERFLOWS = ("recompute", "offload")


def decoder_layers(decoder: nn.Module) -> nn.ModuleList:
    """The decoder's layer list (``model.layers`` of Llama-style backbones)."""
    layers = getattr(decoder, "layers", None)
    if not isinstance(layers, nn.ModuleList):
        raise ValueError(f"{type(decoder).__name__} has no 'layers' ModuleList; allowed for "
                         "trainable_layers > 0: a Llama-style decoder (model.layers)")
    return layers


def check_trainable_layers(k: int, n_layers: int) -> None:
    from textgame.config import ConfigError  # a ValueError the CLI prints as one line

    if isinstance(k, bool) or not isinstance(k, int) or not 0 <= k <= n_layers:
        raise ConfigError(f"StackelbergPPOConfig.trainable_layers = {k!r} is invalid; allowed: "
                         f"an integer in [0, {n_layers}] (0 = all {n_layers} layers of the model)")


def top_layer_lora(lora, base_model: nn.Module, k: int):
    """``lora`` with its adapters on the top ``k`` decoder layers of ``base_model`` (``k = 0``:
    all). PEFT takes ``layers_to_transform`` with a list of target names only, so
    ``'all-linear'`` becomes the decoder layers' linear projections."""
    n_layers = base_model.config.get_text_config().num_hidden_layers
    check_trainable_layers(k, n_layers)
    if k == 0:
        return lora
    targets = lora.target_modules
    if targets == "all-linear" or targets == {"all-linear"}:
        targets = sorted({name.rsplit(".", 1)[-1] for name, module in base_model.named_modules()
                          if isinstance(module, nn.Linear) and ".layers." in name})
    elif isinstance(targets, str):
        raise ValueError(f"ModelConfig.lora_target_modules = {targets!r} is invalid with "
                         "trainable_layers > 0; allowed: a list of module names or 'all-linear'")
    return dataclasses.replace(lora, target_modules=targets,
                               layers_to_transform=list(range(n_layers - k, n_layers)))


def adapter_trainable_layers(lora, n_layers: int) -> int:
    """k of adapters saved with ``lora``'s ``layers_to_transform`` (0 = every layer)."""
    layers = lora.layers_to_transform
    if layers is None:
        return 0
    layers = sorted([layers] if isinstance(layers, int) else layers)
    if layers != list(range(n_layers - len(layers), n_layers)):
        raise ValueError(f"adapters on layers {layers} are not the top layers of {n_layers}; "
                         "allowed: layers_to_transform = the top k layers or None")
    return 0 if len(layers) == n_layers else len(layers)


def saved_trainable_layers(directory: str | os.PathLike) -> int | None:
    """k of the adapters saved in a policy directory (0 = every layer; None: no local one)."""
    path = Path(directory) / "leader" / "adapter_config.json"
    if not path.is_file():
        return None
    layers = json.loads(path.read_text()).get("layers_to_transform")
    return 0 if layers is None else len([layers] if isinstance(layers, int) else layers)


def check_saved_trainable_layers(field: str, directory: str | os.PathLike, k: int) -> None:
    """Refuse adapters of ``directory`` saved with another ``trainable_layers`` than ``k``
    (ConfigError naming both)."""
    from textgame.config import ConfigError

    saved = saved_trainable_layers(directory)
    if saved is not None and saved != k:
        raise ConfigError(
            f"{field} = {str(directory)!r} holds adapters saved with trainable_layers = {saved}, "
            f"but this run has trainable_layers = {k}; allowed: adapters saved with "
            f"trainable_layers = {k}, or set trainable_layers: {saved}")


@contextmanager
def run_layers(decoder: nn.Module, window: slice, norm: bool = True):
    """Inside the block a forward of ``decoder`` runs the layers ``window`` of its L only, e.g.
    ``slice(0, boundary)`` (the trunk) or ``slice(boundary, L)`` (the top); ``norm`` False
    leaves out the final norm (the trunk's output is the next layer's input, un-normed).
    Layers keep their ``layer_idx``, so a cache passed in needs L slots."""
    layers = decoder_layers(decoder)
    previous_norm = decoder.norm
    decoder.layers = nn.ModuleList(list(layers)[window])
    if not norm:
        decoder.norm = nn.Identity()
    try:
        yield
    finally:
        decoder.layers = layers
        decoder.norm = previous_norm


@torch.no_grad()
def trunk_states(decoder: nn.Module, boundary: int, input_ids: torch.Tensor,
                 attention_mask: torch.Tensor) -> torch.Tensor:
    """(B, P, H) boundary states of left-padded ``input_ids`` (B, P): layers [0, boundary),
    position ids counting real tokens (as sampling does)."""
    position = (attention_mask.long().cumsum(-1) - 1).clamp(min=0)
    with run_layers(decoder, slice(0, boundary), norm=False):
        out = decoder(input_ids=input_ids, attention_mask=attention_mask, position_ids=position,
                      use_cache=False)
    return out.last_hidden_state


class TrunkCapture:
    """Records the input of layer ``boundary`` at every call inside the block (detached):
    the prefill's (B, S, H), then each decode step's (B, 1, H)."""

    def __init__(self, decoder: nn.Module, boundary: int) -> None:
        self.layer = decoder_layers(decoder)[boundary]
        self.calls: list[torch.Tensor] = []

    def _hook(self, module, args, kwargs):
        hidden = args[0] if args else kwargs["hidden_states"]
        self.calls.append(hidden.detach())

    def __enter__(self) -> TrunkCapture:
        self._handle = self.layer.register_forward_pre_hook(self._hook, with_kwargs=True)
        return self

    def __exit__(self, *exc) -> None:
        self._handle.remove()

    def rows(self, prompt_mask: torch.Tensor, lengths: torch.Tensor) -> list[torch.Tensor]:
        """Per row, the states of its real prompt tokens (``prompt_mask`` (B, S), left-padded)
        and of its first ``lengths - 1`` action tokens: (s_b + n_b - 1, H) each. An action's
        last token (EOS) predicts nothing, so its states are never needed."""
        prefill, steps = self.calls[0], self.calls[1:]
        decoded = torch.cat(steps, dim=1) if steps else prefill[:, :0]  # (B, t, H)
        sizes = prompt_mask.sum(-1).tolist()
        width = prompt_mask.shape[1]
        return [torch.cat([prefill[b, width - s:], decoded[b, :max(int(n) - 1, 0)]]).clone()
                for b, (s, n) in enumerate(zip(sizes, lengths.tolist(), strict=True))]


class TrunkStore:
    """Boundary states: the meta-prompts' (once per run) and the current epoch's decisions'.

    A decision's states are its meta-prompt's (``key``: the prefix token ids) followed by its
    own ``rest`` (the prompt after the prefix and its action tokens). ``budget_gib`` bounds the
    decisions' kept bytes; past it ``overflow`` decides: ``offload`` keeps them in CPU memory
    (nothing changes on a CPU), ``recompute`` keeps nothing and :meth:`full` returns None.
    """

    def __init__(self, budget_gib: float = 2.0, overflow: str = "recompute") -> None:
        if overflow not in OVERFLOWS:
            raise ValueError(f"StackelbergPPOConfig.trunk_overflow = {overflow!r} is invalid; "
                             f"allowed: one of {list(OVERFLOWS)}")
        self.budget = int(budget_gib * 2**30)
        self.overflow = overflow
        self._prefixes: dict[tuple[int, ...], torch.Tensor] = {}
        self._rows: list[tuple[tuple[int, ...], torch.Tensor | None]] = []
        self.kept_bytes = self.offloaded_rows = self.dropped_rows = 0
        self.peak_bytes = 0

    def clear_rows(self) -> None:
        """Forget the decisions' states (a new epoch); the meta-prompts' stay."""
        self._rows.clear()
        self.kept_bytes = self.offloaded_rows = self.dropped_rows = 0

    def has_prefix(self, key: tuple[int, ...]) -> bool:
        return key in self._prefixes

    def add_prefix(self, key: tuple[int, ...], states: torch.Tensor) -> None:
        self._prefixes[key] = states  # (Lp, H)

    def add(self, key: tuple[int, ...], rest: torch.Tensor) -> int:
        """Keep one decision's states; returns its id."""
        size = rest.numel() * rest.element_size()
        if self.kept_bytes + size > self.budget:
            if self.overflow == "recompute":
                self.dropped_rows += 1
                self._rows.append((key, None))
                return len(self._rows) - 1
            if rest.device.type != "cpu":
                rest = rest.cpu()
            self.offloaded_rows += 1
        else:
            self.kept_bytes += size
            self.peak_bytes = max(self.peak_bytes, self.kept_bytes)
        self._rows.append((key, rest))
        return len(self._rows) - 1

    def full(self, index: int, device) -> torch.Tensor | None:
        """(P + n - 1, H) states of decision ``index`` (None: dropped, to recompute)."""
        key, rest = self._rows[index]
        if rest is None:
            return None
        rest = rest.to(device, non_blocking=True)
        return torch.cat([self._prefixes[key].to(device), rest]) if key else rest

    def stats(self) -> dict[str, float]:
        """Kept GiB of the epoch's decisions (and its peak over the run), offloaded and dropped
        rows, and the meta-prompts' GiB."""
        prefix = sum(t.numel() * t.element_size() for t in self._prefixes.values())
        return {"kept_gib": self.kept_bytes / 2**30, "peak_gib": self.peak_bytes / 2**30,
                "prefix_gib": prefix / 2**30, "offloaded_rows": float(self.offloaded_rows),
                "recomputed_rows": float(self.dropped_rows)}
