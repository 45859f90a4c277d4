#!/usr/bin/python3
"""PyTorch training-throughput benchmark of the engram model (the other side of `engram bench train`).

Usage
    /usr/bin/python3 tests/reference/bench_torch.py CONFIG [--steps N] [--warmup N] [--threads T]
                     [--engram BIN] [--losses] [--device cpu|cuda] [--precision fp32|bf16]
                     [--fast] [--compile] [--peak-tflops F]
    Prints one JSON line with the keys of `engram bench train`:
      {"bench":"train","config":..,"impl":"pytorch","device":..,"precision":..,"params":..,
       "batch":..,"seq_len":..,"steps":..,"seconds":..,"step_ms":..,"tokens_per_s":..,
       "flops_per_token":..,"mfu":..,"threads":..,"torch":"<version>", ...}
    plus first_loss / last_loss, table_params, forward (model_ref|model_fast), compiled and the BLAS
    in use (--losses adds every step's loss). mfu is against the GPU's dense peak (flops_per_token
    below); null on the CPU. jobs/bench_model.sh runs this and the C benchmark on the same config
    and prints the ratio.

Devices and forwards
    --device cpu (default): model_ref.forward in float32, as described below; --fast uses
        model_fast.forward instead (the vectorised implementation of the same model, checked
        against model_ref by model_fast_matches_ref.py), the way to try the CUDA path's forward here.
    --device cuda: always model_fast.forward; parameters, tables, Adam state and the batch live on
        the GPU (initialised on the CPU from the same generator, then moved), hashing stays numpy on
        the host and the distinct rows / inverse ids go over with non_blocking copies. AdamW is the
        fused CUDA kernel. --precision bf16 runs the forward under torch.autocast(bfloat16) with
        float32 master weights and optimizer (no loss scaling: bf16 needs none); fp32 is plain
        float32 (TF32 matmuls stay off, torch's default).
        The clock is read after torch.cuda.synchronize() at both ends.
    --compile: torch.compile(model_fast.forward) (off by default; compilation happens in the
        warm-up steps, so give it --warmup >= 2). The dropless MoE path (capacity_factor 0) has one
        host sync per MoE layer, a graph break under compile; capacity > 0 has none.

What it trains
    The same model as engram: the config is resolved by `BIN config CONFIG` (default $ENGRAM_BIN,
    else <repo>/build/engram) and the forward pass is tests/reference/model_ref.py's `forward`
    (G branches, Engram layers, RoPE attention, SwiGLU, MoE with top-k/capacity/aux loss), imported
    and used unchanged. model_ref.py is float64 by construction: importing it sets torch's default
    dtype to float64 and its ops build their constants with the module global `DT`. This script
    resets the default dtype to float32 and sets `model_ref.DT = torch.float32` before anything
    runs, so every op works in float32 (checked: all activations, the loss and the gradients are
    float32). Nothing in model_ref.py is edited or duplicated.

    Differences from model_ref.py's *test* set-up, to match the C benchmark (src/bench_train.c):
      * training init as in src/model.c: matrices N(0, model.init_std), the residual outputs
        (attn.wo, mlp.w2, moe.w2, moe.shared_w2) N(0, init_std/sqrt(2·n_layers)), norms 1,
        Engram biases and conv 0, Engram tables N(0, engram.init_std); so the first loss ≈ ln V;
      * with engram.compressed_vocab_size = 0 / pad_id_compressed = -1 (no tokenizer) the hash uses
        V' = vocab_size and pad 0, as src/model.c does;
      * batch = train.batch_size random token rows of model.seq_len (torch.Generator seeded with
        run.seed), targets = inputs shifted by one; the same batch every step (as the C side).

One step (all of it timed; what the C side's trainer_step does)
    1. hash the batch on the host with numpy (model_ref.hash_global per Engram layer; multipliers
       and prime table sizes are computed once at start-up, as the C side does at init), then
       np.unique(..., return_inverse=True): the distinct rows and each lookup's index into them;
    2. gather the distinct rows of each table into a small leaf tensor [n_unique, Dh] and hand that
       to model_ref.forward in place of the table with the inverse indices as the "hash ids", so
       the table gradient is [n_unique, Dh] (as the C side's row-set reduce), not a dense table;
    3. forward, loss.backward();
    4. torch.nn.utils.clip_grad_norm_ over the dense gradients and the row gradients (train.grad_clip);
    5. torch.optim.AdamW (foreach) for the dense tensors: weight decay on matrices and conv, none on
       norms and biases; lr from model_ref.lr_at (warm-up + cosine);
    6. lazy Adam on the Engram tables: only the gathered rows' m, v and values are updated, with
       lr·engram.lr_mult and the global step count for bias correction (model_ref.train's rule).

Threads: torch.set_num_threads(T) (default $OMP_NUM_THREADS, else 2). Torch's float32 GEMMs go to
the system BLAS (BLAS_INFO=generic: Debian's libblas.so.3, OpenBLAS here); its thread count is set
to T as well through openblas_set_num_threads when that library is loaded.
"""
import argparse
import contextlib
import ctypes
import json
import math
import os
import re
import sys
import time

import numpy as np
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, HERE)
import model_ref as ref  # noqa: E402  (sets the default dtype to float64: undone just below)
import model_fast  # noqa: E402

torch.set_default_dtype(torch.float32)
ref.DT = torch.float32          # model_ref's ops read this global when they run
DT = torch.float32

RESID = ("attn.wo", "mlp.w2", "moe.w2", "moe.shared_w2")   # init_std / sqrt(2·L), src/tensors.c
PEAK_TFLOPS = {"bf16": 989.4, "fp32": 66.9}   # one H100/H200 SXM, datasheet dense (as src/bench_train.c)


def flops_per_token(c, n_dense):
    """Model FLOPs per trained token: 6·N_active (forward + backward of every weight a token meets:
    the tied embedding counted once, as the output head; an untied input embedding is a lookup, not
    counted; top_k of the E routed experts per MoE layer) plus 12·L·D·T for attention's scores and
    values. Engram table rows are looked up, not multiplied (n_dense excludes them). The same
    formula as src/bench_train.c's flops_per_token_."""
    active = n_dense - (0 if c.tied else c.V * c.D)
    active -= len(c.moe_layers) * (c.E - c.k) * 3 * c.D * c.Fe
    return 6.0 * active + 12.0 * c.L * c.D * c.T


def openblas():
    """(library handle or None, 'OpenBLAS 0.3.21 ... Zen' or '') for the OpenBLAS torch loaded."""
    try:
        lib = ctypes.CDLL("libopenblas.so.0")
        lib.openblas_get_config.restype = ctypes.c_char_p
        lib.openblas_get_corename.restype = ctypes.c_char_p
        return lib, f"{lib.openblas_get_config().decode()} (core {lib.openblas_get_corename().decode()})"
    except (OSError, AttributeError):
        return None, ""


def torch_blas():
    """BLAS_INFO from torch.__config__.show() (e.g. 'generic' = the system libblas.so.3)."""
    m = re.search(r"BLAS_INFO=([^,\s]+)", torch.__config__.show())
    return m.group(1) if m else "?"


def load_config(path, engram_bin):
    _, raw = ref.resolve_config(path, engram_bin)
    c = ref.Cfg(raw)
    if c.Vc <= 0:            # no tokenizer: identity compression over the whole vocabulary
        c.Vc = c.V
    if c.pad_c < 0:
        c.pad_c = 0
    return c, float(raw["model"]["init_std"]), float(raw["engram"]["init_std"])


def init_params(specs, c, std, table_std, gen):
    """Training init of src/model.c (see header), float32."""
    resid = std / math.sqrt(2.0 * c.L)
    P = {}
    for name, shape, kind in specs:
        if kind == "matrix":
            P[name] = torch.randn(shape, generator=gen) * (resid if name.endswith(RESID) else std)
        elif kind == "norm":
            P[name] = torch.ones(shape)
        elif kind in ("bias", "conv"):
            P[name] = torch.zeros(shape)
        else:  # table
            P[name] = torch.randn(shape, generator=gen) * table_std
    return P


class Bench:
    def __init__(self, c, std, table_std, device="cpu", fast=False, precision="fp32", compile=False):
        self.c, self.dev = c, torch.device(device)
        fwd = model_fast.forward if fast or self.dev.type != "cpu" else None
        self.fwd = torch.compile(fwd) if compile else fwd             # None: model_ref.forward
        self.autocast = ((lambda: torch.autocast("cuda", dtype=torch.bfloat16)) if precision == "bf16"
                         else contextlib.nullcontext)   # torch 1.13 probes CUDA even when disabled
        mult = {l: ref.multipliers(c.en_seed, l, c.N, c.Vc) for l in c.en_layers}
        sizes = ref.table_sizes(c.en_layers, c.bases, c.N, c.H) if c.en_layers else {}
        self.hash_args = {l: (mult[l], sizes[l]) for l in c.en_layers}
        specs = ref.param_specs(c, {l: sum(sizes[l]) for l in c.en_layers})
        gen = torch.Generator().manual_seed(c.seed)
        P = {n: t.to(self.dev) for n, t in init_params(specs, c, std, table_std, gen).items()}
        kinds = {n: k for n, _, k in specs}
        self.dense = {n: t.requires_grad_() for n, t in P.items() if kinds[n] != "table"}
        self.tables = {n: t for n, t in P.items() if kinds[n] == "table"}
        self.m = {n: torch.zeros_like(t) for n, t in self.tables.items()}
        self.v = {n: torch.zeros_like(t) for n, t in self.tables.items()}
        decay = [t for n, t in self.dense.items() if kinds[n] in ("matrix", "conv")]
        no_decay = [t for n, t in self.dense.items() if kinds[n] not in ("matrix", "conv")]
        fused = {"fused": True} if self.dev.type == "cuda" else {"foreach": True}
        self.opt = torch.optim.AdamW([{"params": decay, "weight_decay": c.wd},
                                      {"params": no_decay, "weight_decay": 0.0}],
                                     lr=c.lr, betas=(c.beta1, c.beta2), eps=c.adam_eps, **fused)
        x = torch.randint(0, c.V, (c.B, c.T + 1), generator=gen)
        self.x_np = x[:, :-1].numpy().astype(np.int64)
        self.x, self.y = x[:, :-1].contiguous().to(self.dev), x[:, 1:].contiguous().to(self.dev)
        self.step_no = 0
        self.n_dense = sum(t.numel() for t in self.dense.values())
        self.n_table = sum(t.numel() for t in self.tables.values())

    def hash_rows(self):
        """{layer: (distinct global rows [n_u], index of each lookup into them [B,T,H_total])}."""
        c, out = self.c, {}
        for l, (mult, sizes) in self.hash_args.items():
            ids = ref.hash_global(self.x_np, mult, sizes, c.N, c.H, c.pad_c)    # [B,T,H_total]
            uniq, inv = np.unique(ids, return_inverse=True)
            out[l] = (torch.from_numpy(uniq).to(self.dev, non_blocking=True),
                      torch.from_numpy(inv.reshape(ids.shape)).to(self.dev, non_blocking=True))
        return out

    def lazy_adam(self, name, rows, g, lr, t):
        """Adam on the gathered rows only (model_ref.train's table rule; no weight decay)."""
        c = self.c
        m = self.m[name].index_select(0, rows).mul_(c.beta1).add_(g, alpha=1 - c.beta1)
        v = self.v[name].index_select(0, rows).mul_(c.beta2).addcmul_(g, g, value=1 - c.beta2)
        self.m[name].index_copy_(0, rows, m)
        self.v[name].index_copy_(0, rows, v)
        upd = m.div_(1 - c.beta1 ** t).div_(v.div_(1 - c.beta2 ** t).sqrt_().add_(c.adam_eps))
        self.tables[name].index_add_(0, rows, upd, alpha=-lr)

    def step(self):
        c = self.c
        rows = self.hash_rows()
        P, hashes, sub = dict(self.dense), {}, {}
        for l, (uniq, inv) in rows.items():
            name = f"blocks.{l}.engram.table"
            sub[name] = (uniq, self.tables[name].index_select(0, uniq).requires_grad_())
            P[name], hashes[l] = sub[name][1], inv
        if self.fwd is None:
            loss = ref.forward(P, self.x, self.y, hashes, c)[0]
        else:
            with self.autocast():
                loss = self.fwd(P, self.x, self.y, hashes, c)[0]
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        if c.clip > 0:
            torch.nn.utils.clip_grad_norm_(list(self.dense.values()) + [s for _, s in sub.values()], c.clip)
        lr = ref.lr_at(self.step_no, c)
        for g in self.opt.param_groups:
            g["lr"] = lr
        self.opt.step()
        self.step_no += 1
        with torch.no_grad():
            for name, (uniq, s) in sub.items():
                self.lazy_adam(name, uniq, s.grad, lr * c.lr_mult, self.step_no)
        return loss.detach()      # read after the clock stops: no per-step sync on a GPU


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("config")
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--threads", type=int, default=int(os.environ.get("OMP_NUM_THREADS") or 2))
    ap.add_argument("--engram", default=os.environ.get("ENGRAM_BIN", os.path.join(REPO, "build", "engram")))
    ap.add_argument("--losses", action="store_true", help="add every step's loss to the JSON line")
    ap.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    ap.add_argument("--precision", choices=("fp32", "bf16"), default="fp32",
                    help="bf16: autocast forward on cuda, float32 master weights")
    ap.add_argument("--fast", action="store_true", help="CPU: model_fast.forward instead of model_ref's")
    ap.add_argument("--compile", action="store_true", help="torch.compile the model_fast forward")
    ap.add_argument("--peak-tflops", type=float, help="peak for mfu (default: H100/H200 SXM dense)")
    a = ap.parse_args()
    if a.steps < 1 or a.warmup < 0:
        ap.error("--steps must be >= 1 and --warmup >= 0")
    if a.precision == "bf16" and a.device != "cuda":
        ap.error("--precision bf16 needs --device cuda")
    if a.device == "cuda" and not torch.cuda.is_available():
        ap.error(f"--device cuda: this torch ({torch.__version__}) sees no CUDA device")
    fast = a.fast or a.device == "cuda"
    if a.compile and not fast:
        ap.error("--compile compiles model_fast: add --fast (implied by --device cuda)")
    if a.compile and not hasattr(torch, "compile"):
        ap.error(f"--compile needs torch >= 2.0 (this is {torch.__version__})")
    torch.set_num_threads(a.threads)
    lib, ob = openblas()
    if lib is not None:
        lib.openblas_set_num_threads(a.threads)

    c, std, table_std = load_config(a.config, a.engram)
    bench = Bench(c, std, table_std, a.device, fast, a.precision, a.compile)
    sync = torch.cuda.synchronize if a.device == "cuda" else (lambda: None)
    losses = [bench.step() for _ in range(a.warmup)]
    sync()
    t0 = time.perf_counter()
    losses += [bench.step() for _ in range(a.steps)]
    sync()
    dt = time.perf_counter() - t0
    losses = [float(v) for v in losses]
    tps = c.B * c.T * a.steps / dt
    fpt = flops_per_token(c, bench.n_dense)
    peak = 1e12 * (a.peak_tflops or PEAK_TFLOPS[a.precision])
    out = {"bench": "train", "config": a.config, "impl": "pytorch", "device": a.device,
           "precision": a.precision, "params": bench.n_dense,
           "batch": c.B, "seq_len": c.T, "steps": a.steps, "seconds": round(dt, 4),
           "step_ms": round(1e3 * dt / a.steps, 2), "tokens_per_s": round(tps),
           "flops_per_token": float(f"{fpt:.4g}"),
           "mfu": round(fpt * tps / peak, 4) if a.device == "cuda" else None,
           "forward": "model_fast" if fast else "model_ref", "compiled": a.compile,
           "threads": torch.get_num_threads(), "torch": torch.__version__,
           "blas": f"BLAS_INFO={torch_blas()}" + (f"; {ob}" if ob else ""),
           "openblas_coretype": os.environ.get("OPENBLAS_CORETYPE", ""),
           "table_params": bench.n_table, "first_loss": round(losses[0], 4),
           "last_loss": round(losses[-1], 4)}
    if a.losses:
        out["losses"] = [round(v, 5) for v in losses]
    print(json.dumps(out, separators=(",", ":")), flush=True)


if __name__ == "__main__":
    main()
