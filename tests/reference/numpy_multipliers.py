#!/usr/bin/env python3
"""numpy_multipliers.py — Engram hash multipliers drawn by numpy itself, the way the references do
(spec/ENGRAM.md §3.1), for ~200 random (flavour, seed, layer_id, V', N) cases; one JSON line each:
{"flavour":..,"seed":..,"layer_id":..,"vocab_c":..,"N":..,"half_bound":..,"multipliers":[..]}.
tests/reference/nprng_check.c reads these lines and compares them with ngram_hash_init.

Not here: any re-implementation of the stream — only numpy's own default_rng is used.
Usage: numpy_multipliers.py [N_CASES] [SEED]   (defaults 200, 20260123; the case list is fixed
by SEED, drawn with Python's own `random`, independent of numpy's stream).
"""
import json
import random
import sys

import numpy as np

INT_MAX = {"deepseek": 2**63 - 1, "maxtext": 2**31 - 1}
DTYPE = {"deepseek": np.int64, "maxtext": np.int32}


def multipliers(flavour, seed, layer_id, vocab_c, n):
    # verbatim from the references: deepseek-ai/Engram engram_demo_v1.py (int64) and MaxText
    # layers/engram.py HEAD (int32)
    half_bound = max(1, (INT_MAX[flavour] // vocab_c) // 2)
    rng = np.random.default_rng(seed + 10007 * layer_id)
    r = rng.integers(low=0, high=half_bound, size=n, dtype=DTYPE[flavour])
    return half_bound, [int(x) * 2 + 1 for x in r]


def vocab_draw(rnd, flavour):
    """V' across the regimes of numpy's bounded draw: tiny (huge bound), real vocabularies, and,
    for deepseek, V' near 2^30..2^40 where the int64 draw takes the 32-bit path."""
    kind = rnd.randrange(4)
    if kind == 0:
        return rnd.randint(1, 64)
    if kind == 1:
        return rnd.randint(1000, 300000)
    if flavour == "maxtext":   # half_bound reaches 1 from V' = 2^30 on
        return rnd.randint(300000, 2**22) if kind == 2 else rnd.randint(2**22, 2**30 + 2**28)
    return rnd.randint(2**29, 2**41) if kind == 2 else rnd.randint(2**41, 2**62)


def seed_draw(rnd):
    kind = rnd.randrange(3)
    if kind == 0:
        return rnd.randint(0, 100)
    if kind == 1:
        return rnd.randint(0, 2**32 - 1)
    return rnd.randint(2**32, 2**63)   # two 32-bit entropy words


def main():
    n_cases = int(sys.argv[1]) if len(sys.argv) > 1 else 200
    rnd = random.Random(int(sys.argv[2]) if len(sys.argv) > 2 else 20260123)
    for i in range(n_cases):
        flavour = "deepseek" if i % 2 == 0 else "maxtext"
        seed, layer_id = seed_draw(rnd), rnd.randint(0, 200)
        vocab_c, n = vocab_draw(rnd, flavour), rnd.randint(2, 8)
        half_bound, m = multipliers(flavour, seed, layer_id, vocab_c, n)
        print(json.dumps({"flavour": flavour, "seed": seed, "layer_id": layer_id,
                          "vocab_c": vocab_c, "N": n, "half_bound": half_bound,
                          "multipliers": m}, separators=(",", ":")))


if __name__ == "__main__":
    main()
