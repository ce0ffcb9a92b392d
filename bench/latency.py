"""Deployment under latency: a policy served over the real websocket server, driven by the robot-side
runtime (vla.deploy.bridge + chunks) in closed loop on LIBERO episodes (vla.deploy.latency), with
0 / 100 / 200 / 400 ms between each observation and its answer (20 Hz control: 0 / 2 / 4 / 8
steps), synchronous (the arm holds still for every answer) vs asynchronous (it keeps executing
its queue; answers aligned and blended). Per cell: success with a 95% Wilson interval, mean
episode length, the largest step-to-step command change. Also the policy's own act at batch 1 on
one CPU thread (p50 / p99 over `act_repeats` calls on a real observation).

Episodes are appended to out/<mode>_<ms>ms[.<i>of<n>].jsonl as they finish: a rerun resumes.
`shard=i/n` runs every n-th episode from the i-th, so two processes can share the work (same out).

python bench/latency.py [checkpoint=checkpoints/tiny-libero_spatial] [suite=libero_spatial]
    [episodes=100] [delays_ms=0,100,200,400] [modes=sync,async] [jitter_ms=0] [threshold=4]
    [blend=crossfade] [blend_steps=3] [max_in_flight=1] [act_repeats=200] [shard=0/1] [transport=direct]
    [out=outputs/latency] [publish=docs/results/latency] [--quick]
transport=ros runs each episode through ROS instead (a master, the simulated arm and the bridge in
lockstep on the simulation's clock, vla.deploy.latency.run_episode_ros): the same numbers, slower.
--quick: a toy policy, one episode of 8 steps per cell, two delays.
Last line: RESULT success_async_200ms=<f> success_sync_200ms=<f> success_0ms=<f> max_jump=<f m>
    act_ms_p50=<f> act_ms_p99=<f>
"""

from __future__ import annotations

import contextlib
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from eval_rollouts.results import ResultsLog, wilson
from vla.benchopts import options, toy_policy


def act_timing(checkpoint: str, repeats: int) -> tuple[float, float]:
    """p50, p99 ms of policy.act on one observation (batch 1), torch on one thread."""
    import torch

    from envs.libero_env import LiberoEnv
    from policies import VLAPolicy

    torch.set_num_threads(1)
    policy = VLAPolicy.from_checkpoint(checkpoint)
    cameras = policy.spec.cameras
    env = LiberoEnv("libero_spatial", 0, cameras=cameras, resolution=policy.spec.camera_resolution or 128)
    obs, _ = env.reset(init_state_index=0)
    env.close()
    batch = {"images": {c: obs["images"][c][None] for c in cameras}, "state": obs["state"][None],
             "instruction": [obs["instruction"]]}
    for _ in range(10):
        policy.act(batch)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        policy.act(batch)
        times.append(1000 * (time.perf_counter() - t0))
    return float(np.percentile(times, 50)), float(np.percentile(times, 99))


def main(argv: list[str]) -> None:
    opts = options(argv, {"checkpoint": "checkpoints/tiny-libero_spatial", "suite": "libero_spatial", "episodes": 100,
                          "delays_ms": "0,100,200,400", "modes": "sync,async", "jitter_ms": 0.0, "threshold": 4,
                          "blend": "crossfade", "blend_steps": 3, "max_in_flight": 1, "act_repeats": 200, "shard": "0/1",
                          "transport": "direct", "out": "outputs/latency", "publish": "docs/results/latency"},
                   quick={"episodes": 1, "delays_ms": "0,200", "act_repeats": 5, "out": "", "publish": ""})
    import logging

    from envs.libero_env import LiberoEnv
    from envs.suites import get_suite
    from vla.deploy.chunks import ChunkSettings, delay_steps
    from vla.deploy.client import PolicyClient
    from vla.deploy.latency import run_episode, run_episode_ros, sim_limits
    from vla.deploy.rosmaster import ros_master
    from vla.deploy.server import PolicyServer
    from vla.eval import load_policy, render_quality

    logging.getLogger("vla.ros_bridge").setLevel(logging.ERROR)  # stops and clips are counted per episode instead
    if opts["quick"]:
        folder = Path(tempfile.mkdtemp(prefix="latency_quick_"))
        opts.update(checkpoint=str(toy_policy(folder)), out=str(folder / "out"), publish=str(folder / "publish"))
    shard, shards = (int(x) for x in opts["shard"].split("/"))
    out, publish = Path(opts["out"]), Path(opts["publish"])
    out.mkdir(parents=True, exist_ok=True)
    suite = get_suite(opts["suite"])
    tasks = 1 if opts["quick"] else len(suite.tasks)
    per_task = max(1, opts["episodes"] // tasks)
    episodes = [(t, k) for t in range(tasks) for k in range(per_task)][shard::shards]
    delays = [float(d) for d in opts["delays_ms"].split(",")]
    modes = opts["modes"].split(",")
    cells = [("sync", 0.0)] + [(m, d) for d in delays if d > 0 for m in modes]  # at 0 ms both modes are one

    if opts["transport"] not in ("direct", "ros"):
        raise SystemExit(f"latency.py: transport must be direct or ros, not {opts['transport']!r}")
    policy, cameras, resolution, chunk = load_policy("checkpoint", opts["checkpoint"], None)
    quality = render_quality("auto", policy)
    server = PolicyServer(policy, cameras, resolution, chunk, name=opts["checkpoint"]).start_in_thread()
    client = PolicyClient(f"ws://127.0.0.1:{server.port}", timeout_s=30)
    limits = sim_limits()
    max_steps = 8 if opts["quick"] else None
    env, env_task = None, None
    stack = contextlib.ExitStack()
    if opts["transport"] == "ros":  # the simulated arm and the bridge as ROS nodes, one pair per episode
        stack.enter_context(ros_master(Path(tempfile.mkdtemp(prefix="latency_ros_"))))
    try:
        for mode, ms in cells:
            # one file per shard: a log rewrites its file when opened, which must not race another process
            log = ResultsLog(out / (f"{mode}_{ms:g}ms" + (f".{shard}of{shards}" if shards > 1 else "") + ".jsonl"))
            settings = ChunkSettings(mode=mode, threshold=opts["threshold"], blend=opts["blend"],
                                     blend_steps=opts["blend_steps"], max_in_flight=opts["max_in_flight"])
            for t, k in episodes:
                if (t, k) in log.done:
                    continue
                seed = 1000 * t + k  # the delays' jitter, the same in both transports
                if opts["transport"] == "ros":
                    rec = run_episode_ros(f"ws://127.0.0.1:{server.port}", suite.name, t, k, settings, ms, opts["jitter_ms"],
                                          seed, cameras, resolution, quality, max_steps, out / "ros" / f"{mode}_{ms:g}ms_{t}_{k}")
                else:
                    if env_task != t:  # one env at a time: a LIBERO env with its renderer holds ~1 GB
                        if env is not None:
                            env.close()
                        env, env_task = LiberoEnv(suite, t, cameras=cameras, resolution=resolution, render_quality=quality,
                                                  max_steps=max_steps), t
                    rec = run_episode(env, client, k, settings, delay_steps(ms, opts["jitter_ms"], 20.0, seed), limits)
                log.add({"task": t, "init": k, "mode": mode, "delay_ms": ms, **rec})
                print(f"{mode} {ms:g} ms task {t} init {k}: {'success' if rec['success'] else 'failure'} in {rec['steps']} steps",
                      flush=True)
    finally:
        client.close()
        server.stop()
        if env is not None:
            env.close()
        stack.close()
    if shards > 1 and shard != 0:
        return  # shard 0 reports, once the others are done (rerun it)
    p50, p99 = act_timing(opts["checkpoint"], opts["act_repeats"])
    report(opts, cells, out, publish, p50, p99)


def report(opts: dict, cells, out: Path, publish: Path, p50: float, p99: float) -> None:
    rows, results = [], {}
    for mode, ms in cells:
        recs = [r for f in sorted(out.glob(f"{mode}_{ms:g}ms*.jsonl")) for r in ResultsLog(f).records]
        k, n = sum(r["success"] for r in recs), len(recs)
        lo, hi = wilson(k, n)
        length = float(np.mean([r["steps"] for r in recs]))
        jump = max(r["max_jump_m"] for r in recs)
        results[(mode, ms)] = (k / n, length, jump)
        rows.append(f"| {'either' if ms == 0 else mode} | {ms:g} | {k}/{n} ({100 * k / n:.1f}%, CI {100 * lo:.0f}-{100 * hi:.0f}) "
                    f"| {length:.1f} | {1000 * jump:.1f} | {sum(r['late'] for r in recs)} |")
    text = ("| mode | delay (ms) | success | mean episode length (steps) | largest command change (mm/step) | late chunks |\n"
            "|---|---:|---|---:|---:|---:|\n" + "\n".join(rows)
            + f"\n\npolicy.act at batch 1, one thread: p50 {p50:.1f} ms, p99 {p99:.1f} ms\n")
    publish.mkdir(parents=True, exist_ok=True)
    (publish / "latency.md").write_text(text)
    plot(results, publish / "latency.png")
    print(text)
    get = lambda mode, ms, i: results.get((mode, ms), (float("nan"),) * 3)[i]  # noqa: E731
    print(f"RESULT success_async_200ms={get('async', 200.0, 0):.3f} success_sync_200ms={get('sync', 200.0, 0):.3f} "
          f"success_0ms={get('sync', 0.0, 0):.3f} max_jump={max(r[2] for r in results.values()):.4f} "
          f"act_ms_p50={p50:.1f} act_ms_p99={p99:.1f}")


def plot(results: dict, png: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(8, 3.2))
    for mode in ("sync", "async"):
        pts = sorted((ms, v) for (m, ms), v in results.items() if m == mode or ms == 0)
        axes[0].plot([p[0] for p in pts], [100 * p[1][0] for p in pts], "o-", label=mode)
        axes[1].plot([p[0] for p in pts], [p[1][1] for p in pts], "o-", label=mode)
    axes[0].set(xlabel="delay (ms)", ylabel="success (%)", ylim=(0, 100))
    axes[1].set(xlabel="delay (ms)", ylabel="mean episode length (steps)")
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(png, dpi=120)


if __name__ == "__main__":
    main(sys.argv[1:])
