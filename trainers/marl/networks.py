"""The shared UE actor, the centralised critics and the sampling helpers (paper App. B-E1).

The UE actor is one MLP shared by all UEs (hidden ReLU layers -> latent) with three heads:
a transmit indicator (Categorical over {0, 1}), a UCM (Categorical over K symbols) and an RBG
bitmap (N independent Bernoullis: non-contiguous RBG sets without a 2^N categorical). The bitmap
actually sent is ``transmit * bitmap``, so the bitmap's log-prob counts only when transmit = 1.

Critics are centralised (CTDE): they see the BS's global state, which no actor sees whole.
Every random draw takes a caller-seeded ``torch.Generator``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

NEG = -1e9  # logit of a forbidden choice: exp() is exactly 0, and 0 * NEG stays finite


def mlp(in_dim: int, hidden: Sequence[int], out_dim: int, out_relu: bool = False) -> nn.Sequential:
    layers: list[nn.Module] = []
    for width in hidden:
        layers += [nn.Linear(in_dim, width), nn.ReLU()]
        in_dim = width
    layers.append(nn.Linear(in_dim, out_dim))
    if out_relu:
        layers.append(nn.ReLU())
    return nn.Sequential(*layers)


# ----------------------------------------------------------------------- distributions
def sample_categorical(logits: torch.Tensor, generator: torch.Generator | None,
                       greedy: bool) -> torch.Tensor:
    """(...,) indices from (..., V) logits; forbidden (NEG) entries are never drawn."""
    if greedy:
        return logits.argmax(-1)
    probs = logits.softmax(-1).reshape(-1, logits.shape[-1])
    return torch.multinomial(probs, 1, generator=generator).reshape(logits.shape[:-1])


def sample_bernoulli(logits: torch.Tensor, generator: torch.Generator | None,
                     greedy: bool) -> torch.Tensor:
    """(...) bool draws of independent Bernoullis with the given logits."""
    if greedy:
        return logits > 0
    u = torch.rand(logits.shape, generator=generator, dtype=logits.dtype)
    return u < torch.sigmoid(logits)


def categorical_log_prob(logits: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    return logits.log_softmax(-1).gather(-1, index.long().unsqueeze(-1)).squeeze(-1)


def categorical_entropy(logits: torch.Tensor) -> torch.Tensor:
    logp = logits.log_softmax(-1)
    return -(logp.exp() * logp).sum(-1)


def bernoulli_log_prob(logits: torch.Tensor, bits: torch.Tensor) -> torch.Tensor:
    """Elementwise log p(bits) (same shape as logits)."""
    return -F.binary_cross_entropy_with_logits(logits, bits.to(logits.dtype), reduction="none")


def bernoulli_entropy(logits: torch.Tensor) -> torch.Tensor:
    p = torch.sigmoid(logits)
    return F.binary_cross_entropy_with_logits(logits, p, reduction="none")


# ----------------------------------------------------------------------------- UE actor
class UEActor(nn.Module):
    """Shared UE policy: (..., H * F_u) -> transmit (..., 2), UCM (..., K), bitmap (..., N)."""

    def __init__(self, in_dim: int, hidden: Sequence[int], latent: int, n_rbgs: int,
                 ucm_levels: int) -> None:
        super().__init__()
        self.body = mlp(in_dim, hidden, latent, out_relu=True)
        self.transmit_head = nn.Linear(latent, 2)
        self.ucm_head = nn.Linear(latent, ucm_levels)
        self.bitmap_head = nn.Linear(latent, n_rbgs)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        z = self.body(x)  # (..., latent)
        return self.transmit_head(z), self.ucm_head(z), self.bitmap_head(z)

    @torch.no_grad()
    def act(self, x: torch.Tensor, generator: torch.Generator | None = None,
            greedy: bool = False) -> dict[str, torch.Tensor]:
        """Sample (or take the mode of) every head; ``bitmap`` = what is sent (transmit * bits)."""
        tx_logits, ucm_logits, bit_logits = self(x)
        transmit = sample_categorical(tx_logits, generator, greedy)  # (...,)
        ucm = sample_categorical(ucm_logits, generator, greedy)  # (...,)
        bits = sample_bernoulli(bit_logits, generator, greedy)  # (..., N)
        logp, _ = self.log_prob(x, transmit, ucm, bits, logits=(tx_logits, ucm_logits, bit_logits))
        return {"transmit": transmit, "ucm": ucm, "bits": bits,
                "bitmap": bits & (transmit[..., None] == 1), "logp": logp}

    def log_prob(self, x: torch.Tensor, transmit: torch.Tensor, ucm: torch.Tensor,
                 bits: torch.Tensor, logits: tuple | None = None
                 ) -> tuple[torch.Tensor, torch.Tensor]:
        """Joint log-prob and entropy (...,); the bitmap term counts only when transmitting."""
        tx_logits, ucm_logits, bit_logits = logits if logits is not None else self(x)
        on = transmit.to(bit_logits.dtype)
        logp = (categorical_log_prob(tx_logits, transmit) + categorical_log_prob(ucm_logits, ucm)
                + on * bernoulli_log_prob(bit_logits, bits).sum(-1))
        p_on = tx_logits.softmax(-1)[..., 1]
        entropy = (categorical_entropy(tx_logits) + categorical_entropy(ucm_logits)
                   + p_on * bernoulli_entropy(bit_logits).sum(-1))
        return logp, entropy


# ------------------------------------------------------------------------------ critics
def masked_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """(B, I, D), (B, I) bool -> (B, D) mean over the True rows (0 if none)."""
    m = mask.to(x.dtype).unsqueeze(-1)
    return (x * m).sum(1) / m.sum(1).clamp(min=1.0)


class FollowerCritic(nn.Module):
    """V_i of each UE slot from its own features, the BS's view of it and the global state.

    Input per slot (:meth:`inputs`): [UE features, BS view of the UE, global RBG history, mean BS
    view over the active UEs] -- independent of I, so one critic serves every UE and both
    algorithms, and PPO minibatches can mix UE decisions of different TTIs and envs.
    """

    def __init__(self, ue_dim: int, bs_ue_dim: int, global_dim: int,
                 hidden: Sequence[int]) -> None:
        super().__init__()
        self.net = mlp(ue_dim + 2 * bs_ue_dim + global_dim, hidden, 1)

    @staticmethod
    def inputs(ue_x: torch.Tensor, bs_ue_x: torch.Tensor, global_x: torch.Tensor,
               active: torch.Tensor) -> torch.Tensor:
        """(B, I, Du), (B, I, Db), (B, Dg), (B, I) -> (B, I, Du + 2 Db + Dg)."""
        n_ues = ue_x.shape[1]
        pooled = masked_mean(bs_ue_x, active)  # (B, Db)
        context = torch.cat([global_x, pooled], -1).unsqueeze(1).expand(-1, n_ues, -1)
        return torch.cat([ue_x, bs_ue_x, context], -1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(..., D) -> values (...)."""
        return self.net(x).squeeze(-1)


class FlatLeaderCritic(nn.Module):
    """MAPPO's V_b: an MLP over the same fixed-size flat input as its BS actor (I_cap slots)."""

    def __init__(self, global_dim: int, bs_ue_dim: int, capacity: int,
                 hidden: Sequence[int]) -> None:
        super().__init__()
        self.net = mlp(global_dim + capacity * bs_ue_dim, hidden, 1)

    def forward(self, global_x: torch.Tensor, ue_x: torch.Tensor,
                mask: torch.Tensor) -> torch.Tensor:
        """(B, Dg), (B, I_cap, Db) zero-padded, (B, I_cap) -> (B,)."""
        return self.net(torch.cat([global_x, ue_x.flatten(1)], -1)).squeeze(-1)


class PooledLeaderCritic(nn.Module):
    """G-MAC's V_b for any I: per-UE encoder, mean and max pooling over the active UEs, MLP."""

    def __init__(self, global_dim: int, bs_ue_dim: int, embedding_dim: int,
                 hidden: Sequence[int]) -> None:
        super().__init__()
        self.ue_encoder = mlp(bs_ue_dim, hidden[:1], embedding_dim, out_relu=True)
        self.net = mlp(global_dim + 2 * embedding_dim, hidden, 1)

    def forward(self, global_x: torch.Tensor, ue_x: torch.Tensor,
                mask: torch.Tensor) -> torch.Tensor:
        """(B, Dg), (B, I, Db), (B, I) -> (B,)."""
        e = self.ue_encoder(ue_x)  # (B, I, E), >= 0 after the ReLU
        pooled_max = (e * mask.unsqueeze(-1).to(e.dtype)).amax(1)  # (B, E)
        return self.net(torch.cat([global_x, masked_mean(e, mask), pooled_max], -1)).squeeze(-1)
