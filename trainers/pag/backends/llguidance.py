"""The ``llguidance`` PAG backend (the default): the Lark CFG of ``grammars/`` on llguidance.

llguidance matchers run on the host; masks are kept per token prefix in a trie (repeated
prefixes cost a lookup) as packed bitmasks, unpacked on the model's device.
"""

from __future__ import annotations

import functools
import threading

import numpy as np
import torch

from trainers.pag.backends.base import GrammarBackend, GrammarProgram, GrammarState, Vocab

_BITS = torch.arange(32, dtype=torch.int32)


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


class LLGuidanceProgram(GrammarProgram):
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


class LLGuidanceBackend(GrammarBackend):
    name = "llguidance"

    def compile(self, vocab: Vocab, source: str, vocab_size: int) -> LLGuidanceProgram:
        return LLGuidanceProgram(vocab, source, vocab_size)

    def start(self, grammars, device: torch.device) -> LLGuidanceState:
        return LLGuidanceState(grammars, device)
