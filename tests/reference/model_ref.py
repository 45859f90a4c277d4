#!/usr/bin/python3
"""Independent PyTorch reference model for engram (MoE + Engram language model).

README
======
What it is
    A from-scratch float64 PyTorch implementation of the model, loss, gradients and optimizer
    pinned down in docs/model.md (which refers to spec/ENGRAM.md §3 hashing and §4 Engram forward).
    It is independent of the C code in src/: it shares ONLY the written spec and the resolved
    config text printed by `engram config CONFIG`. The C test suite loads the parameters and batch
    this script writes and compares its loss, logits, gradients, hash ids and 10-step training
    trajectory against the values below.

Usage
    /usr/bin/python3 model_ref.py CONFIG.yaml OUT.h5 [--engram BIN]
    /usr/bin/python3 model_ref.py --selftest [--engram BIN]
    BIN is the engram binary used to resolve CONFIG (`BIN config CONFIG`); default $ENGRAM_BIN,
    else <repo>/build/engram. Requires torch (1.13 is fine), numpy, h5py, yaml, sympy.

Test set-up (NOT the model's training init)
    * One torch.Generator seeded with run.seed draws, in tensor order (docs/model.md), every
      parameter in float64, which is then rounded to float32; the float32 values are the
      parameters (stored in /params) and are promoted to float64 for all arithmetic.
        matrices (wte, wout, wqkv, wo, FFN/expert weights, router, engram wk, wv):
                                   N(0, 1/sqrt(fan_in)), fan_in = last dimension
        norms (…norm…):            1 + 0.1·N(0,1)
        biases (engram bk, bv):    0.1·N(0,1)
        engram conv [G·D,K]:       N(0, 0.3)   (non-zero so the ShortConv path has gradients)
        engram table [rows,Dh]:    N(0, 0.5)
    * Batch, drawn from the same generator after the parameters: x = uniform ids in [0,V) [B,T];
      y[:, :T-1] = x[:, 1:], y[:, T-1] = one more uniform id per row (B = train.batch_size,
      T = model.seq_len). Both int32.
    * Compression is the identity (no tokenizer): V' = engram.compressed_vocab_size, the
      compressed pad is engram.pad_id_compressed.
    * Forward, loss and autograd backward in float64. Training: train.steps updates on the SAME
      batch; losses[s] = loss of the parameters after s updates (losses[0] == attr "loss").
      Optimizer state (params, m, v) is kept in float64 during training (not re-rounded to
      float32 between steps); /train/final is the float32 rounding of the float64 result.

Output HDF5
    attrs on /: config (resolved YAML text), loss (float64, total), ce_loss, aux_loss
                (= Σ over MoE layers of aux_l, NOT multiplied by moe.aux_loss_coef; loss =
                ce_loss + aux_loss_coef·aux_loss), dropped (int, assignments dropped by capacity
                in the first forward, summed over layers), steps (int),
                param_names (the tensor names in docs/model.md order, one per line; the groups
                below are also created with track_order so they iterate in that order)
    /params/<name>        float32 initial parameters, exact values used (tensor order kept)
    /batch/x, /batch/y    int32 [B,T]
    /logits               float32 [B,T,V] of the first forward
    /grads/<name>         float32 gradient of the total loss (before clipping), every parameter,
                          Engram tables as dense [rows,Dh] (zero in rows not gathered)
    /hash/layer_<l>       int64 [B,T,H_total] global rows of the flat table of Engram block l
    /train/losses         float64 [steps]
    /train/final/<name>   float32 parameters after the last step

Choices where docs/model.md leaves room (also listed in the report)
    * Capacity C = ceil(cf·n_tok·k/E) evaluated in double as math.ceil(cf * n_tok * k / E)
      (left-to-right products, then division).
    * Top-k ordering: sort by (−p, expert index), i.e. ties go to the lower index.
    * Signed sqrt: s' = sign(s)·sqrt(clamp(|s|, min=1e-6)); autograd gives 1/(2·sqrt|s|) for
      |s| > 1e-6 and 0 below, as the doc says (the measure-zero |s| == 1e-6 is not special-cased).
    * aux_loss attr is unscaled (see above). Gradients are stored before clipping.
    * LR schedule for steps−1−w == 0 uses frac = 0; lr_decay 'constant' gives lr for s >= w
      (warm-up still applies), 'cosine' as in the doc.

Self-test (--selftest)
    (1) hashing == tests/data/hash_ids.json (deepseek flavour: multipliers, sizes, offsets, local
        and global ids, every case and layer); (2) central finite differences (eps 1e-6, float64)
        of the total loss w.r.t. random elements of EVERY parameter tensor (table elements drawn
        from gathered rows) for each config in tests/reference/configs — a probe whose
        perturbation changes a MoE routing/capacity decision is skipped and reported;
        (3) capacity.yaml drops > 0 assignments; with capacity_factor forced to 0, and for every
        other config, dropped == 0; (1b) ShortConv, RoPE and attention equal differently
        written formulations (torch conv1d, complex rotation, per-query loop).
"""
import argparse
import json
import math
import os
import subprocess
import sys

import h5py
import numpy as np
import sympy
import torch
import yaml

torch.set_default_dtype(torch.float64)
DT = torch.float64
HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))


# ----------------------------------------------------------------------------------------------
# Config
# ----------------------------------------------------------------------------------------------
def resolve_config(path, engram_bin):
    """Returns (resolved YAML text, dict) from `engram config PATH`."""
    text = subprocess.run([engram_bin, "config", path], check=True, capture_output=True,
                          text=True).stdout
    return text, yaml.safe_load(text)


class Cfg:
    """Typed view of the resolved config (PyYAML reads '1e-08' as a string: coerce)."""

    def __init__(self, c):
        m, mo, en, tr = c["model"], c["moe"], c["engram"], c["train"]
        self.seed = int(c["run"]["seed"])
        self.V, self.D, self.L = int(m["vocab_size"]), int(m["d_model"]), int(m["n_layers"])
        self.nh, self.T, self.G = int(m["n_heads"]), int(m["seq_len"]), int(m["hc_mult"])
        self.tied, self.F = bool(m["tie_embeddings"]), int(m["d_ff"])
        self.norm_eps, self.rope_base = float(m["norm_eps"]), float(m["rope_base"])
        self.moe_layers = [int(l) for l in (mo["layers"] or [])]
        self.E, self.k, self.Fe = int(mo["experts"]), int(mo["top_k"]), int(mo["d_expert"])
        self.S, self.aux_coef = int(mo["shared_experts"]), float(mo["aux_loss_coef"])
        self.cf = float(mo["capacity_factor"])
        self.en_layers = [int(l) for l in (en["layers"] or [])]   # list order matters (primes)
        self.N, self.H, self.Dh = int(en["max_ngram"]), int(en["heads_per_ngram"]), int(en["head_dim"])
        self.bases = [int(b) for b in (en["vocab_bases"] or [])]
        self.en_seed, self.K = int(en["seed"]), int(en["kernel_size"])
        self.lr_mult = float(en["lr_mult"])
        self.qk_eps, self.conv_eps = float(en["qk_norm_eps"]), float(en["conv_norm_eps"])
        self.Vc, self.pad_c = int(en["compressed_vocab_size"]), int(en["pad_id_compressed"])
        if en.get("flavour", "deepseek") != "deepseek":
            raise SystemExit("model_ref.py implements the deepseek hashing flavour only")
        self.steps, self.B, self.lr = int(tr["steps"]), int(tr["batch_size"]), float(tr["lr"])
        self.warmup, self.lr_decay = int(tr["warmup_steps"]), str(tr["lr_decay"])
        self.min_lr_ratio, self.wd = float(tr["min_lr_ratio"]), float(tr["weight_decay"])
        self.clip = float(tr["grad_clip"])
        self.beta1, self.beta2, self.adam_eps = float(tr["beta1"]), float(tr["beta2"]), float(tr["adam_eps"])
        self.H_total = (self.N - 1) * self.H
        self.Ein = self.H_total * self.Dh


# ----------------------------------------------------------------------------------------------
# Engram hashing (spec/ENGRAM.md §3, deepseek flavour)
# ----------------------------------------------------------------------------------------------
def multipliers(seed, layer_id, N, Vc):
    """§3.1: N odd int64 multipliers for one layer."""
    m_max = (2 ** 63 - 1) // Vc
    half_bound = max(1, m_max // 2)
    rng = np.random.default_rng(seed + 10007 * layer_id)
    r = rng.integers(0, half_bound, size=N, dtype=np.int64)
    return [2 * int(v) + 1 for v in r]


def table_sizes(layer_ids, bases, N, H):
    """§3.2: {layer_id: [size of column c]} with one used-set over all layers in list order."""
    used, out = set(), {}
    for lid in layer_ids:
        sizes = []
        for n in range(2, N + 1):
            cur = bases[n - 2] - 1
            for _ in range(H):
                p = cur + 1
                while not sympy.isprime(p) or p in used:
                    p += 1
                used.add(p)
                sizes.append(p)
                cur = p
        out[lid] = sizes
    return out


def hash_local(ids, mult, sizes, N, H, pad_c):
    """§3.3: ids [B,T] (int64) -> local ids [B,T,(N-1)·H] (floor modulo)."""
    ids = np.asarray(ids, dtype=np.int64)
    B, T = ids.shape
    def tok(k):   # x[b][t-k], pad_c before the sequence start
        out = np.full((B, T), pad_c, dtype=np.int64)
        out[:, k:] = ids[:, :T - k]
        return out
    acc = tok(0) * np.int64(mult[0])
    cols = []
    for n in range(2, N + 1):
        acc = np.bitwise_xor(acc, tok(n - 1) * np.int64(mult[n - 1]))
        for j in range(H):
            cols.append(np.mod(acc, np.int64(sizes[(n - 2) * H + j])))   # floor modulo
    return np.stack(cols, axis=-1)


def offsets_of(sizes):
    return [int(v) for v in np.concatenate([[0], np.cumsum(sizes)[:-1]])]


def hash_global(ids, mult, sizes, N, H, pad_c):
    return hash_local(ids, mult, sizes, N, H, pad_c) + np.asarray(offsets_of(sizes), dtype=np.int64)


# ----------------------------------------------------------------------------------------------
# Parameters
# ----------------------------------------------------------------------------------------------
def param_specs(c, rows):
    """[(name, shape, kind)] in docs/model.md order; kind in matrix|norm|bias|conv|table."""
    D, G, E, Fe, S = c.D, c.G, c.E, c.Fe, c.S
    sp = [("wte", (c.V, D), "matrix")]
    if not c.tied:
        sp.append(("wout", (c.V, D), "matrix"))
    sp.append(("norm_f", (D,), "norm"))
    for l in range(c.L):
        p = f"blocks.{l}."
        sp += [(p + "attn_norm", (D,), "norm"), (p + "attn.wqkv", (3 * D, D), "matrix"),
               (p + "attn.wo", (D, D), "matrix"), (p + "ffn_norm", (D,), "norm")]
        if l in c.moe_layers:
            sp += [(p + "moe.router", (E, D), "matrix"), (p + "moe.w1", (E, Fe, D), "matrix"),
                   (p + "moe.w3", (E, Fe, D), "matrix"), (p + "moe.w2", (E, D, Fe), "matrix")]
            if S > 0:
                sp += [(p + "moe.shared_w1", (S, Fe, D), "matrix"),
                       (p + "moe.shared_w3", (S, Fe, D), "matrix"),
                       (p + "moe.shared_w2", (S, D, Fe), "matrix")]
        else:
            sp += [(p + "mlp.w1", (c.F, D), "matrix"), (p + "mlp.w3", (c.F, D), "matrix"),
                   (p + "mlp.w2", (D, c.F), "matrix")]
        if l in c.en_layers:
            sp += [(p + "engram.wk", (G, D, c.Ein), "matrix"), (p + "engram.bk", (G, D), "bias"),
                   (p + "engram.wv", (D, c.Ein), "matrix"), (p + "engram.bv", (D,), "bias"),
                   (p + "engram.norm_k", (G, D), "norm"), (p + "engram.norm_q", (G, D), "norm"),
                   (p + "engram.norm_c", (G, D), "norm"), (p + "engram.conv", (G * D, c.K), "conv"),
                   (p + "engram.table", (rows[l], c.Dh), "table")]
    return sp


def init_params(specs, gen):
    """Test init (see header), rounded to float32 then promoted to float64."""
    params = {}
    for name, shape, kind in specs:
        z = torch.randn(shape, generator=gen, dtype=DT)
        if kind == "matrix":
            v = z / math.sqrt(shape[-1])
        elif kind == "norm":
            v = 1.0 + 0.1 * z
        elif kind == "bias":
            v = 0.1 * z
        elif kind == "conv":
            v = 0.3 * z
        else:  # table
            v = 0.5 * z
        params[name] = v.to(torch.float32).to(DT)
    return params


# ----------------------------------------------------------------------------------------------
# Ops (one function each)
# ----------------------------------------------------------------------------------------------
def rmsnorm(x, w, eps):
    """x / sqrt(mean(x²) + eps) · w over the last dim."""
    return x / torch.sqrt((x * x).mean(dim=-1, keepdim=True) + eps) * w


def silu(x):
    return x * torch.sigmoid(x)


def rope(x, base):
    """Rotate-half RoPE. x [B,T,nh,hd] -> [B,T,nh,hd], position t = 0..T-1."""
    B, T, nh, hd = x.shape
    half = hd // 2
    i = torch.arange(half, dtype=DT)
    theta = base ** (-2.0 * i / hd)                                   # [hd/2]
    ang = torch.arange(T, dtype=DT)[:, None] * theta[None, :]         # [T,hd/2]
    cos, sin = torch.cos(ang)[None, :, None, :], torch.sin(ang)[None, :, None, :]
    x1, x2 = x[..., :half], x[..., half:]
    return torch.cat([x1 * cos - x2 * sin, x2 * cos + x1 * sin], dim=-1)


def attention(a, wqkv, wo, nh, base):
    """Causal multi-head attention. a [B,T,D] -> [B,T,D]."""
    B, T, D = a.shape
    hd = D // nh
    qkv = a @ wqkv.T                                                  # [B,T,D] -> [B,T,3D]
    q, k, v = (qkv[..., i * D:(i + 1) * D].reshape(B, T, nh, hd) for i in range(3))  # [B,T,nh,hd]
    q, k = rope(q, base), rope(k, base)
    s = torch.einsum("bqhd,bkhd->bhqk", q, k) / math.sqrt(hd)        # [B,nh,T,T]
    causal = torch.ones(T, T, dtype=torch.bool).tril()                # key <= query
    s = s.masked_fill(~causal, float("-inf"))
    p = torch.softmax(s, dim=-1)
    o = torch.einsum("bhqk,bkhd->bqhd", p, v).reshape(B, T, D)       # [B,T,nh,hd] -> [B,T,D]
    return o @ wo.T


def swiglu(f, w1, w3, w2):
    """(SiLU(f·w1ᵀ) ⊙ f·w3ᵀ)·w2ᵀ. f [..,D] -> [..,D]."""
    return (silu(f @ w1.T) * (f @ w3.T)) @ w2.T


def moe(f, P, pre, c, stats):
    """MoE FFN. f [B,T,D] -> ([B,T,D], aux scalar). Routing decisions go to stats."""
    B, T, D = f.shape
    E, k = c.E, c.k
    x = f.reshape(B * T, D)                                           # [n_tok,D]
    n_tok = x.shape[0]
    p = torch.softmax(x @ P[pre + "router"].T, dim=-1)                # [n_tok,E]
    pn = p.detach().numpy()
    # top-k: descending probability, ties to the lower expert index
    top = [sorted(range(E), key=lambda e: (-pn[t, e], e))[:k] for t in range(n_tok)]
    cap = math.ceil(c.cf * n_tok * k / E) if c.cf > 0 else None
    load = [0] * E
    kept = []                                                         # token-major admission
    dropped = 0
    for t in range(n_tok):
        row = []
        for e in top[t]:
            if cap is not None and load[e] >= cap:
                row.append(False)
                dropped += 1
            else:
                load[e] += 1
                row.append(True)
        kept.append(row)
    top_i = torch.tensor(top, dtype=torch.long)                       # [n_tok,k]
    keep = torch.tensor(kept, dtype=DT)                               # [n_tok,k]
    p_top = p.gather(1, top_i)                                        # [n_tok,k]
    w = p_top / p_top.sum(dim=1, keepdim=True) * keep                 # renormalised, drops -> 0
    out = torch.zeros_like(x)
    for e in range(E):
        tok, slot = (top_i == e).nonzero(as_tuple=True)
        if len(tok) == 0:
            continue
        y = swiglu(x[tok], P[pre + "w1"][e], P[pre + "w3"][e], P[pre + "w2"][e])  # [n_e,D]
        out = out.index_add(0, tok, w[tok, slot][:, None] * y)
    for s in range(c.S):
        out = out + swiglu(x, P[pre + "shared_w1"][s], P[pre + "shared_w3"][s], P[pre + "shared_w2"][s])
    # aux = E·Σ f_i·P_i, f counted before drops and constant for the gradient
    counts = torch.bincount(top_i.reshape(-1), minlength=E).to(DT)    # [E]
    f_i = counts / (n_tok * k)
    aux = E * (f_i * p.mean(dim=0)).sum()
    stats["dropped"] += dropped
    stats["routing"].append((tuple(map(tuple, top)), tuple(map(tuple, kept))))
    return out.reshape(B, T, D), aux


def shortconv(u, norm_c, conv, K, dil, eps):
    """Depthwise causal dilated conv on RMS-normed branches. u [B,T,G,D] -> y [B,T,G,D] (pre-SiLU)."""
    B, T, G, D = u.shape
    z = rmsnorm(u, norm_c, eps).reshape(B, T, G * D)                  # [B,T,G,D] -> [B,T,G·D], c = g·D+d
    y = torch.zeros_like(z)
    for j in range(K):
        sh = (K - 1 - j) * dil                                        # y[t] += conv[:,j]·z[t-sh]
        if sh < T:
            y = y + torch.cat([torch.zeros(B, sh, G * D, dtype=DT), z[:, :T - sh] * conv[:, j]], dim=1)
    return y.reshape(B, T, G, D)                                      # [B,T,G·D] -> [B,T,G,D]


def engram(h, rows, P, pre, c):
    """Engram block (ENGRAM.md §4). h [B,T,G,D], rows [B,T,H_total] -> engram_out [B,T,G,D]."""
    B, T, G, D = h.shape
    e = P[pre + "table"][rows].reshape(B, T, c.Ein)                   # [B,T,H_total,Dh] -> [B,T,Ein]
    k = torch.einsum("bti,gdi->btgd", e, P[pre + "wk"]) + P[pre + "bk"]  # [B,T,G,D]
    k = rmsnorm(k, P[pre + "norm_k"], c.qk_eps)                       # per-branch weight [G,D]
    q = rmsnorm(h, P[pre + "norm_q"], c.qk_eps)                       # [B,T,G,D]
    s = (k * q).sum(dim=-1) / math.sqrt(D)                            # [B,T,G]
    s2 = torch.sign(s) * torch.sqrt(torch.clamp(s.abs(), min=1e-6))
    alpha = torch.sigmoid(s2)                                         # [B,T,G]
    v = e @ P[pre + "wv"].T + P[pre + "bv"]                           # [B,T,Ein] -> [B,T,D]
    u = alpha[..., None] * v[:, :, None, :]                           # [B,T,G,D]
    y = shortconv(u, P[pre + "norm_c"], P[pre + "conv"], c.K, c.N, c.conv_eps)
    return u + silu(y)


# ----------------------------------------------------------------------------------------------
# Model
# ----------------------------------------------------------------------------------------------
def forward(P, x, y, hashes, c):
    """Returns (loss, ce, aux_sum, logits [B,T,V], stats)."""
    B, T = x.shape
    stats = {"dropped": 0, "routing": []}
    xl = torch.as_tensor(x, dtype=torch.long)
    h = P["wte"][xl][:, :, None, :].expand(B, T, c.G, c.D)            # [B,T,D] -> [B,T,G,D]
    aux_sum = torch.zeros((), dtype=DT)
    for l in range(c.L):
        pre = f"blocks.{l}."
        if l in c.en_layers:
            h = h + engram(h, torch.as_tensor(hashes[l], dtype=torch.long), P, pre + "engram.", c)
        a = rmsnorm(h.mean(dim=2), P[pre + "attn_norm"], c.norm_eps)  # [B,T,G,D] -> [B,T,D]
        h = h + attention(a, P[pre + "attn.wqkv"], P[pre + "attn.wo"], c.nh, c.rope_base)[:, :, None, :]
        f = rmsnorm(h.mean(dim=2), P[pre + "ffn_norm"], c.norm_eps)   # [B,T,G,D] -> [B,T,D]
        if l in c.moe_layers:
            o, aux = moe(f, P, pre + "moe.", c, stats)
            aux_sum = aux_sum + aux
        else:
            o = swiglu(f, P[pre + "mlp.w1"], P[pre + "mlp.w3"], P[pre + "mlp.w2"])
        h = h + o[:, :, None, :]
    hf = rmsnorm(h.mean(dim=2), P["norm_f"], c.norm_eps)              # [B,T,G,D] -> [B,T,D]
    wout = P["wte"] if c.tied else P["wout"]
    logits = hf @ wout.T                                              # [B,T,V]
    ce = torch.nn.functional.cross_entropy(logits.reshape(B * T, c.V),
                                           torch.as_tensor(y, dtype=torch.long).reshape(-1))
    loss = ce + c.aux_coef * aux_sum
    return loss, ce, aux_sum, logits, stats


def loss_and_grads(P, x, y, hashes, c):
    Pg = {n: t.detach().clone().requires_grad_(True) for n, t in P.items()}
    loss, ce, aux, logits, stats = forward(Pg, x, y, hashes, c)
    loss.backward()
    grads = {n: t.grad.detach().clone() for n, t in Pg.items()}
    return loss.item(), ce.item(), aux.item(), logits.detach(), stats, grads


# ----------------------------------------------------------------------------------------------
# Optimizer (docs/model.md "Optimizer")
# ----------------------------------------------------------------------------------------------
def lr_at(s, c):
    w = c.warmup
    if s < w:
        return c.lr * (s + 1) / w
    if c.lr_decay == "constant":
        return c.lr
    den = c.steps - 1 - w
    frac = (s - w) / den if den != 0 else 0.0
    m = c.min_lr_ratio * c.lr
    return m + (c.lr - m) * (1 + math.cos(math.pi * frac)) / 2


def train(P0, specs, x, y, hashes, c):
    kinds = {n: k for n, _, k in specs}
    P = {n: t.clone() for n, t in P0.items()}
    M = {n: torch.zeros_like(t) for n, t in P.items()}
    Vv = {n: torch.zeros_like(t) for n, t in P.items()}
    gathered = {f"blocks.{l}.engram.table": torch.as_tensor(np.unique(hashes[l]), dtype=torch.long)
                for l in c.en_layers}
    losses = []
    b1, b2, eps = c.beta1, c.beta2, c.adam_eps
    for s in range(c.steps):
        loss, _, _, _, _, g = loss_and_grads(P, x, y, hashes, c)
        losses.append(loss)
        if c.clip > 0:
            n = math.sqrt(sum(float((t * t).sum()) for t in g.values()))
            scale = c.clip / (n + 1e-6)
            if scale < 1:
                g = {k: t * scale for k, t in g.items()}
        lr, t = lr_at(s, c), s + 1
        for name in P:
            if kinds[name] == "table":
                r = gathered[name]                                    # lazy: gathered rows only
                gr = g[name][r]
                M[name][r] = b1 * M[name][r] + (1 - b1) * gr
                Vv[name][r] = b2 * Vv[name][r] + (1 - b2) * gr * gr
                mh, vh = M[name][r] / (1 - b1 ** t), Vv[name][r] / (1 - b2 ** t)
                P[name][r] = P[name][r] - lr * c.lr_mult * mh / (torch.sqrt(vh) + eps)
            else:
                M[name] = b1 * M[name] + (1 - b1) * g[name]
                Vv[name] = b2 * Vv[name] + (1 - b2) * g[name] * g[name]
                p = P[name]
                if kinds[name] in ("matrix", "conv"):
                    p = p - lr * c.wd * p                             # decoupled decay
                mh, vh = M[name] / (1 - b1 ** t), Vv[name] / (1 - b2 ** t)
                P[name] = p - lr * mh / (torch.sqrt(vh) + eps)
    return losses, P


# ----------------------------------------------------------------------------------------------
# Driver
# ----------------------------------------------------------------------------------------------
def build(c):
    """Hashes, parameter specs, params and batch for a config."""
    mult = {l: multipliers(c.en_seed, l, c.N, c.Vc) for l in c.en_layers}
    sizes = table_sizes(c.en_layers, c.bases, c.N, c.H) if c.en_layers else {}
    rows = {l: sum(sizes[l]) for l in c.en_layers}
    specs = param_specs(c, rows)
    gen = torch.Generator().manual_seed(c.seed)
    P = init_params(specs, gen)
    x = torch.randint(0, c.V, (c.B, c.T), generator=gen).numpy().astype(np.int32)
    y = np.empty_like(x)
    y[:, :-1] = x[:, 1:]
    y[:, -1] = torch.randint(0, c.V, (c.B,), generator=gen).numpy()
    # compression is the identity: ids' = x
    hashes = {l: hash_global(x, mult[l], sizes[l], c.N, c.H, c.pad_c) for l in c.en_layers}
    return specs, P, x, y, hashes


def run(cfg_path, out_path, engram_bin):
    text, raw = resolve_config(cfg_path, engram_bin)
    c = Cfg(raw)
    specs, P, x, y, hashes = build(c)
    loss, ce, aux, logits, stats, grads = loss_and_grads(P, x, y, hashes, c)
    losses, final = train(P, specs, x, y, hashes, c)
    assert abs(losses[0] - loss) < 1e-12
    with h5py.File(out_path, "w") as f:
        f.attrs["config"] = text
        f.attrs["loss"], f.attrs["ce_loss"], f.attrs["aux_loss"] = loss, ce, aux
        f.attrs["dropped"] = np.int64(stats["dropped"])
        f.attrs["steps"] = np.int64(c.steps)
        f.attrs["param_names"] = "\n".join(n for n, _, _ in specs)   # tensor order of docs/model.md
        for grp in ("params", "grads", "train/final"):
            f.create_group(grp, track_order=True)                     # iterate in tensor order
        for n, _, _ in specs:
            f[f"params/{n}"] = P[n].to(torch.float32).numpy()
            f[f"grads/{n}"] = grads[n].to(torch.float32).numpy()
            f[f"train/final/{n}"] = final[n].to(torch.float32).numpy()
        f["batch/x"], f["batch/y"] = x, y
        f["logits"] = logits.to(torch.float32).numpy()
        for l in c.en_layers:
            f[f"hash/layer_{l}"] = hashes[l].astype(np.int64)
        f["train/losses"] = np.asarray(losses, dtype=np.float64)
    print(f"{os.path.basename(cfg_path)}: loss={loss:.10f} ce={ce:.10f} aux={aux:.10f} "
          f"dropped={stats['dropped']} final_loss={losses[-1]:.10f} -> {out_path}")
    return loss, ce, aux, stats["dropped"], losses


# ----------------------------------------------------------------------------------------------
# Self-test
# ----------------------------------------------------------------------------------------------
def selftest_hash():
    d = json.load(open(os.path.join(REPO, "tests", "data", "hash_ids.json")))
    ok = True
    for case in d["cases"]:
        Vc, N, H = case["tokenizer_vocab_size"], case["max_ngram_size"], case["n_head_per_ngram"]
        sizes = table_sizes(case["layer_ids"], case["engram_vocab_size"], N, H)
        for lid in case["layer_ids"]:
            gold = case["by_flavour"]["deepseek"][str(lid)]
            m = multipliers(case["seed"], lid, N, Vc)
            loc = hash_local(case["input_ids_compressed"], m, sizes[lid], N, H, case["pad_id_compressed"])
            glb = hash_global(case["input_ids_compressed"], m, sizes[lid], N, H, case["pad_id_compressed"])
            checks = {"multipliers": m == gold["multipliers"],
                      "flat_sizes": sizes[lid] == gold["flat_sizes"],
                      "offsets": offsets_of(sizes[lid]) == gold["offsets"],
                      "local": loc.tolist() == gold["hash_ids_local"],
                      "global": glb.tolist() == gold["hash_ids_global"]}
            bad = [k for k, v in checks.items() if not v]
            ok &= not bad
            print(f"  hash {case['name']:18s} layer {lid:2d}: " + ("ok" if not bad else f"FAIL {bad}"))
    return ok


def selftest_fd(cfg_path, engram_bin, per_tensor=3, eps=1e-6):
    _, raw = resolve_config(cfg_path, engram_bin)
    c = Cfg(raw)
    specs, P, x, y, hashes = build(c)
    _, _, _, _, stats0, grads = loss_and_grads(P, x, y, hashes, c)
    rng = np.random.default_rng(12345)
    worst, n_probe, skipped = 0.0, 0, []
    for name, shape, kind in specs:
        for _ in range(per_tensor):
            if kind == "table":
                l = int(name.split(".")[1])
                r = int(rng.choice(np.unique(hashes[l])))
                idx = (r, int(rng.integers(shape[1])))
            else:
                idx = tuple(int(rng.integers(s)) for s in shape)
            vals, same = [], True
            for sgn in (1, -1):
                Q = dict(P)
                Q[name] = P[name].clone()
                Q[name][idx] += sgn * eps
                with torch.no_grad():
                    lv, _, _, _, st = forward(Q, x, y, hashes, c)
                vals.append(lv.item())
                same &= st["routing"] == stats0["routing"]
            if not same:
                skipped.append((name, idx))
                continue
            fd = (vals[0] - vals[1]) / (2 * eps)
            ad = grads[name][idx].item()
            err = abs(fd - ad) / max(1e-3, abs(ad))
            worst = max(worst, err)
            n_probe += 1
            if err > 1e-5:
                print(f"    FD mismatch {name}{idx}: fd={fd:.12e} autograd={ad:.12e} rel={err:.2e}")
    ok = worst <= 1e-5
    print(f"  FD {os.path.basename(cfg_path):20s}: {n_probe} probes over {len(specs)} tensors, "
          f"worst rel err {worst:.2e}, skipped {len(skipped)} (routing flip) "
          + ("ok" if ok else "FAIL"))
    for s in skipped:
        print(f"    skipped {s}")
    return ok, stats0["dropped"], c


def selftest_ops():
    """Cross-check ops against differently written formulations."""
    g = torch.Generator().manual_seed(5)
    ok = True
    # ShortConv vs torch conv1d (pad (K-1)·δ on both sides, keep the first T outputs: §4.4b)
    B, T, G, D, K, dil = 2, 13, 2, 5, 4, 3
    u, nc, cw = torch.randn(B, T, G, D, generator=g), torch.randn(G, D, generator=g), torch.randn(G * D, K, generator=g)
    y1 = shortconv(u, nc, cw, K, dil, 1e-5).reshape(B, T, G * D)
    z = rmsnorm(u, nc, 1e-5).reshape(B, T, G * D).transpose(1, 2)      # [B,G·D,T]
    y2 = torch.nn.functional.conv1d(z, cw[:, None, :], padding=(K - 1) * dil, dilation=dil,
                                    groups=G * D)[..., :T].transpose(1, 2)
    e1 = (y1 - y2).abs().max().item()
    # RoPE vs complex rotation of (x_i, x_{i+hd/2})
    x = torch.randn(2, 7, 3, 8, generator=g)
    r1 = rope(x, 10000.0)
    zc = torch.complex(x[..., :4], x[..., 4:])
    ang = torch.arange(7, dtype=DT)[:, None] * 10000.0 ** (-2.0 * torch.arange(4, dtype=DT) / 8)
    zc = zc * torch.polar(torch.ones_like(ang), ang)[None, :, None, :]
    e2 = (r1 - torch.cat([zc.real, zc.imag], dim=-1)).abs().max().item()
    # attention vs per-query loop over visible keys
    D, nh, T = 8, 2, 5
    a, wqkv, wo = torch.randn(1, T, D, generator=g), torch.randn(3 * D, D, generator=g), torch.randn(D, D, generator=g)
    o1 = attention(a, wqkv, wo, nh, 10000.0)
    qkv = a[0] @ wqkv.T
    q = rope(qkv[None, :, :D].reshape(1, T, nh, 4), 10000.0)[0]
    k = rope(qkv[None, :, D:2 * D].reshape(1, T, nh, 4), 10000.0)[0]
    v = qkv[:, 2 * D:].reshape(T, nh, 4)
    o2 = torch.zeros(T, D)
    for t in range(T):
        for j in range(nh):
            w = torch.softmax(torch.stack([q[t, j] @ k[s, j] / 2.0 for s in range(t + 1)]), 0)
            o2[t, j * 4:(j + 1) * 4] = sum(w[s] * v[s, j] for s in range(t + 1))
    e3 = (o1[0] - o2 @ wo.T).abs().max().item()
    for nm, e in (("shortconv vs conv1d", e1), ("rope vs complex", e2), ("attention vs loop", e3)):
        ok &= e < 1e-12
        print(f"  {nm:22s}: max abs diff {e:.1e} " + ("ok" if e < 1e-12 else "FAIL"))
    return ok


def selftest(engram_bin):
    import glob
    import tempfile
    ok = True
    print("(1) hashing vs tests/data/hash_ids.json (deepseek flavour)")
    ok &= selftest_hash()
    print("(1b) op cross-checks")
    ok &= selftest_ops()
    print("(2) finite differences (central, eps 1e-6, float64)")
    cfgs = sorted(glob.glob(os.path.join(HERE, "configs", "*.yaml")))
    dropped = {}
    for p in cfgs:
        r, dr, c = selftest_fd(p, engram_bin)
        ok &= r
        dropped[os.path.basename(p)] = (dr, c)
    print("(3) capacity drops")
    for name, (dr, c) in dropped.items():
        want = (dr > 0) if c.cf > 0 else (dr == 0)
        ok &= want
        print(f"  {name:20s}: cf={c.cf} dropped={dr} " + ("ok" if want else "FAIL"))
    cap = os.path.join(HERE, "configs", "capacity.yaml")
    with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False) as tf:
        raw = yaml.safe_load(open(cap))
        raw["moe"]["capacity_factor"] = 0
        yaml.safe_dump(raw, tf)
    try:
        _, raw = resolve_config(tf.name, engram_bin)
        c = Cfg(raw)
        assert c.cf == 0
        specs, P, x, y, hashes = build(c)
        with torch.no_grad():
            _, _, _, _, st = forward(P, x, y, hashes, c)
        want = st["dropped"] == 0
        ok &= want
        print(f"  capacity.yaml with cf=0: dropped={st['dropped']} " + ("ok" if want else "FAIL"))
    finally:
        os.unlink(tf.name)
    print("SELFTEST " + ("PASSED" if ok else "FAILED"))
    return ok


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("config", nargs="?")
    ap.add_argument("out", nargs="?")
    ap.add_argument("--engram", default=os.environ.get("ENGRAM_BIN", os.path.join(REPO, "build", "engram")))
    ap.add_argument("--selftest", action="store_true")
    a = ap.parse_args()
    if a.selftest:
        sys.exit(0 if selftest(a.engram) else 1)
    if not a.config or not a.out:
        ap.error("CONFIG.yaml and OUT.h5 are required (or --selftest)")
    run(a.config, a.out, a.engram)


if __name__ == "__main__":
    main()
