"""The ``regex`` PAG backend: the action language as one regex, an outlines_core DFA.

The DFA is held in small dense tensors, so masks and state updates are gathers on the model's
device.
"""

from __future__ import annotations

from typing import NamedTuple

import torch

from grammars import render_regex
from trainers.pag.backends.base import GrammarBackend, GrammarProgram, GrammarState, OnDevice, Vocab


class DFA(NamedTuple):
    next: torch.Tensor  # (S + 1, C + 1) long: next state, -1 = not allowed
    mask: torch.Tensor  # (S + 1, C) bool: allowed columns per state
    tokens: torch.Tensor  # (C,) token id of each column
    column: torch.Tensor  # (V,) column of each token id (C for every unused token)


class RegexProgram(GrammarProgram):
    """The outlines_core DFA as dense tables over the C tokens it uses (EOS last).

    Row S is "EOS consumed" (loops on EOS); column C stands for every other token (a dead end).
    """

    def __init__(self, vocab: Vocab, source: str, vocab_size: int) -> None:
        import outlines_core

        self.vocab = vocab
        index = outlines_core.Index(source, vocab.outlines_core_vocabulary)
        transitions = index.get_transitions()  # {state: {token: next state}}
        finals = set(index.get_final_states())
        states = sorted(set(transitions) | finals | {index.get_initial_state()}
                        | {s for row in transitions.values() for s in row.values()})
        row_of = {s: r for r, s in enumerate(states)}
        used = {t for row in transitions.values() for t in row}
        tokens = sorted(used - vocab.special_ids - {vocab.eos}) + [vocab.eos]
        col_of = {t: c for c, t in enumerate(tokens)}
        n_states, n_cols = len(states), len(tokens)
        nxt = torch.full((n_states + 1, n_cols + 1), -1, dtype=torch.long)  # (S + 1, C + 1)
        for s, row in transitions.items():
            for t, s2 in row.items():
                if t in col_of and t != vocab.eos:
                    nxt[row_of[s], col_of[t]] = row_of[s2]
        for s in finals:  # outlines_core leaves EOS implicit in final states
            nxt[row_of[s], n_cols - 1] = n_states
        nxt[n_states, n_cols - 1] = n_states
        column = torch.full((vocab_size,), n_cols, dtype=torch.long)  # (V,)
        column[torch.tensor(tokens)] = torch.arange(n_cols)
        self.start_row = row_of[index.get_initial_state()]
        self.dfa = OnDevice(DFA(nxt, nxt[:, :n_cols] >= 0, torch.tensor(tokens), column))

    def decode(self, ids: list[int]) -> str:
        return "".join(self.vocab.token_text(t) for t in ids)


class RegexState(GrammarState):
    """Rows grouped by grammar; each group's DFA rows and columns are gathered on the device."""

    def __init__(self, grammars, device) -> None:
        super().__init__(grammars, device)
        rows: dict[int, list[int]] = {}
        for i, g in enumerate(grammars):
            rows.setdefault(id(g.program), []).append(i)
        self._groups = []  # (rows, DFA); rows is a slice when the whole batch shares a grammar
        for members in rows.values():
            index = (slice(None) if len(members) == self.batch
                     else torch.tensor(members, device=device))
            self._groups.append((index, grammars[members[0]].program.dfa.on(device)))
        self._state = torch.tensor([g.program.start_row for g in grammars], device=device)

    def allowed(self) -> torch.Tensor:
        out = torch.zeros(self.batch, self.vocab_size, dtype=torch.bool, device=self.device)
        for rows, dfa in self._groups:
            if isinstance(rows, slice):
                out[:, dfa.tokens] = dfa.mask[self._state]
            else:
                out[rows[:, None], dfa.tokens] = dfa.mask[self._state[rows]]
        return out

    def advance(self, tokens: torch.Tensor) -> None:
        tokens = tokens.to(self.device)
        new = torch.empty_like(self._state)
        for rows, dfa in self._groups:
            new[rows] = dfa.next[self._state[rows], dfa.column[tokens[rows]]]
        bad = new < 0
        if bad.any():  # one host sync per step
            i = int(bad.nonzero()[0])
            self._reject(i, int(tokens[i]))
        self._state = new
        self._done = self._done | (tokens == self.eos)


class RegexBackend(GrammarBackend):
    name = "regex"

    def source(self, role: str, n_ues: int, n_rbgs: int, ucm_levels: int) -> str:
        """The regex equivalent to the Lark CFG (longest alternatives first)."""
        return render_regex(role, n_ues, n_rbgs, ucm_levels)

    def compile(self, vocab: Vocab, source: str, vocab_size: int) -> RegexProgram:
        return RegexProgram(vocab, source, vocab_size)

    def start(self, grammars, device: torch.device) -> RegexState:
        return RegexState(grammars, device)
