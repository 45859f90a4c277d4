"""Vectorised, device-agnostic PyTorch implementation of exactly the model in model_ref.py.

What it is
    The PyTorch side of the GPU training benchmark (tests/reference/bench_torch.py --device cuda,
    or --fast on the CPU): the same forward as model_ref.forward — G residual branches, Engram,
    RoPE attention, SwiGLU, MoE with top-k / capacity / aux loss — written with batched tensor ops
    that run on whatever device and in whatever dtype the inputs have (float64 in the test, float32
    for benchmarks, bf16 under torch.autocast on CUDA). model_fast_matches_ref.py checks loss and
    every gradient against model_ref in float64 on every tests/reference/configs/*.yaml.
What it is not
    A second specification: model_ref.py (and docs/model.md behind it) is the definition. It does
    not return logits or routing stats, and it does not hash (rows come in as indices).

Axes: B batch, T sequence, G residual branches (hc_mult), D model width, nh heads, hd = D/nh,
      V vocab, E routed experts, k = top_k, Fe d_expert, n = B·T tokens, H_total Engram heads,
      Dh Engram head width, Ein = H_total·Dh.

Host syncs: none, except one per MoE layer when moe.capacity_factor = 0 (dropless): each expert's
slice length must be known on the host to run it as a dense GEMM (see moe_dropless_).
"""
import math

import torch
import torch.nn.functional as F

_SDPA = getattr(F, "scaled_dot_product_attention", None)   # torch >= 2.0; a plain version below
_ROPE = {}   # (T, hd, base, device, dtype) -> (cos, sin) [T,hd], each half repeated


def rmsnorm(x, w, eps):
    """x / sqrt(mean(x²) + eps) · w over the last dim."""
    return x * torch.rsqrt((x * x).mean(dim=-1, keepdim=True) + eps) * w


def swiglu(f, w1, w3, w2):
    """(SiLU(f·w1ᵀ) ⊙ f·w3ᵀ)·w2ᵀ. f [..,D] -> [..,D]."""
    return (F.silu(f @ w1.T) * (f @ w3.T)) @ w2.T


def rope_tables(T, hd, base, device, dtype):
    """cos, sin [T,hd] of model_ref.rope (theta_i = base^(-2i/hd), angles built in float64)."""
    key = (T, hd, base, device, dtype)
    if key not in _ROPE:
        i = torch.arange(hd // 2, dtype=torch.float64, device=device)
        ang = torch.arange(T, dtype=torch.float64, device=device)[:, None] * base ** (-2.0 * i / hd)
        ang = torch.cat([ang, ang], dim=-1)                           # [T,hd/2] -> [T,hd]
        _ROPE[key] = (torch.cos(ang).to(dtype), torch.sin(ang).to(dtype))
    return _ROPE[key]


def rope(x, cos, sin):
    """Rotate-half RoPE on x [B,nh,T,hd]: (x1,x2) -> (x1·cos - x2·sin, x2·cos + x1·sin)."""
    half = x.shape[-1] // 2
    rot = torch.cat([-x[..., half:], x[..., :half]], dim=-1)
    return x * cos + rot * sin


def attention(a, wqkv, wo, nh, base):
    """Causal multi-head attention, scale 1/sqrt(hd). a [B,T,D] -> [B,T,D]."""
    B, T, D = a.shape
    hd = D // nh
    qkv = (a @ wqkv.T).view(B, T, 3, nh, hd)                          # [B,T,3D] -> [B,T,3,nh,hd]
    q, k, v = (qkv[:, :, i].transpose(1, 2) for i in range(3))       # [B,nh,T,hd] each
    cos, sin = rope_tables(T, hd, base, a.device, q.dtype)
    q, k = rope(q, cos, sin), rope(k, cos, sin)
    if _SDPA is not None:
        o = _SDPA(q, k, v, is_causal=True)                            # default scale 1/sqrt(hd)
    else:                                                             # torch < 2.0 (Debian's 1.13)
        s = (q @ k.transpose(-1, -2)) / math.sqrt(hd)                 # [B,nh,T,T]
        future = torch.ones(T, T, dtype=torch.bool, device=a.device).triu(1)
        o = torch.softmax(s.masked_fill(future, float("-inf")), dim=-1) @ v
    return o.transpose(1, 2).reshape(B, T, D) @ wo.T                  # [B,nh,T,hd] -> [B,T,D]


def moe_capacity_(xf, top_i, w, P, pre, cap):
    """Routed experts with capacity cap: static [E,cap] slots, batched GEMMs, no host sync.

    Admission is token-major (model_ref.moe): assignment a = t·k + j is kept when fewer than cap
    earlier assignments went to its expert. xf [n,D], top_i [n,k], w [n,k] (0 where dropped is
    applied here) -> [n,D]."""
    n, D = xf.shape
    k = top_i.shape[1]
    E = P[pre + "w1"].shape[0]
    flat = top_i.reshape(-1)                                          # [n·k] token-major
    hot = flat[:, None] == torch.arange(E, device=xf.device)          # [n·k,E]
    rank = hot.long().cumsum(0).gather(1, flat[:, None])[:, 0] - 1    # earlier assignments, same e
    keep = rank < cap                                                 # [n·k]
    dest = torch.where(keep, flat * cap + rank, torch.full_like(flat, E * cap))   # E·cap = bin
    src = xf[:, None, :].expand(n, k, D).reshape(n * k, D)
    slots = xf.new_zeros(E * cap + 1, D).index_copy(0, dest, src)    # [E·cap+1,D]; last row: bin
    xe = slots[:E * cap].view(E, cap, D)                              # [E,cap,D], unused slots 0
    h = F.silu(torch.bmm(xe, P[pre + "w1"].transpose(1, 2))) * torch.bmm(xe, P[pre + "w3"].transpose(1, 2))
    ye = torch.bmm(h, P[pre + "w2"].transpose(1, 2)).reshape(E * cap, D)   # [E,cap,Fe] -> [E·cap,D]
    ye = torch.cat([ye, ye.new_zeros(1, D)])                          # dropped read a zero row
    ya = ye.index_select(0, dest).view(n, k, D)                       # [n,k,D]
    return (ya * (w * keep.view(n, k))[..., None]).sum(dim=1).to(xf.dtype)   # autocast: ya bf16


def moe_dropless_(xf, top_i, w, P, pre):
    """Routed experts without capacity: assignments sorted by expert, each expert's SwiGLU on its
    contiguous slice. The slice lengths are the one host sync (dense GEMMs need their shapes).
    xf [n,D], top_i [n,k], w [n,k] -> [n,D]."""
    k = top_i.shape[1]
    E = P[pre + "w1"].shape[0]
    flat = top_i.reshape(-1)                                          # [n·k] token-major
    _, order = torch.sort(flat, stable=True)                          # grouped by expert
    tok = order // k                                                  # token of each, sorted
    lens = torch.bincount(flat, minlength=E).tolist()                 # host sync
    xs = xf.index_select(0, tok).split(lens)                          # E slices [n_e,D]
    ys = torch.cat([swiglu(xs[e], P[pre + "w1"][e], P[pre + "w3"][e], P[pre + "w2"][e])
                    for e in range(E) if lens[e] > 0])                # [n·k,D]
    ys = ys * w.reshape(-1)[order][:, None]
    return xf.new_zeros(xf.shape).index_add(0, tok, ys.to(xf.dtype))   # autocast: ys may be bf16


def moe(f, P, pre, c):
    """MoE FFN (model_ref.moe). f [B,T,D] -> ([B,T,D], aux scalar)."""
    B, T, D = f.shape
    E, k = c.E, c.k
    xf = f.reshape(B * T, D)                                          # [n,D]
    n = xf.shape[0]
    p = torch.softmax(xf @ P[pre + "router"].T, dim=-1)               # [n,E]
    # torch.topk: descending probability. model_ref breaks ties toward the lower expert index;
    # with continuous random inputs ties do not occur (under bf16 autocast they may: the order of
    # tied experts is then unspecified, which the benchmark does not care about).
    p_top, top_i = torch.topk(p, k, dim=-1)                           # [n,k]
    w = p_top / p_top.sum(dim=1, keepdim=True)                        # renormalised; drops -> 0 below
    if c.cf > 0:
        out = moe_capacity_(xf, top_i, w, P, pre, math.ceil(c.cf * n * k / E))
    else:
        out = moe_dropless_(xf, top_i, w, P, pre)
    if c.S > 0:   # S shared experts == one SwiGLU of width S·Fe (their weights concatenated)
        w1 = P[pre + "shared_w1"].reshape(-1, D)                      # [S,Fe,D] -> [S·Fe,D]
        w3 = P[pre + "shared_w3"].reshape(-1, D)
        w2 = P[pre + "shared_w2"].permute(1, 0, 2).reshape(D, -1)     # [S,D,Fe] -> [D,S·Fe]
        out = out + swiglu(xf, w1, w3, w2).to(out.dtype)
    # aux = E·Σ f_i·P_i, f counted before drops and constant for the gradient
    counts = torch.bincount(top_i.reshape(-1), minlength=E).to(p.dtype)
    aux = E * (counts / (n * k) * p.mean(dim=0)).sum()
    return out.view(B, T, D), aux


def shortconv(u, norm_c, conv, K, dil, eps):
    """Depthwise causal dilated conv on RMS-normed branches (model_ref.shortconv), as K shifted
    slices of the left-padded input. u [B,T,G,D] -> y [B,T,G,D] (pre-SiLU)."""
    B, T, G, D = u.shape
    z = rmsnorm(u, norm_c, eps).reshape(B, T, G * D)                  # c = g·D+d
    zp = F.pad(z, (0, 0, (K - 1) * dil, 0))                           # [B,(K-1)·dil+T,G·D]
    y = zp[:, 0:T] * conv[:, 0]                                       # y[t] += conv[:,j]·z[t-(K-1-j)·dil]
    for j in range(1, K):
        y = y + zp[:, j * dil:j * dil + T] * conv[:, j]
    return y.view(B, T, G, D)


def engram(h, rows, P, pre, c):
    """Engram block (model_ref.engram). h [B,T,G,D], rows [B,T,H_total] -> [B,T,G,D]."""
    B, T, G, D = h.shape
    e = P[pre + "table"][rows].reshape(B, T, c.Ein)                   # [B,T,H_total,Dh] -> [B,T,Ein]
    k = (e @ P[pre + "wk"].reshape(G * D, c.Ein).T).view(B, T, G, D) + P[pre + "bk"]
    k = rmsnorm(k, P[pre + "norm_k"], c.qk_eps)                       # [B,T,G,D]
    q = rmsnorm(h, P[pre + "norm_q"], c.qk_eps)                       # [B,T,G,D]
    s = (k * q).sum(dim=-1) / math.sqrt(D)                            # [B,T,G]
    alpha = torch.sigmoid(torch.sign(s) * torch.sqrt(torch.clamp(s.abs(), min=1e-6)))
    v = e @ P[pre + "wv"].T + P[pre + "bv"]                           # [B,T,Ein] -> [B,T,D]
    u = alpha[..., None] * v[:, :, None, :]                           # [B,T,G,D]
    y = shortconv(u, P[pre + "norm_c"], P[pre + "conv"], c.K, c.N, c.conv_eps)
    return u + F.silu(y)


def branch_mean_(h):
    """[B,T,G,D] -> [B,T,D]; G = 1 is a view (the mean of one value is that value)."""
    return h[:, :, 0] if h.shape[2] == 1 else h.mean(dim=2)


def forward(P, x, y, rows, c):
    """model_ref.forward without logits/stats. x, y long [B,T]; rows {layer: long [B,T,H_total]},
    all on one device. Returns (loss, ce, aux_sum)."""
    B, T = x.shape
    h = P["wte"][x][:, :, None, :].expand(B, T, c.G, c.D)             # [B,T,D] -> [B,T,G,D]
    aux_sum = None
    for l in range(c.L):
        pre = f"blocks.{l}."
        if l in c.en_layers:
            h = h + engram(h, rows[l], P, pre + "engram.", c)
        a = rmsnorm(branch_mean_(h), P[pre + "attn_norm"], c.norm_eps)
        h = h + attention(a, P[pre + "attn.wqkv"], P[pre + "attn.wo"], c.nh, c.rope_base)[:, :, None, :]
        f = rmsnorm(branch_mean_(h), P[pre + "ffn_norm"], c.norm_eps)
        if l in c.moe_layers:
            o, aux = moe(f, P, pre + "moe.", c)
            aux_sum = aux if aux_sum is None else aux_sum + aux
        else:
            o = swiglu(f, P[pre + "mlp.w1"], P[pre + "mlp.w3"], P[pre + "mlp.w2"])
        h = h + o[:, :, None, :]
    hf = rmsnorm(branch_mean_(h), P["norm_f"], c.norm_eps)           # [B,T,D]
    logits = hf @ (P["wte"] if c.tied else P["wout"]).T               # [B,T,V]
    ce = F.cross_entropy(logits.reshape(B * T, c.V), y.reshape(-1))
    if aux_sum is None:
        aux_sum = torch.zeros((), dtype=ce.dtype, device=x.device)
    return ce + c.aux_coef * aux_sum, ce, aux_sum
