"""Serving overhead of vla.serve with the tiny VLA (Qwen2.5-VL, real vocabulary, parallel head,
chunk 8, two 128^2 cameras): round-trip latency (p50/p99) and actions/s for 1, 4 and 8
concurrent clients (separate processes) against the policy's own in-process `act` time, then a
soak with 8 clients that counts errors and the server's memory growth.

python bench/serve.py [--quick] [seconds=15] [soak_s=600]     (--quick: 5 s per level, 30 s soak)
Last line: RESULT p50_ms=<f> p99_ms=<f> overhead_ratio=<f> soak_errors=<int> ...
(p50/p99: one client; overhead_ratio: its p50 round trip / the in-process act time.)
"""

from __future__ import annotations

import multiprocessing as mp
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
INSTRUCTION = "pick up the black bowl between the plate and the ramekin and place it on the plate"


def observation(seed: int) -> dict:
    rng = np.random.default_rng(seed)
    return {"images": {c: rng.integers(0, 255, (128, 128, 3), dtype=np.uint8) for c in ("agentview", "robot0_eye_in_hand")},
            "state": rng.normal(size=8).astype(np.float32), "instruction": INSTRUCTION}


def client_process(url: str, seconds: float, seed: int, out) -> None:
    from vla.deploy.client import PolicyClient

    obs, latencies, errors, actions = observation(seed), [], 0, 0
    client = PolicyClient(url, timeout_s=30, connect_s=30)
    client.act(obs)  # warm-up
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        t0 = time.perf_counter()
        try:
            actions += len(client.act(obs))
            latencies.append(time.perf_counter() - t0)
        except Exception:
            errors += 1
    client.close()
    out.put((latencies, errors, actions))


def load(url: str, clients: int, seconds: float) -> dict:
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    procs = [ctx.Process(target=client_process, args=(url, seconds, i, q)) for i in range(clients)]
    for p in procs:
        p.start()
    results = [q.get() for _ in procs]
    for p in procs:
        p.join()
    lat = np.concatenate([np.asarray(r[0]) for r in results]) * 1000
    return {"p50_ms": float(np.percentile(lat, 50)), "p99_ms": float(np.percentile(lat, 99)),
            "actions_per_s": sum(r[2] for r in results) / seconds, "errors": sum(r[1] for r in results),
            "requests": int(lat.size)}


def main() -> None:
    import psutil
    import torch

    from bench.eval import tiny_policy  # the same tiny VLA as the rollout benchmark
    from vla.deploy.server import PolicyServer

    from vla.benchopts import options

    args = options(sys.argv[1:], {"seconds": 15.0, "soak_s": 600.0}, quick={"seconds": 2.0, "soak_s": 5.0})
    seconds, soak_s = args["seconds"], args["soak_s"]
    torch.manual_seed(0)
    torch.set_num_threads(1)  # the same for in-process and served calls; the other core runs the clients
    policy = tiny_policy(8)
    spec = policy.spec

    obs = observation(0)
    single = {"images": {c: v[None] for c, v in obs["images"].items()}, "state": obs["state"][None], "instruction": [INSTRUCTION]}
    for _ in range(5):  # warm-up
        policy.act(single)
    times = []
    for _ in range(50):
        t0 = time.perf_counter()
        policy.act(single)
        times.append(time.perf_counter() - t0)
    act_ms = float(np.median(times)) * 1000
    print(f"in-process act (batch 1): {act_ms:.2f} ms")

    server = PolicyServer(policy, spec.cameras, spec.resolution, spec.chunk_size, name="tiny").start_in_thread()
    url = f"ws://127.0.0.1:{server.port}"
    levels = {}
    for n in (1, 4, 8):
        levels[n] = r = load(url, n, seconds)
        print(f"{n} client(s): p50 {r['p50_ms']:.2f} ms, p99 {r['p99_ms']:.2f} ms, {r['actions_per_s']:.0f} actions/s, "
              f"{r['requests']} requests, {r['errors']} errors, {server.policy_calls} policy calls so far")

    proc = psutil.Process()
    rss0 = proc.memory_info().rss / 2**20
    soak = load(url, 8, soak_s)
    rss1 = proc.memory_info().rss / 2**20
    print(f"soak, 8 clients x {soak_s:.0f} s: {soak['requests']} requests, {soak['errors']} errors, "
          f"server RSS {rss0:.0f} -> {rss1:.0f} MiB")
    server.stop()
    one = levels[1]
    print(f"RESULT p50_ms={one['p50_ms']:.2f} p99_ms={one['p99_ms']:.2f} overhead_ratio={one['p50_ms'] / act_ms:.3f} "
          f"soak_errors={soak['errors'] + sum(r['errors'] for r in levels.values())} act_ms={act_ms:.2f} "
          f"actions_per_s_1={levels[1]['actions_per_s']:.0f} actions_per_s_4={levels[4]['actions_per_s']:.0f} "
          f"actions_per_s_8={levels[8]['actions_per_s']:.0f} p50_ms_8={levels[8]['p50_ms']:.2f} "
          f"soak_mem_growth_mib={rss1 - rss0:.1f}")


if __name__ == "__main__":
    main()
