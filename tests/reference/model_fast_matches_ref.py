#!/usr/bin/python3
"""model_fast.forward (the benchmark's vectorised model) equals model_ref.forward (the float64
reference) on every tests/reference/configs/*.yaml, on the CPU in float64: the loss to a relative
1e-10 and every parameter's gradient to max|Δg| <= 1e-9·max(1, max|g_ref|). Same parameters,
batch and hash rows (model_ref.build). Prints one line per config; exits 1 on any mismatch.

Usage: /usr/bin/python3 model_fast_matches_ref.py [--engram BIN] [CONFIG.yaml ...]
"""
import argparse
import glob
import os
import sys

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import model_ref as ref  # noqa: E402  (float64 default dtype)
import model_fast  # noqa: E402


def grads_of(fwd, P, args):
    Pg = {n: t.detach().clone().requires_grad_(True) for n, t in P.items()}
    loss = fwd(Pg, *args)[0]
    loss.backward()
    return loss.item(), {n: t.grad for n, t in Pg.items()}


def check(path, engram_bin):
    _, raw = ref.resolve_config(path, engram_bin)
    c = ref.Cfg(raw)
    specs, P, x, y, hashes = ref.build(c)
    l_ref, g_ref = grads_of(ref.forward, P, (x, y, hashes, c))
    rows = {l: torch.as_tensor(hashes[l], dtype=torch.long) for l in c.en_layers}
    xt, yt = torch.as_tensor(x, dtype=torch.long), torch.as_tensor(y, dtype=torch.long)
    l_fast, g_fast = grads_of(model_fast.forward, P, (xt, yt, rows, c))
    loss_rel = abs(l_fast - l_ref) / abs(l_ref)
    worst, bad = 0.0, []
    for name, _, _ in specs:
        r = (g_fast[name] - g_ref[name]).abs().max().item() / max(1.0, g_ref[name].abs().max().item())
        worst = max(worst, r)
        if not r <= 1e-9:   # also catches NaN
            bad.append(f"{name} ({r:.1e})")
    ok = loss_rel <= 1e-10 and not bad
    print(f"{os.path.basename(path):20s} loss ref {l_ref:.12f} fast {l_fast:.12f} rel {loss_rel:.1e}; "
          f"{len(specs)} grads, worst scaled max|dg| {worst:.1e} " + ("ok" if ok else "FAIL")
          + ("" if not bad else " in " + ", ".join(bad)))
    return ok


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("configs", nargs="*")
    ap.add_argument("--engram", default=os.environ.get("ENGRAM_BIN", os.path.join(ref.REPO, "build", "engram")))
    a = ap.parse_args()
    cfgs = a.configs or sorted(glob.glob(os.path.join(HERE, "configs", "*.yaml")))
    ok = all([check(p, a.engram) for p in cfgs])
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
