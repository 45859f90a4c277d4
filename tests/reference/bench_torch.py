#!/usr/bin/python3
"""PyTorch training-throughput benchmark of the engram model (the other side of `engram bench train`).

Usage
    /usr/bin/python3 tests/reference/bench_torch.py CONFIG [--steps N] [--warmup N] [--threads T]
                     [--engram BIN] [--losses]
    Prints one JSON line with the keys of `engram bench train`:
      {"bench":"train","config":..,"impl":"pytorch","params":..,"batch":..,"seq_len":..,"steps":..,
       "seconds":..,"step_ms":..,"tokens_per_s":..,"threads":..,"torch":"<version>", ...}
    plus first_loss / last_loss, table_params and the BLAS in use (--losses adds every step's loss).
    jobs/bench_model.sh runs this and the C benchmark on the same config and prints the ratio.

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

torch.set_default_dtype(torch.float32)
ref.DT = torch.float32          # model_ref's ops read this global when they run
DT = torch.float32

RESID = ("attn.wo", "mlp.w2", "moe.w2", "moe.shared_w2")   # init_std / sqrt(2·L), src/tensors.c


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
    def __init__(self, c, std, table_std):
        self.c = c
        mult = {l: ref.multipliers(c.en_seed, l, c.N, c.Vc) for l in c.en_layers}
        sizes = ref.table_sizes(c.en_layers, c.bases, c.N, c.H) if c.en_layers else {}
        self.hash_args = {l: (mult[l], sizes[l]) for l in c.en_layers}
        specs = ref.param_specs(c, {l: sum(sizes[l]) for l in c.en_layers})
        gen = torch.Generator().manual_seed(c.seed)
        P = init_params(specs, c, std, table_std, gen)
        kinds = {n: k for n, _, k in specs}
        self.dense = {n: t.requires_grad_() for n, t in P.items() if kinds[n] != "table"}
        self.tables = {n: t for n, t in P.items() if kinds[n] == "table"}
        self.m = {n: torch.zeros_like(t) for n, t in self.tables.items()}
        self.v = {n: torch.zeros_like(t) for n, t in self.tables.items()}
        decay = [t for n, t in self.dense.items() if kinds[n] in ("matrix", "conv")]
        no_decay = [t for n, t in self.dense.items() if kinds[n] not in ("matrix", "conv")]
        self.opt = torch.optim.AdamW([{"params": decay, "weight_decay": c.wd},
                                      {"params": no_decay, "weight_decay": 0.0}],
                                     lr=c.lr, betas=(c.beta1, c.beta2), eps=c.adam_eps, foreach=True)
        x = torch.randint(0, c.V, (c.B, c.T + 1), generator=gen)
        self.x_np = x[:, :-1].numpy().astype(np.int64)
        self.x, self.y = x[:, :-1].contiguous(), x[:, 1:].contiguous()
        self.step_no = 0
        self.n_dense = sum(t.numel() for t in self.dense.values())
        self.n_table = sum(t.numel() for t in self.tables.values())

    def hash_rows(self):
        """{layer: (distinct global rows [n_u], index of each lookup into them [B,T,H_total])}."""
        c, out = self.c, {}
        for l, (mult, sizes) in self.hash_args.items():
            ids = ref.hash_global(self.x_np, mult, sizes, c.N, c.H, c.pad_c)    # [B,T,H_total]
            uniq, inv = np.unique(ids, return_inverse=True)
            out[l] = (torch.from_numpy(uniq), torch.from_numpy(inv.reshape(ids.shape)))
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
        loss, _, _, _, _ = ref.forward(P, self.x, self.y, hashes, c)
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
        return loss.item()


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("config")
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--threads", type=int, default=int(os.environ.get("OMP_NUM_THREADS") or 2))
    ap.add_argument("--engram", default=os.environ.get("ENGRAM_BIN", os.path.join(REPO, "build", "engram")))
    ap.add_argument("--losses", action="store_true", help="add every step's loss to the JSON line")
    a = ap.parse_args()
    if a.steps < 1 or a.warmup < 0:
        ap.error("--steps must be >= 1 and --warmup >= 0")
    torch.set_num_threads(a.threads)
    lib, ob = openblas()
    if lib is not None:
        lib.openblas_set_num_threads(a.threads)

    c, std, table_std = load_config(a.config, a.engram)
    bench = Bench(c, std, table_std)
    losses = [bench.step() for _ in range(a.warmup)]
    t0 = time.perf_counter()
    losses += [bench.step() for _ in range(a.steps)]
    dt = time.perf_counter() - t0
    out = {"bench": "train", "config": a.config, "impl": "pytorch", "params": bench.n_dense,
           "batch": c.B, "seq_len": c.T, "steps": a.steps, "seconds": round(dt, 4),
           "step_ms": round(1e3 * dt / a.steps, 2), "tokens_per_s": round(c.B * c.T * a.steps / dt),
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
