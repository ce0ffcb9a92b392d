"""Encode+decode throughput of the action tokenizer vs a plain Python loop.

python bench/tokenizer.py [actions=1000000] [loop_actions=10000] [--quick]
Last line: RESULT encode_decode_1m_s=<s> (scaled to 1M actions) encode_speedup_vs_loop=<f>
"""

import sys
import time

import numpy as np

from action_tokenizer import ActionStats, ActionTokenizer
from vla.benchopts import options


def python_loop_encode(tok: ActionTokenizer, actions: np.ndarray) -> list[list[int]]:
    """The naive reference: one scalar at a time, as a first implementation would do it."""
    st, edges, out = tok.stats, tok.edges.tolist(), []
    for a in actions.tolist():
        row = []
        for d, x in enumerate(a):
            if st.mask[d]:
                lo, hi = float(st.q01[d]), float(st.q99[d])
                x = min(max(2 * (x - lo) / (hi - lo + 1e-8) - 1, -1.0), 1.0)
            x = min(max(x, -1.0), 1.0)
            idx = sum(1 for e in edges if x >= e)
            row.append(tok.vocab_size - idx)
        out.append(row)
    return out


def best_of(fn, repeats):
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def main(argv):
    opts = options(argv, {"actions": 1_000_000, "loop_actions": 10_000}, quick={"actions": 20_000, "loop_actions": 1_000})
    rng = np.random.default_rng(0)
    train = rng.normal(0, 0.3, size=(100_000, 7)).astype(np.float32)
    train[:, 6] = rng.choice([-1.0, 1.0], size=len(train))
    tok = ActionTokenizer(ActionStats.from_actions(train, mask=[True] * 6 + [False]))
    actions = rng.normal(0, 0.3, size=(opts["actions"], 7)).astype(np.float32)

    vec_s = best_of(lambda: tok.decode(tok.encode(actions)), repeats=5)
    small = actions[:opts["loop_actions"]]
    loop_s = best_of(lambda: python_loop_encode(tok, small), repeats=1)
    assert np.array_equal(np.array(python_loop_encode(tok, small[:500])), tok.encode(small[:500]))
    enc_s = best_of(lambda: tok.encode(actions), repeats=5)

    per_action_vec = enc_s / len(actions)
    per_action_loop = loop_s / len(small)
    per_1m = vec_s * 1e6 / len(actions)
    print(f"encode+decode {len(actions):,} x 7 actions (vectorised): {vec_s:.3f} s ({per_1m:.3f} s per 1M)")
    print(f"encode only   {len(actions):,} x 7 actions (vectorised): {enc_s:.3f} s  ({per_action_vec * 1e9:.0f} ns/action)")
    print(f"encode {len(small):,} actions, Python loop reference: {loop_s:.3f} s  ({per_action_loop * 1e6:.1f} us/action)")
    print(f"speedup per action (encode): {per_action_loop / per_action_vec:.0f}x; target encode+decode 1M <= 0.2 s")
    print(f"RESULT encode_decode_1m_s={per_1m:.4f} encode_speedup_vs_loop={per_action_loop / per_action_vec:.0f}")


if __name__ == "__main__":
    main(sys.argv[1:])
