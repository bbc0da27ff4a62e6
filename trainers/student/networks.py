"""The two student networks (paper App. C-C): any number of UEs, no padding to a cap.

:class:`LeaderStudent` (BS -> DCM) is an auction over the RBGs:

- a shared per-UE encoder (MLP) plus the global encoder, then one masked self-attention layer
  over the active UEs (residual), so each UE's embedding sees the others;
- each UE bids for its 1st, 2nd, ..., N-th RBG: bid (i, k) reads the UE's embedding, a learned
  embedding of k and what the UE would still have queued after k grants (queue - k x capacity,
  :mod:`trainers.student.features`); "nobody" bids N times from the pooled context. Bids are
  made non-increasing in k (running minimum), so the k-th grant never outbids the first;
- RBG n goes to the owner of the n-th highest of the (1 + I) x N bids: the DCM is one TopK.

With non-increasing bids, the TopK equals the sequential rule "RBG n to the highest bid still
open, where a UE's open bid is the one for its next grant" (:meth:`LeaderStudent.decode`). That
rule is a Plackett-Luce distribution over the DCM: behaviour cloning maximises its likelihood of
the teacher's DCM (teacher forcing), PPO and a sampling student draw from it (:meth:`sample`),
and the greedy decision is its mode.
The student decides how many RBGs each UE gets and hands them out in bid order; channels are
flat across RBGs (design §2: one SE per UE and TTI), so the order changes no utility, and a
teacher whose RBG order is arbitrary (G-MAC samples UE by UE) is imitated up to that order.

:class:`FollowerStudent` (UE -> bitmap + UCM): one MLP shared by all UEs with N Bernoulli
bitmap logits (plus a learned gain on the UE's own DCM bit of the same RBG) and K UCM logits.

Both are exported to ONNX with dynamic B and I (:mod:`trainers.student.onnx`): ``forward`` is
the deployed greedy decision and returns actions and logits.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
from torch import nn

from trainers.marl.networks import NEG, mlp
from trainers.student.features import DCM_BITS_OFFSET, RAW_COLUMNS


def running_min(x: torch.Tensor, upper: torch.Tensor) -> torch.Tensor:
    """(..., N) -> (..., N) with out[..., k] = min(x[..., :k + 1]); ``upper`` (N, N) is 0 on
    and below the diagonal and +inf above (one broadcast and one reduction, no loop)."""
    return (x[..., None, :] + upper).amin(-1)


class LeaderStudent(nn.Module):
    """(B, Dg), (B, I, Db), (B, I) bool -> DCM (B, N) in 0..I and bids (B, 1 + I, N)."""

    def __init__(self, global_dim: int, ue_dim: int, n_rbgs: int, hidden: int) -> None:
        super().__init__()
        self.n_rbgs, self.hidden = n_rbgs, hidden
        self.ue_encoder = mlp(ue_dim - RAW_COLUMNS, [hidden], hidden, out_relu=True)
        self.global_encoder = nn.Linear(global_dim, hidden)
        self.attention_qk = nn.Linear(hidden, hidden, bias=False)  # W_q W_k^T / sqrt(H)
        self.attention_vo = nn.Linear(hidden, hidden)  # W_v W_o
        self.remaining_in = nn.Linear(1, hidden, bias=False)
        self.grant_embedding = nn.Parameter(torch.zeros(n_rbgs, hidden))
        self.bid_head = nn.Linear(hidden, 1)
        self.nobody_head = nn.Linear(hidden, n_rbgs)
        self.register_buffer("grant_index", torch.arange(n_rbgs, dtype=torch.float32),
                             persistent=False)
        upper = torch.full((n_rbgs, n_rbgs), math.inf).triu(1)
        self.register_buffer("upper", upper, persistent=False)

    def encode(self, global_x: torch.Tensor, ue_x: torch.Tensor,
               mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Per-UE embeddings (B, I, H) (zero on padding), the pooled context (B, H) and the
        additive mask (B, I): 0 for active UEs, NEG for padding."""
        valid = mask.to(ue_x.dtype)  # (B, I)
        padding = (1.0 - valid) * NEG
        h = self.ue_encoder(ue_x[..., RAW_COLUMNS:]) + self.global_encoder(global_x)[:, None]
        scores = self.attention_qk(h) @ h.transpose(1, 2) + padding[:, None, :]  # (B, I, I)
        h = (h + scores.softmax(-1) @ self.attention_vo(h)) * valid[..., None]
        context = h.sum(1) / valid.sum(1, keepdim=True).clamp(min=1.0)  # masked mean
        return h, context, padding

    def bids(self, global_x: torch.Tensor, ue_x: torch.Tensor,
             mask: torch.Tensor) -> torch.Tensor:
        """(B, 1 + I, N): row 0 the nobody bids, row i UE i's bids for its k-th RBG (k < N),
        non-increasing in k; padded UEs bid NEG."""
        h, context, padding = self.encode(global_x, ue_x, mask)
        queue, capacity = ue_x[..., :1], ue_x[..., 1:2]  # (B, I, 1) dPDUs
        remaining = torch.relu(queue - self.grant_index * capacity)  # (B, I, N) after k grants
        weight = torch.log1p(remaining * capacity)[..., None]  # (B, I, N, 1)
        z = torch.relu(h[:, :, None, :] + self.remaining_in(weight) + self.grant_embedding)
        ue_bids = self.bid_head(z).squeeze(-1) + padding[..., None]  # (B, I, N)
        nobody = self.nobody_head(context)[:, None, :]  # (B, 1, N)
        return running_min(torch.cat([nobody, ue_bids], 1), self.upper)

    def forward(self, global_x: torch.Tensor, ue_x: torch.Tensor,
                mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The deployed decision: DCM (B, N) int64 (RBG n -> owner of the n-th highest bid)
        and the bids (B, 1 + I, N)."""
        bids = self.bids(global_x, ue_x, mask)
        _, index = bids.flatten(1).topk(self.n_rbgs, dim=-1)  # (B, N) into (1 + I) x N
        # index >= 0, so truncation is floor division: one ONNX Div (floor exports as seven)
        return torch.div(index, self.n_rbgs, rounding_mode="trunc"), bids

    def decode(self, bids: torch.Tensor, choose: Callable[[int, torch.Tensor], torch.Tensor]
               ) -> tuple[torch.Tensor, torch.Tensor]:
        """The sequential rule: ``choose(n, logits (B, 1 + I))`` -> owner of RBG n (B,).

        Each owner's open bid is its bid for its next grant. Returns the DCM (B, N) and the
        logits (B, N, 1 + I) RBG n was decided with (the Plackett-Luce factors).
        """
        taken = torch.zeros(bids.shape[:2], dtype=torch.long, device=bids.device)  # (B, 1 + I)
        entries, logits = [], []
        for n in range(self.n_rbgs):
            open_bids = bids.gather(-1, taken[..., None]).squeeze(-1)  # (B, 1 + I)
            entry = choose(n, open_bids)  # (B,)
            taken = taken.scatter_add(1, entry[:, None], torch.ones_like(entry[:, None]))
            entries.append(entry)
            logits.append(open_bids)
        return torch.stack(entries, 1), torch.stack(logits, 1)

    def teacher_forced(self, global_x: torch.Tensor, ue_x: torch.Tensor, mask: torch.Tensor,
                       dcm: torch.Tensor) -> torch.Tensor:
        """Logits (B, N, 1 + I) of each RBG given the grants of ``dcm`` (B, N) before it."""
        return self.decode(self.bids(global_x, ue_x, mask), lambda n, logits: dcm[:, n])[1]

    def sample(self, global_x: torch.Tensor, ue_x: torch.Tensor, mask: torch.Tensor,
               generator: torch.Generator | None) -> tuple[torch.Tensor, torch.Tensor]:
        """A DCM (B, N) drawn from the Plackett-Luce distribution, and its logits."""
        def draw(n: int, logits: torch.Tensor) -> torch.Tensor:
            return torch.multinomial(logits.softmax(-1), 1, generator=generator).squeeze(-1)

        return self.decode(self.bids(global_x, ue_x, mask), draw)


class FollowerStudent(nn.Module):
    """(..., Du) -> bitmap (..., N) bool, UCM (...,) int64, bitmap logits, UCM logits (..., K)."""

    def __init__(self, in_dim: int, hidden: Sequence[int], n_rbgs: int,
                 ucm_levels: int) -> None:
        super().__init__()
        self.n_rbgs = n_rbgs
        self.body = mlp(in_dim, hidden[:-1], hidden[-1], out_relu=True)
        self.bitmap_head = nn.Linear(hidden[-1], n_rbgs)
        self.ucm_head = nn.Linear(hidden[-1], ucm_levels)
        self.obey = nn.Parameter(torch.zeros(()))  # gain on d_i,t,n for bit n

    def logits(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        z = self.body(x)  # (..., hidden)
        dcm_bits = x[..., DCM_BITS_OFFSET:DCM_BITS_OFFSET + self.n_rbgs]  # (..., N)
        return self.bitmap_head(z) + self.obey * dcm_bits, self.ucm_head(z)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        bitmap_logits, ucm_logits = self.logits(x)
        return bitmap_logits > 0, ucm_logits.argmax(-1), bitmap_logits, ucm_logits
