"""PAG backends (design §5): how the allowed token sets V^- of :mod:`trainers.pag.sampler` are made.

A backend compiles one action language for one tokenizer and V into a *program*, and runs a
batch of rows (one program per row, programs may differ) as a :class:`GrammarState`:

- ``llguidance``: the Lark CFG of ``grammars/``; llguidance matchers on the host, masks kept
  per token prefix in a trie (repeated prefixes cost a lookup) as packed bitmasks, unpacked on
  the model's device.
- ``regex``: the equivalent regex as an outlines_core DFA held in small dense tensors, so
  masks and state updates are gathers on the model's device.
- ``none``: PAG off (the ablation): every tokenizer token until EOS.

Every object the masks come from is made by Outlines' own backend classes (``LLGuidanceBackend``,
``OutlinesCoreBackend``) over an Outlines ``Transformers`` wrapper of a private copy of the
tokenizer (the wrapper sets ``padding_side`` and ``pad_token`` on what it is given) and no model:
grammar compilation reads only the tokenizer, so no weights are needed. Padding rows of V
(ids >= len(tokenizer)) are never allowed; after EOS a row allows exactly {EOS}.
"""

from __future__ import annotations

import copy
import functools
import threading
from collections.abc import Sequence
from typing import NamedTuple

import numpy as np
import torch

_BITS = torch.arange(32, dtype=torch.int32)
_LOCK = threading.Lock()


class Vocab:
    """What every grammar of one tokenizer shares; the Outlines objects are built on first use."""

    def __init__(self, tokenizer) -> None:
        if tokenizer.eos_token_id is None:
            raise ValueError("tokenizer.eos_token_id is None; allowed: a tokenizer with EOS")
        self.tokenizer = copy.deepcopy(tokenizer)
        self.eos = int(tokenizer.eos_token_id)
        self.n_tokens = len(tokenizer)
        self.special_ids = frozenset(tokenizer.all_special_ids) - {self.eos}

    @functools.cached_property
    def outlines_model(self):
        import outlines

        return outlines.from_transformers(None, self.tokenizer)  # the backends read no weights

    @functools.cached_property
    def llg_tokenizer(self):
        from outlines.backends.llguidance import LLGuidanceBackend

        return LLGuidanceBackend(self.outlines_model).llg_tokenizer

    @functools.cached_property
    def outlines_core_vocabulary(self):
        from outlines.backends.outlines_core import OutlinesCoreBackend

        return OutlinesCoreBackend(self.outlines_model).vocabulary

    def token_text(self, token_id: int) -> str:
        """The text outlines_core matches for a token (Outlines' own conversion)."""
        token = self.tokenizer.convert_ids_to_tokens(token_id)
        return self.outlines_model.tokenizer.convert_token_to_string(token)


@functools.cache
def _executor():
    import llguidance

    return llguidance.LLExecutor()  # thread pool for batched mask computation


def unpack_bitmask(bitmask: torch.Tensor, vocab_size: int) -> torch.Tensor:
    """llguidance bitmask (B, W) int32 (bit j of word w = token 32w + j) -> (B, V) bool."""
    if bitmask.device.type == "cpu":  # numpy's unpackbits is ~50x faster than shifts on CPU
        bits = np.unpackbits(bitmask.numpy().view(np.uint8), axis=1, bitorder="little")
        out = torch.from_numpy(bits).view(torch.bool)
    else:
        out = ((bitmask.unsqueeze(-1) >> _BITS.to(bitmask.device)) & 1).bool().flatten(1)
    if out.shape[1] < vocab_size:
        return torch.nn.functional.pad(out, (0, vocab_size - out.shape[1]))
    return out[:, :vocab_size]


class _OnDevice:
    """Tensors of a program, copied to each device once."""

    def __init__(self, tensors) -> None:
        self._copies = {torch.device("cpu"): tensors}

    def on(self, device: torch.device):
        with _LOCK:
            if device not in self._copies:
                cpu = self._copies[torch.device("cpu")]
                self._copies[device] = (cpu.to(device) if isinstance(cpu, torch.Tensor)
                                        else type(cpu)(*(x.to(device) for x in cpu)))
            return self._copies[device]


# ------------------------------------------------------------------------------------ states
class GrammarState:
    """Where each of B rows stands in its grammar: ``allowed()`` -> (B, V) bool, ``advance``."""

    def __init__(self, grammars: Sequence, device: torch.device) -> None:
        self.grammars, self.device = list(grammars), device
        self.batch, self.vocab_size = len(grammars), grammars[0].vocab_size
        self.eos = grammars[0].eos_token_id
        self._done = torch.zeros(self.batch, dtype=torch.bool, device=device)  # (B,)

    @property
    def done(self) -> torch.Tensor:
        """(B,) bool: the row has consumed EOS."""
        return self._done

    def all_done(self) -> bool:
        return bool(self._done.all())

    def allowed(self) -> torch.Tensor:
        """(B, V) bool: V^- of every row (eq. 14); {EOS} for done rows."""
        raise NotImplementedError

    def advance(self, tokens: torch.Tensor) -> None:
        """Consume one token per row (EOS for done rows); raises on a token outside V^-."""
        raise NotImplementedError

    def _reject(self, row: int, token: int, why: str = "") -> None:
        raise ValueError(f"row {row}: token {token} is not allowed by {self.grammars[row]!r} "
                         f"at this point{': ' + why if why else ''}")


# ------------------------------------------------------------------------------- llguidance
class LLGuidanceProgram:
    """A compiled Lark grammar plus a trie of the token prefixes seen so far.

    The allowed set after a prefix depends on that prefix alone, so each trie node keeps its
    packed mask once llguidance has computed it: repeated prefixes (the norm in RL rollouts)
    cost a lookup, and the trie grows into the action language's DFA. A node gets a matcher
    (a ``deep_copy`` of its parent's, advanced by one token) only when its mask is first
    needed. Past ``max_nodes`` the trie is cleared back to the root.
    """

    def __init__(self, vocab: Vocab, source: str, vocab_size: int,
                 max_nodes: int = 50_000) -> None:
        import llguidance

        self.vocab, self.max_nodes = vocab, max_nodes
        tok = vocab.llg_tokenizer
        grammar = llguidance.LLMatcher.grammar_from_lark(source)
        failed, messages = llguidance.LLMatcher.validate_grammar_with_warnings(grammar, tok)
        root = llguidance.LLMatcher(tok, grammar, log_level=0)
        if failed or root.is_error():
            raise ValueError(f"llguidance rejects the grammar {source!r}: {messages} "
                             f"{root.get_error()}")
        self.words = (tok.vocab_size + 31) // 32
        self.eos_word = np.zeros(self.words, dtype=np.int32)  # bitmask row of {EOS}
        self.eos_word.view(np.uint8)[vocab.eos // 8] = 1 << (vocab.eos % 8)  # little-endian
        self._root = root
        self.lock = threading.Lock()
        self.clear()

    def clear(self) -> None:
        self.children: dict[tuple[int, int], int] = {}  # (node, token) -> child node
        self.parent: list[tuple[int, int]] = [(-1, -1)]  # node -> (parent node, token)
        self.table = np.zeros((64, self.words), dtype=np.int32)  # (nodes, W) packed masks
        self.has = np.zeros(64, dtype=bool)  # (nodes,) the node's mask is in the table
        self.matchers = {0: self._root.deep_copy()}  # node -> matcher that consumed its prefix

    def child(self, node: int, token: int) -> int:
        key = (node, token)
        if key not in self.children:
            self.children[key] = len(self.parent)
            self.parent.append(key)
        return self.children[key]

    def matcher(self, node: int):
        """The node's matcher, made from its parent's (whose mask, hence matcher, exists)."""
        if node not in self.matchers:
            parent, token = self.parent[node]
            m = self.matcher(parent).deep_copy()
            if not m.consume_token(token):
                raise ValueError(f"llguidance cannot consume token {token}: {m.get_error()}")
            self.matchers[node] = m
        return self.matchers[node]

    def fill(self, nodes: list[int], bitmask: np.ndarray) -> None:
        """Compute the masks of ``nodes`` (none in the table yet) in parallel and keep them."""
        import llguidance.numpy as llnp  # llguidance.torch would import torch's inductor (1 s)

        if len(self.parent) > len(self.has):  # grow the table to hold every node
            grow = max(len(self.parent), 2 * len(self.has)) - len(self.has)
            self.table = np.concatenate([self.table, np.zeros((grow, self.words), np.int32)])
            self.has = np.concatenate([self.has, np.zeros(grow, dtype=bool)])
        pairs = [(self.matcher(n), j) for j, n in enumerate(nodes)]
        llnp.fill_next_token_bitmask_par(_executor(), pairs, bitmask)
        self.table[nodes] = bitmask[:len(nodes)]
        self.has[nodes] = True

    def masks(self, nodes: np.ndarray, bitmask: np.ndarray) -> np.ndarray:
        """(n, W) packed masks of ``nodes`` (n,), computing the missing ones."""
        known = np.zeros(len(nodes), dtype=bool)
        inside = nodes < len(self.has)
        known[inside] = self.has[nodes[inside]]
        if not known.all():
            self.fill(np.unique(nodes[~known]).tolist(), bitmask)
        return self.table[nodes]

    def decode(self, ids: list[int]) -> str:
        return self.vocab.llg_tokenizer.decode_str(ids)


class LLGuidanceState(GrammarState):
    """Each row is a node of its program's prefix trie; masks are gathered from its table."""

    def __init__(self, grammars, device) -> None:
        super().__init__(grammars, device)
        import llguidance.numpy as llnp

        rows: dict[LLGuidanceProgram, list[int]] = {}
        for i, g in enumerate(grammars):
            rows.setdefault(g.program, []).append(i)
        self._groups = [(program, np.array(idx)) for program, idx in rows.items()]
        for program, _ in self._groups:
            with program.lock:
                if len(program.parent) > program.max_nodes:
                    program.clear()
        self._node = np.zeros(self.batch, dtype=np.int64)  # (B,) trie node of each row
        self._host_done = np.zeros(self.batch, dtype=bool)  # (B,)
        words = grammars[0].program.words
        self._bitmask = llnp.allocate_token_bitmask(self.batch, words * 32)  # (B, W) scratch
        self._eos_word = grammars[0].program.eos_word

    def _packed(self) -> np.ndarray:
        """(B, W) packed masks of every row, {EOS} for done rows."""
        out = np.empty((self.batch, len(self._eos_word)), dtype=np.int32)
        for program, idx in self._groups:
            live = idx[~self._host_done[idx]]
            if live.size:
                with program.lock:
                    out[live] = program.masks(self._node[live], self._bitmask)
        out[self._host_done] = self._eos_word
        return out

    def allowed(self) -> torch.Tensor:
        bits = torch.from_numpy(self._packed())  # (B, W), packed: 32x less to transfer
        return unpack_bitmask(bits.to(self.device), self.vocab_size)

    def advance(self, tokens: torch.Tensor) -> None:
        toks = tokens.cpu().numpy().astype(np.int64)  # the trie lives on the host
        word = np.clip(toks // 32, 0, len(self._eos_word) - 1)
        packed = self._packed()[np.arange(self.batch), word]  # (B,)
        ok = (toks < 32 * len(self._eos_word)) & ((packed >> (toks % 32)) & 1).astype(bool)
        if not ok.all():
            i = int(np.flatnonzero(~ok)[0])
            self._reject(i, int(toks[i]), "the action has ended" if self._host_done[i] else "")
        for program, idx in self._groups:
            live = idx[~self._host_done[idx]]
            with program.lock:
                self._node[live] = [program.child(n, t) for n, t in
                                    zip(self._node[live].tolist(), toks[live].tolist(),
                                        strict=True)]
        self._host_done |= toks == self.eos
        self._done = torch.from_numpy(self._host_done.copy()).to(self.device)

    def all_done(self) -> bool:
        return bool(self._host_done.all())  # no device sync


# ------------------------------------------------------------------------------------ regex
class DFA(NamedTuple):
    next: torch.Tensor  # (S + 1, C + 1) long: next state, -1 = not allowed
    mask: torch.Tensor  # (S + 1, C) bool: allowed columns per state
    tokens: torch.Tensor  # (C,) token id of each column
    column: torch.Tensor  # (V,) column of each token id (C for every unused token)


class RegexProgram:
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
        self.dfa = _OnDevice(DFA(nxt, nxt[:, :n_cols] >= 0, torch.tensor(tokens), column))

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


# ------------------------------------------------------------------------------------- none
class FreeProgram:
    def __init__(self, vocab: Vocab, source: str, vocab_size: int) -> None:
        self.vocab = vocab
        real = torch.zeros(vocab_size, dtype=torch.bool)  # (V,)
        real[:vocab.n_tokens] = True
        self.real = _OnDevice(real)

    def decode(self, ids: list[int]) -> str:
        """Special tokens stay in the text: a "<bos>" emitted by the model makes it invalid."""
        return self.vocab.tokenizer.decode(ids, skip_special_tokens=False,
                                           clean_up_tokenization_spaces=False)


class FreeState(GrammarState):
    """PAG off: every tokenizer token is allowed until EOS (padding rows never are)."""

    def __init__(self, grammars, device) -> None:
        super().__init__(grammars, device)
        self._real = grammars[0].program.real.on(device)  # (V,)

    def allowed(self) -> torch.Tensor:
        out = self._real.expand(self.batch, -1).clone()
        out[self._done] = False
        out[self._done, self.eos] = True
        return out

    def advance(self, tokens: torch.Tensor) -> None:
        tokens = tokens.to(self.device)
        bad = ~self._real[tokens] | (self._done & (tokens != self.eos))
        if bad.any():
            i = int(bad.nonzero()[0])
            self._reject(i, int(tokens[i]))
        self._done = self._done | (tokens == self.eos)


BACKENDS = {"llguidance": (LLGuidanceProgram, LLGuidanceState),
            "regex": (RegexProgram, RegexState),
            "none": (FreeProgram, FreeState)}
