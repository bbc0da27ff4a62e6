"""The two BS actors (paper App. B-E2): MAPPO's fixed-capacity MLP and G-MAC's GRU over UEs.

Both read the global RBG history ``global_x`` (B, Dg) and the per-UE BS view in rank order
``ue_x`` (B, I, Db) with ``mask`` (B, I) (:func:`trainers.marl.features.gather_by_rank`), and
both emit the game's DCM (B, N): entry n in 0..I, 0 = nobody, k = the k-th active UE. Both have
``act(global_x, ue_x, mask, generator, greedy) -> (dcm, logp)`` and
``evaluate(global_x, ue_x, mask, dcm) -> (logp, entropy)``.

DCM parametrisations (our choice; the paper's vocabulary size was lost):

- MAPPO: the paper's I_cap parallel linear heads, head i giving UE slot i's logit on every
  RBG (stored as one ``Linear(latent, I_cap * N)``, the same maps), plus a "nobody" head. RBG n
  is a Categorical over {nobody, UE 1..I_cap} whose logits are [nobody_n, head_1[n], ...];
  empty slots are masked out. The DCM's log-prob is the sum over RBGs.
- G-MAC: the DCM is decided UE by UE. At step i the GRU reads [UE i's embedding, a learned
  embedding of UE i-1's decision] and outputs UE i's grant logits; UE i takes RBG n with a
  Bernoulli over the RBGs no earlier UE took. An RBG nobody took is idle. The joint log-prob
  is the sum over UEs, so the DCM depends on the UE order through the GRU's state.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from trainers.marl.networks import (
    NEG,
    bernoulli_entropy,
    bernoulli_log_prob,
    categorical_entropy,
    categorical_log_prob,
    mlp,
    sample_bernoulli,
    sample_categorical,
)


class MAPPOLeader(nn.Module):
    """Monolithic MLP over [global history, flattened per-UE histories of I_cap slots]."""

    def __init__(self, global_dim: int, ue_dim: int, capacity: int, n_rbgs: int,
                 hidden: Sequence[int], latent: int) -> None:
        super().__init__()
        self.capacity, self.n_rbgs = capacity, n_rbgs
        self.body = mlp(global_dim + capacity * ue_dim, hidden, latent, out_relu=True)
        self.ue_heads = nn.Linear(latent, capacity * n_rbgs)  # I_cap parallel heads of N logits
        self.nobody_head = nn.Linear(latent, n_rbgs)

    def logits(self, global_x: torch.Tensor, ue_x: torch.Tensor,
               mask: torch.Tensor) -> torch.Tensor:
        """(B, Dg), (B, I_cap, Db), (B, I_cap) -> per-RBG logits (B, N, 1 + I_cap)."""
        if ue_x.shape[1] != self.capacity:
            raise ValueError(f"MAPPO BS built for {self.capacity} UE slots got {ue_x.shape[1]}; "
                             "pad or truncate with gather_by_rank(..., width=capacity)")
        z = self.body(torch.cat([global_x, ue_x.flatten(1)], -1))  # (B, latent)
        ue_logits = self.ue_heads(z).view(-1, self.capacity, self.n_rbgs).transpose(1, 2)
        logits = torch.cat([self.nobody_head(z).unsqueeze(-1), ue_logits], -1)  # (B, N, 1+I)
        allowed = torch.cat([torch.ones_like(mask[:, :1]), mask], -1)  # (B, 1 + I_cap)
        return logits.masked_fill(~allowed.unsqueeze(1), NEG)

    @torch.no_grad()
    def act(self, global_x, ue_x, mask, generator=None, greedy=False):
        logits = self.logits(global_x, ue_x, mask)
        dcm = sample_categorical(logits, generator, greedy)  # (B, N) in 0..I_cap
        return dcm, categorical_log_prob(logits, dcm).sum(-1)

    def evaluate(self, global_x, ue_x, mask, dcm):
        logits = self.logits(global_x, ue_x, mask)
        return categorical_log_prob(logits, dcm).sum(-1), categorical_entropy(logits).sum(-1)


class GMACLeader(nn.Module):
    """Global encoder -> context -> GRU unrolled over the active UEs (any I, same weights)."""

    def __init__(self, global_dim: int, ue_dim: int, n_rbgs: int, hidden: Sequence[int],
                 embedding_dim: int, dcm_embedding_dim: int, gru_hidden: int) -> None:
        super().__init__()
        self.n_rbgs = n_rbgs
        self.global_encoder = mlp(global_dim, hidden, embedding_dim)
        self.ue_encoder = mlp(ue_dim, hidden, embedding_dim)
        self.initial_state = nn.Linear(embedding_dim, gru_hidden)
        self.start = 2 ** n_rbgs  # DCM-embedding index before the first UE
        self.dcm_embedding = nn.Embedding(2 ** n_rbgs + 1, dcm_embedding_dim)
        self.gru = nn.GRUCell(embedding_dim + dcm_embedding_dim, gru_hidden)
        self.grant_head = nn.Linear(gru_hidden, n_rbgs)
        self.register_buffer("powers", 2 ** torch.arange(n_rbgs), persistent=False)

    def _unroll(self, global_x, ue_x, mask, decide):
        """One GRU step per UE; ``decide(i, logits, available)`` -> UE i's grants (B, N) bool.

        Returns grants (B, I, N), log-prob (B,) and entropy (B,) summed over UEs.
        """
        n_envs, n_ues, _ = ue_x.shape
        h = torch.tanh(self.initial_state(self.global_encoder(global_x)))  # (B, H) context
        embedded = self.ue_encoder(ue_x)  # (B, I, E)
        previous = torch.full((n_envs,), self.start, dtype=torch.long, device=ue_x.device)
        taken = torch.zeros(n_envs, self.n_rbgs, dtype=torch.bool, device=ue_x.device)
        logp = torch.zeros(n_envs, device=ue_x.device)
        entropy = torch.zeros(n_envs, device=ue_x.device)
        grants = []
        for i in range(n_ues):
            on = mask[:, i]  # (B,)
            h_next = self.gru(torch.cat([embedded[:, i], self.dcm_embedding(previous)], -1), h)
            logits = self.grant_head(h_next)  # (B, N)
            available = ~taken & on[:, None]
            grant = decide(i, logits, available) & available  # (B, N)
            weight = available.to(logits.dtype)
            logp = logp + (bernoulli_log_prob(logits, grant) * weight).sum(-1)
            entropy = entropy + (bernoulli_entropy(logits) * weight).sum(-1)
            h = torch.where(on[:, None], h_next, h)
            previous = torch.where(on, (grant.long() * self.powers).sum(-1), previous)
            taken = taken | grant
            grants.append(grant)
        return torch.stack(grants, 1), logp, entropy

    @staticmethod
    def dcm_from_grants(grants: torch.Tensor) -> torch.Tensor:
        """(B, I, N) bool, at most one True per RBG -> DCM (B, N) in 0..I."""
        ranks = torch.arange(1, grants.shape[1] + 1, device=grants.device)
        return (grants.long() * ranks[None, :, None]).sum(1)

    @torch.no_grad()
    def act(self, global_x, ue_x, mask, generator=None, greedy=False):
        grants, logp, _ = self._unroll(
            global_x, ue_x, mask, lambda i, logits, available: sample_bernoulli(
                logits, generator, greedy))
        return self.dcm_from_grants(grants), logp

    def evaluate(self, global_x, ue_x, mask, dcm):
        ranks = torch.arange(1, ue_x.shape[1] + 1, device=ue_x.device)
        grants = dcm[:, None, :] == ranks[None, :, None]  # (B, I, N) teacher forcing
        _, logp, entropy = self._unroll(global_x, ue_x, mask,
                                        lambda i, logits, available: grants[:, i])
        return logp, entropy
