"""The served student's whole TTI in one compiled call (numba): features, auction, followers.

At B = 1 the student's networks are tiny (34k parameters at the paper's sizes), so nearly all
of a TTI in onnxruntime is call overhead: two sessions, their input checks and the Python that
writes the features (:class:`trainers.student.realtime.RealtimeStudent`). Here one nopython
function does what those steps do, in the same order and float32:

==============================  ==========================================================
step                            same maths as
==============================  ==========================================================
history frames of BS and UEs    :class:`StudentLeaderFeatures` / ``StudentFollowerFeatures``
per-UE encoder, attention       :meth:`LeaderStudent.encode` (active UEs only: no padding)
bids, running minimum           :meth:`LeaderStudent.bids`
DCM                             the TopK of ``LeaderStudent.forward`` as the sequential rule
                                of :meth:`LeaderStudent.decode` (RBG n to the highest open bid)
d_i,t bits of the DCM           :func:`textgame.game.intended_bits`
bitmap logits > 0, UCM argmax   ``FollowerStudent.forward``
==============================  ==========================================================

Dense layers are sums of input-weighted rows of W^T (in, out), so the one-hot and zero inputs
that fill the history frames cost nothing, and each layer after the first runs over all active
UEs at once, so a weight row is read once per TTI. Float sums run in another order than
onnxruntime's (reassociated, so LLVM vectorises them), so bids and logits agree to ~1e-6, not
bit for bit; the decisions (DCM, bitmaps, UCMs) are the same
(``tests/test_compiled_student.py``). Greedy only, like onnxruntime.

Weights come from the student directory the ONNX files were exported beside
(``model.safetensors``, read with numpy), and they are checked against ``leader.onnx`` and
``follower.onnx`` when those exist, so this path serves what the onnxruntime fallback serves.
Compiled once per machine into numba's on-disk cache (``__pycache__`` beside this file, or
numba's user-wide cache where that is read-only): ~24 s the first time on the 2-core reference
CPU, ~2 s to load in every later process.
Needs numba (``pip install 'agentic-mac[realtime]'``); without it,
:func:`trainers.student.realtime.load_realtime` falls back to onnxruntime with one log line.

    student = CompiledStudent.load("runs/student/final", max_ues=16)
    dcm, bitmap, ucm = student.decide(leader_obs, follower_obs)   # one call per TTI
    dcm = student.leader(leader_obs)                              # or the game's turn order
    bitmap, ucm = student.followers(follower_obs)
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numba
import numpy as np
from numba.core import types
from numba.experimental import structref
from safetensors.numpy import load_file

from textgame.game import FollowerObs, LeaderObs
from textgame.simulator import COLLISION, ERASURE, SUCCESS
from trainers.marl.features import N_CSI, N_OUTCOMES, bs_ue_frame_dim, follower_frame_dim
from trainers.student.features import DCM_BITS_OFFSET, POSITION_SCALE, CellShape
from trainers.student.model import CONFIG_FILE, WEIGHTS_FILE
from trainers.student.onnx import FOLLOWER_FILE, LEADER_FILE


# Structs that compiled functions take by reference, as a jitclass would, but numba StructRefs:
# numba caches the functions that take them on disk, where a jitclass argument makes every
# process compile them again (~25 s on the 2-core reference CPU). Built from Python with the
# fields in order.
def _unliteral(fields):
    return tuple((name, types.unliteral(typ)) for name, typ in fields)


@structref.register
class LeaderWeightsType(types.StructRef):
    def preprocess_fields(self, fields):
        return _unliteral(fields)


@structref.register
class FollowerWeightsType(types.StructRef):
    def preprocess_fields(self, fields):
        return _unliteral(fields)


@structref.register
class CellStateType(types.StructRef):
    def preprocess_fields(self, fields):
        return _unliteral(fields)


class LeaderWeights(structref.StructRefProxy):
    """:class:`LeaderStudent`'s parameters, float32: the layers' matrices as W^T (in, out),
    the nobody head's (N, H) as torch keeps it."""


class FollowerWeights(structref.StructRefProxy):
    """:class:`FollowerStudent`'s parameters: body layer l is ``body_w[l, :in, :out]`` with
    (in, out) = ``body_dims[l], body_dims[l + 1]`` (zero-padded to the widest layer); the
    bitmap and UCM heads (out, in) as torch keeps them."""


class CellState(structref.StructRefProxy):
    """One cell's history stacks, the BS's last grants and every scratch buffer, allocated once
    (:func:`cell_arrays`)."""


LEADER_FIELDS = ["encoder_w1", "encoder_b1", "encoder_w2", "encoder_b2", "global_w", "global_b",
                 "qk_w", "vo_w", "vo_b", "remaining_w", "grant_embedding", "bid_w", "bid_b",
                 "nobody_w", "nobody_b"]
FOLLOWER_FIELDS = ["body_w", "body_b", "body_dims", "bitmap_w", "bitmap_b", "obey", "ucm_w",
                   "ucm_b"]
CELL_FIELDS = ["episode_ttis", "log_buffer", "log_capacity", "capacity", "global_x", "bs_stack",
               "ue_stack", "grants", "bs_was_active", "ue_was_active", "slots", "h", "q", "v",
               "attended", "first", "context", "probs", "ue_slots", "layer_in", "layer_out", "bids",
               "taken", "dcm", "dcm_bits", "bitmap", "ucm"]
structref.define_proxy(LeaderWeights, LeaderWeightsType, LEADER_FIELDS)
structref.define_proxy(FollowerWeights, FollowerWeightsType, FOLLOWER_FIELDS)
structref.define_proxy(CellState, CellStateType, CELL_FIELDS)


# The proxies' own constructors compile in every process (~1 s each); these are cached.
@numba.njit(cache=True)
def new_leader_weights(*fields):
    return LeaderWeights(*fields)


@numba.njit(cache=True)
def new_follower_weights(*fields):
    return FollowerWeights(*fields)


@numba.njit(cache=True)
def new_cell_state(*fields):
    return CellState(*fields)


def cell_arrays(sizes: tuple[int, ...], hidden: int, widest: int) -> dict[str, np.ndarray]:
    """:class:`CellState`'s arrays, zero. ``global_x`` (Dg,) is the leader's global row
    ``[I_t / 8, *frames]``; ``bs_stack`` (I_max, H, Fb) and ``ue_stack`` (I_max, H, Fu) hold the
    BS's and the UEs' frames, newest first. The layers' activations are one row per active UE
    (``first``, ``h``, ... (I_max, hidden) in rank order; ``layer_in``/``layer_out``
    (I_max, widest) in the order of ``ue_slots``), so a layer reads each weight once per TTI."""
    n, _, h, i, frame_b, frame_u = sizes  # N, K, H, I_max, Fb, Fu
    f32, shapes = np.float32, {
        "capacity": N_CSI, "global_x": 1 + h * (N_OUTCOMES * n + 1), "bs_stack": (i, h, frame_b),
        "ue_stack": (i, h, frame_u), "h": (i, hidden), "q": (i, hidden), "v": (i, hidden),
        "attended": (i, hidden), "first": (i, hidden), "context": hidden, "probs": i,
        "layer_in": (i, widest), "layer_out": (i, widest), "bids": (1 + i, n)}
    arrays = {name: np.zeros(shape, f32) for name, shape in shapes.items()}
    arrays |= {"grants": np.zeros((i, n), np.bool_), "bs_was_active": np.zeros(i, np.bool_),
               "ue_was_active": np.zeros(i, np.bool_), "dcm_bits": np.zeros((1, i, n), np.bool_),
               "bitmap": np.zeros((i, n), np.bool_), "slots": np.zeros(i, np.int64),
               "ue_slots": np.zeros(i, np.int64),
               "taken": np.zeros(1 + i, np.int64), "dcm": np.zeros(n, np.int64),
               "ucm": np.zeros(i, np.int64)}  # dcm_bits as FollowerObs.dcm_bits
    return arrays


# Float sums in any order, multiply-adds fused, so LLVM vectorises the dot products (the
# decisions are what is tested, not the last bit of a bid); no assumption on NaN or inf, which
# the auction's -inf starts need.
FAST = {"reassoc", "contract", "nsz"}


# ------------------------------------------------------------------------- building blocks
@numba.njit(cache=True, fastmath=FAST)
def _accumulate(x, w, row0, out):
    """out += x @ w[row0:row0 + len(x), :len(out)], skipping zero inputs (one-hots, padding)."""
    for j in range(x.shape[0]):
        xj = x[j]
        if xj != 0:
            for o in range(out.shape[0]):
                out[o] += xj * w[row0 + j, o]


@numba.njit(cache=True, fastmath=FAST)
def _dot(a, b):
    """a . b over len(a), float32."""
    total = np.float32(0.0)
    for o in range(a.shape[0]):
        total += a[o] * b[o]
    return total


@numba.njit(cache=True, fastmath=FAST)
def _accumulate_rows(x, n_rows, n_in, w, out, n_out):
    """out[:n_rows, :n_out] += x[:n_rows, :n_in] @ w[:n_in, :n_out], skipping zero inputs
    (ReLU outputs): one layer for every active UE, each row of w read once for all of them."""
    for j in range(n_in):
        for r in range(n_rows):
            xrj = x[r, j]
            if xrj != 0:
                for o in range(n_out):
                    out[r, o] += xrj * w[j, o]


@numba.njit(cache=True)
def _relu(x):
    for o in range(x.shape[0]):
        if x[o] < 0:
            x[o] = 0


@numba.njit(cache=True)
def _shift(stack):
    """(I, H, F): every frame moves one slot back (newest first; slot 0 is rewritten next)."""
    for i in range(stack.shape[0]):
        for k in range(stack.shape[1] - 1, 0, -1):
            stack[i, k] = stack[i, k - 1]


@numba.njit(cache=True)
def _buffer_level(s, dpdus):
    """log1p(dPDUs) / log1p(Q) (as trainers.marl.features._buffer_status): a table up to Q."""
    if 0 <= dpdus < s.log_buffer.shape[0]:
        return s.log_buffer[dpdus]
    return np.float32(np.log1p(np.float32(dpdus)) / s.log_capacity)


@numba.njit(cache=True)
def _frame_head(s, frame, dpdus, csi):
    """A UE frame's first columns, shared by the BS's and the UE's view: active, non-empty,
    buffer level, CSI one-hot."""
    frame[0], frame[1], frame[2] = 1, dpdus > 0, _buffer_level(s, dpdus)
    for c in range(N_CSI):
        frame[3 + c] = csi == c


# --------------------------------------------------------------------------- leader
@numba.njit(cache=True)
def leader_features(s, t, active, ucm, csi, served, queue, outcome):
    """The BS's frames of TTI t (obs arrays (1, I_max), ``outcome`` (1, N)); returns I_t and
    leaves the active slots in rank order in ``s.slots[:I_t]``."""
    max_ues, n_rbgs = s.grants.shape
    k_ucm = s.bs_stack.shape[2] - 8 - n_rbgs
    g, frame_g = s.global_x, N_OUTCOMES * n_rbgs + 1
    for k in range((g.shape[0] - 1) // frame_g - 1, 0, -1):
        g[1 + k * frame_g:1 + (k + 1) * frame_g] = g[1 + (k - 1) * frame_g:1 + k * frame_g]
    for n in range(n_rbgs):
        for o in range(N_OUTCOMES):
            g[1 + n * N_OUTCOMES + o] = outcome[0, n] == o
    g[frame_g] = t / s.episode_ttis
    served_total = 0
    for i in range(max_ues):
        served_total += served[0, i]
    share = np.float32(max(np.float32(served_total), np.float32(1.0)))
    per_rbg = np.float32(n_rbgs * (t + 1))
    _shift(s.bs_stack)
    n_active = 0
    for i in range(max_ues):
        frame = s.bs_stack[i, 0]
        if not active[0, i]:
            frame[:] = 0
            continue
        if not s.bs_was_active[i]:  # just arrived: no history
            s.bs_stack[i] = 0
        _frame_head(s, frame, queue[0, i], csi[0, i])
        for u in range(k_ucm):
            frame[6 + u] = ucm[0, i] == u
        frame[6 + k_ucm] = np.float32(served[0, i]) / per_rbg
        frame[7 + k_ucm] = np.float32(served[0, i]) / share
        for n in range(n_rbgs):
            frame[8 + k_ucm + n] = s.grants[i, n]
        s.slots[n_active] = i
        n_active += 1
    s.bs_was_active[:] = active[0]
    g[0] = n_active / POSITION_SCALE
    return n_active


@numba.njit(cache=True, fastmath=FAST)
def _encode(w, s, n_active):
    """``LeaderStudent.encode`` on the I_t active UEs: ``s.attended`` (I_t, H) after the
    residual attention, ``s.context`` (H,) their mean."""
    stack, slots, first, h, q, v = s.bs_stack, s.slots, s.first, s.h, s.q, s.v
    attended, probs = s.attended, s.probs
    w1, b1, w2, b2 = w.encoder_w1, w.encoder_b1, w.encoder_w2, w.encoder_b2
    hidden, frames, frame_b = b2.shape[0], stack.shape[1], stack.shape[2]
    glob = s.context  # the global embedding first, the pooled context at the end
    glob[:] = w.global_b
    _accumulate(s.global_x, w.global_w, 0, glob)
    for r in range(n_active):  # the encoder's first layer: sparse frames, one UE at a time
        a = first[r]
        a[:] = b1
        position = np.float32(r / POSITION_SCALE)
        for o in range(hidden):
            a[o] += position * w1[0, o]
        for k in range(frames):
            _accumulate(stack[slots[r], k], w1, 1 + k * frame_b, a)
        _relu(a)
        h[r] = b2
    _accumulate_rows(first, n_active, hidden, w2, h, hidden)
    for r in range(n_active):
        _relu(h[r])
        for o in range(hidden):
            h[r, o] += glob[o]
        q[r] = 0
        v[r] = w.vo_b
    _accumulate_rows(h, n_active, hidden, w.qk_w, q, hidden)
    _accumulate_rows(h, n_active, hidden, w.vo_w, v, hidden)
    context = glob
    context[:] = 0
    for r in range(n_active):
        top = np.float32(-np.inf)
        for m in range(n_active):  # scores (eq. of attention_qk): q_r . h_m
            probs[m] = _dot(q[r], h[m])
            top = max(top, probs[m])
        total = np.float32(0.0)
        for m in range(n_active):
            probs[m] = np.exp(probs[m] - top)
            total += probs[m]
        out = attended[r]
        out[:] = h[r]
        for m in range(n_active):
            p = probs[m] / total
            for o in range(hidden):
                out[o] += p * v[m, o]
        for o in range(hidden):
            context[o] += out[o]
    for o in range(hidden):
        context[o] /= np.float32(n_active)


@numba.njit(cache=True, fastmath=FAST)
def leader_network(w, s, queue, csi, n_active):
    """The DCM into ``s.dcm`` (N,) from ready features, and the BS's grants (I_max, N)."""
    dcm, grants, bids, taken, slots = s.dcm, s.grants, s.bids, s.taken, s.slots
    n_rbgs = dcm.shape[0]
    dcm[:] = 0
    grants[:] = False
    if n_active == 0:  # nobody's N bids beat the padded row's NEG ones
        return
    _encode(w, s, n_active)
    attended, capacity = s.attended, s.capacity
    remaining_w, grant_embedding, bid_w, bid_b = (w.remaining_w, w.grant_embedding, w.bid_w,
                                                  w.bid_b)
    hidden = bid_w.shape[0]
    for k in range(n_rbgs):  # row 0: nobody's bids from the pooled context
        bids[0, k] = w.nobody_b[k] + _dot(s.context, w.nobody_w[k])
    for r in range(n_active):  # row 1 + r: UE of rank r + 1 bids for its k-th RBG
        i = slots[r]
        c = capacity[min(max(csi[0, i], 0), N_CSI - 1)]
        queued = np.float32(queue[0, i])
        for k in range(n_rbgs):
            remaining = max(queued - np.float32(k) * c, np.float32(0.0))  # after k grants
            weight = np.log1p(remaining * c)
            bid = bid_b
            for o in range(hidden):  # the bid head on ReLU(attended + remaining + grant k)
                z = attended[r, o] + weight * remaining_w[o] + grant_embedding[k, o]
                bid += max(z, np.float32(0.0)) * bid_w[o]
            bids[1 + r, k] = bid
    for row in range(1 + n_active):  # running minimum: bids non-increasing in k
        for k in range(1, n_rbgs):
            bids[row, k] = min(bids[row, k], bids[row, k - 1])
    taken[:1 + n_active] = 0
    for n in range(n_rbgs):  # RBG n to the highest open bid (= TopK of the bids)
        best, best_bid = 0, np.float32(-np.inf)
        for row in range(1 + n_active):
            k = taken[row]
            if k < n_rbgs and bids[row, k] > best_bid:
                best, best_bid = row, bids[row, k]
        dcm[n] = best
        taken[best] += 1
    for r in range(n_active):
        for n in range(n_rbgs):
            grants[slots[r], n] = dcm[n] == r + 1


@numba.njit(cache=True)
def leader_tti(w, s, t, active, ucm, csi, served, queue, outcome):
    n_active = leader_features(s, t, active, ucm, csi, served, queue, outcome)
    leader_network(w, s, queue, csi, n_active)


# ------------------------------------------------------------------------ followers
@numba.njit(cache=True)
def follower_features(s, active, buffer, channel, dcm_bits, feedback, last_ucm):
    """Every UE slot's frames (obs arrays (1, I_max[, N]))."""
    max_ues, n_rbgs = s.grants.shape
    k_ucm = s.ue_stack.shape[2] - 6 - 5 * n_rbgs
    _shift(s.ue_stack)
    for i in range(max_ues):
        frame = s.ue_stack[i, 0]
        if not active[0, i]:
            frame[:] = 0
            continue
        if not s.ue_was_active[i]:
            s.ue_stack[i] = 0
        _frame_head(s, frame, buffer[0, i], channel[0, i])
        for n in range(n_rbgs):
            fb = feedback[0, i, n]
            frame[6 + n] = dcm_bits[0, i, n]
            frame[6 + n_rbgs + n] = fb == SUCCESS
            frame[6 + 2 * n_rbgs + n] = fb == COLLISION
            frame[6 + 3 * n_rbgs + n] = fb == ERASURE
            frame[6 + 4 * n_rbgs + n] = fb != 0
        for u in range(k_ucm):
            frame[6 + 5 * n_rbgs + u] = last_ucm[0, i] == u
    s.ue_was_active[:] = active[0]


@numba.njit(cache=True, fastmath=FAST)
def follower_network(w, s, active):
    """Bitmaps ``s.bitmap`` (I_max, N) and UCMs ``s.ucm`` (I_max,); inactive slots send nothing."""
    bitmap, ucm, stack, ue_slots = s.bitmap, s.ucm, s.ue_stack, s.ue_slots
    body_w, body_b, dims = w.body_w, w.body_b, w.body_dims
    bitmap_w, bitmap_b, ucm_w, ucm_b, obey = w.bitmap_w, w.bitmap_b, w.ucm_w, w.ucm_b, w.obey
    max_ues, n_rbgs = bitmap.shape
    frames, frame_u, k_ucm = stack.shape[1], stack.shape[2], ucm_b.shape[0]
    n = 0  # active UEs, row r of the layers = slot ue_slots[r]
    for i in range(max_ues):
        bitmap[i] = False
        ucm[i] = 0
        if active[0, i]:
            ue_slots[n] = i
            n += 1
    x, y = s.layer_in, s.layer_out
    d = dims[1]
    for r in range(n):  # the first layer: sparse frames, one UE at a time
        out = x[r, :d]
        out[:] = body_b[0, :d]
        for k in range(frames):
            _accumulate(stack[ue_slots[r], k], body_w[0], k * frame_u, out)
        _relu(out)
    for layer in range(1, dims.shape[0] - 1):
        d_in, d = dims[layer], dims[layer + 1]
        for r in range(n):
            y[r, :d] = body_b[layer, :d]
        _accumulate_rows(x, n, d_in, body_w[layer], y, d)
        for r in range(n):
            _relu(y[r, :d])
        x, y = y, x
    for r in range(n):
        i, out = ue_slots[r], x[r, :d]
        for k in range(n_rbgs):
            logit = bitmap_b[k] + obey * stack[i, 0, DCM_BITS_OFFSET + k] + _dot(out, bitmap_w[k])
            bitmap[i, k] = logit > 0
        best, best_logit = 0, np.float32(-np.inf)
        for u in range(k_ucm):
            logit = ucm_b[u] + _dot(out, ucm_w[u])
            if logit > best_logit:  # the first maximum, as argmax
                best, best_logit = u, logit
        ucm[i] = best


@numba.njit(cache=True)
def follower_tti(w, s, active, buffer, channel, dcm_bits, feedback, last_ucm):
    follower_features(s, active, buffer, channel, dcm_bits, feedback, last_ucm)
    follower_network(w, s, active)


@numba.njit(cache=True)
def intended_bits(s, active):
    """``s.dcm_bits`` (1, I_max, N): d_i,t,n = 1[a_n = rank(i)] (textgame.game.intended_bits)."""
    s.dcm_bits[:] = False
    rank = 0
    for i in range(s.dcm_bits.shape[1]):
        if active[0, i]:
            rank += 1
            for n in range(s.dcm.shape[0]):
                s.dcm_bits[0, i, n] = s.dcm[n] == rank


@numba.njit(cache=True)
def decide_tti(lw, fw, s, t, active, ucm, csi, served, queue, outcome, ue_active, buffer,
               channel, feedback, last_ucm):
    """Leader, the DCM's d_i,t bits, followers: one TTI of one cell."""
    leader_tti(lw, s, t, active, ucm, csi, served, queue, outcome)
    intended_bits(s, ue_active)
    follower_tti(fw, s, ue_active, buffer, channel, s.dcm_bits, feedback, last_ucm)


@numba.njit(cache=True)
def _reset(s):
    s.global_x[:] = 0
    s.bs_stack[:] = 0
    s.ue_stack[:] = 0
    s.grants[:] = False
    s.bs_was_active[:] = False
    s.ue_was_active[:] = False


# --------------------------------------------------------------------------- loading
def _matches(parameter: np.ndarray, initializer: np.ndarray) -> bool:
    """The exporter keeps a parameter as is or folds its transpose into a MatMul."""
    if parameter.size != initializer.size:
        return False
    flat = initializer.ravel()
    return np.array_equal(parameter.ravel(), flat) or (
        parameter.ndim == 2 and np.array_equal(parameter.T.ravel(), flat))


def check_export(directory: Path, weights: dict[str, np.ndarray]) -> None:
    """Every ``leader.*`` (``follower.*``) parameter of ``model.safetensors`` is an initializer
    of ``leader.onnx`` (``follower.onnx``), where that file exists: the compiled path and the
    onnxruntime fallback serve the same weights."""
    import onnx
    from onnx import numpy_helper

    for prefix, name in (("leader.", LEADER_FILE), ("follower.", FOLLOWER_FILE)):
        if not (directory / name).is_file():
            continue
        graph = onnx.load(str(directory / name)).graph
        arrays = [numpy_helper.to_array(t) for t in graph.initializer]
        for key, value in weights.items():
            if key.startswith(prefix) and not any(_matches(value, a) for a in arrays):
                raise ValueError(f"{directory / name} does not hold {key} of {WEIGHTS_FILE}: the "
                                 "export is stale; rewrite it with "
                                 "trainers.student.onnx.export_onnx")


def _t(array: np.ndarray) -> np.ndarray:
    """A torch Linear weight (out, in) as W^T (in, out), C-contiguous float32."""
    return _f32(array.T)


def _f32(array: np.ndarray) -> np.ndarray:
    """An array kept as torch stores it, C-contiguous float32 (a head's (out, in) weight: one
    output's dot product reads one row)."""
    return np.ascontiguousarray(array, dtype=np.float32)


def _v(array: np.ndarray) -> np.ndarray:
    return _f32(array).ravel()


def leader_weights(p: dict[str, np.ndarray]) -> LeaderWeights:
    def w(name: str) -> np.ndarray:
        return p[f"leader.{name}"]

    return new_leader_weights(
        _t(w("ue_encoder.0.weight")), _v(w("ue_encoder.0.bias")), _t(w("ue_encoder.2.weight")),
        _v(w("ue_encoder.2.bias")), _t(w("global_encoder.weight")), _v(w("global_encoder.bias")),
        _t(w("attention_qk.weight")), _t(w("attention_vo.weight")), _v(w("attention_vo.bias")),
        _v(w("remaining_in.weight")), _f32(w("grant_embedding")),
        _v(w("bid_head.weight")), np.float32(w("bid_head.bias")[0]),
        _f32(w("nobody_head.weight")), _v(w("nobody_head.bias")))


def follower_weights(p: dict[str, np.ndarray], depth: int) -> FollowerWeights:
    layers = [p[f"follower.body.{2 * layer}.weight"] for layer in range(depth)]  # (out, in)
    dims = np.array([layers[0].shape[1]] + [w.shape[0] for w in layers], np.int64)
    body_w = np.zeros((depth, dims.max(), dims[1:].max()), np.float32)
    body_b = np.zeros((depth, dims[1:].max()), np.float32)
    for layer, w in enumerate(layers):
        body_w[layer, :w.shape[1], :w.shape[0]] = w.T
        body_b[layer, :w.shape[0]] = p[f"follower.body.{2 * layer}.bias"]
    return new_follower_weights(body_w, body_b, dims, _f32(p["follower.bitmap_head.weight"]),
                                _v(p["follower.bitmap_head.bias"]),
                                np.float32(p["follower.obey"]),
                                _f32(p["follower.ucm_head.weight"]),
                                _v(p["follower.ucm_head.bias"]))


class CompiledStudent:
    """Greedy decisions of one cell with up to ``max_ues`` UE slots, one compiled call per
    step; the interface of :class:`trainers.student.realtime.RealtimeStudent`. Observations
    are the game's (B = 1) and must be valid: indices are clipped only as far as memory safety
    needs."""

    def __init__(self, shape: CellShape, history_len: int, leader_hidden: int,
                 follower_hidden: list[int], weights: dict[str, np.ndarray],
                 max_ues: int) -> None:
        self.shape, self.history_len, self.max_ues = shape, history_len, max_ues
        self.leader_weights = leader_weights(weights)
        self.follower_weights = follower_weights(weights, len(follower_hidden))
        q = shape.buffer_dpdus
        log_capacity = np.log1p(q)  # as trainers.marl.features._buffer_status
        log_buffer = (np.log1p(np.arange(q + 1, dtype=np.float32)) / log_capacity).astype(
            np.float32)
        n, k = shape.n_rbgs, shape.ucm_levels
        sizes = (n, k, history_len, max_ues, bs_ue_frame_dim(n, k), follower_frame_dim(n, k))
        arrays = cell_arrays(sizes, leader_hidden, max(follower_hidden))
        arrays |= {"episode_ttis": shape.episode_ttis, "log_buffer": log_buffer,
                   "log_capacity": float(log_capacity)}
        self.state = new_cell_state(*(arrays[name] for name in CELL_FIELDS))
        # the same memory as the state's (numpy owns it), read after each call
        self.capacity, self.dcm, self.bitmap, self.ucm = (
            arrays["capacity"], arrays["dcm"], arrays["bitmap"], arrays["ucm"])
        self.reset()

    @classmethod
    def load(cls, path: str | os.PathLike, max_ues: int = 16) -> CompiledStudent:
        """From a student directory (``student_config.json``, ``model.safetensors``; checked
        against its ONNX files), compiled and warmed up on the game's dtypes."""
        directory = Path(path)
        if not (directory / CONFIG_FILE).is_file():
            raise FileNotFoundError(f"{directory} holds no {CONFIG_FILE}; expected a directory "
                                    "written by trainers.student.distill (final/ or a checkpoint)")
        meta = json.loads((directory / CONFIG_FILE).read_text())
        weights = load_file(str(directory / WEIGHTS_FILE))
        check_export(directory, weights)
        student = cls(CellShape(**meta["shape"]), meta["history_len"], meta["leader_hidden"],
                      meta["follower_hidden"], weights, max_ues)
        student.warm_up()
        return student

    def warm_up(self) -> None:
        """Compile (or load from numba's cache) every entry point on the game's dtypes."""
        i, n = self.max_ues, self.shape.n_rbgs
        slots = np.zeros((1, i), np.int64)
        obs = LeaderObs(0, np.ones((1, i), bool), np.array([i]), slots, slots, slots, slots,
                        np.zeros((1, n), np.int8), np.ones(N_CSI))
        ue_obs = FollowerObs(0, obs.active, slots, slots, slots, np.zeros((1, i, n), bool),
                             np.zeros((1, i, n), np.int8), slots)
        self.decide(obs, ue_obs)
        self.leader(obs)
        self.followers(ue_obs)
        self.reset()

    def reset(self) -> None:
        """A new episode: empty histories, no grants, no UE seen before."""
        _reset(self.state)
        self.se = None

    def _set_capacity(self, obs: LeaderObs) -> None:
        """dPDUs one RBG carries per CSI state (eq. 1 from the BS's view), per SE table."""
        if obs.spectral_efficiency is not self.se:
            s, se = self.shape, np.asarray(obs.spectral_efficiency)
            self.se = obs.spectral_efficiency
            self.capacity[:] = np.floor(s.rbg_resource_elements * se) / s.dpdu_bits

    def _check(self, obs: LeaderObs | FollowerObs) -> None:
        if obs.active.shape != (1, self.max_ues):
            raise ValueError(f"observation of shape {obs.active.shape}; allowed: one cell of "
                             f"{self.max_ues} UE slots, (1, {self.max_ues}) (load with max_ues "
                             "= the cell's I_max)")

    def leader(self, obs: LeaderObs) -> np.ndarray:
        """The DCM (N,) int64 of this TTI (and the BS remembers it as its grants)."""
        self._check(obs)
        self._set_capacity(obs)
        leader_tti(self.leader_weights, self.state, obs.t, obs.active, obs.ucm, obs.csi,
                   obs.served_rbgs, obs.queue_report, obs.rbg_outcome)
        return self.dcm.copy()

    def followers(self, obs: FollowerObs) -> tuple[np.ndarray, np.ndarray]:
        """Bitmaps (I_max, N) bool and UCMs (I_max,) int64; inactive slots send nothing."""
        self._check(obs)
        follower_tti(self.follower_weights, self.state, obs.active, obs.buffer_dpdus,
                     obs.channel, obs.dcm_bits, obs.feedback, obs.last_ucm)
        return self.bitmap.copy(), self.ucm.copy()

    def decide(self, obs: LeaderObs, ue_obs: FollowerObs
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The whole TTI in one call: DCM (N,), bitmaps (I_max, N), UCMs (I_max,).

        ``ue_obs`` is the UEs' view of this TTI; its ``dcm_bits`` are not read (the UEs hear
        the DCM decided here), so it may come from before the DCM is known."""
        self._check(obs)
        self._check(ue_obs)
        self._set_capacity(obs)
        decide_tti(self.leader_weights, self.follower_weights, self.state, obs.t, obs.active,
                   obs.ucm, obs.csi, obs.served_rbgs, obs.queue_report, obs.rbg_outcome,
                   ue_obs.active, ue_obs.buffer_dpdus, ue_obs.channel, ue_obs.feedback,
                   ue_obs.last_ucm)
        return self.dcm.copy(), self.bitmap.copy(), self.ucm.copy()
