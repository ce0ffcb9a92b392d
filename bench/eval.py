"""Rollout throughput: the batched engine with N = 1, 2, 4, 8 env workers versus a plain serial
loop (one env, one policy call per chunk, env.step for every action as LIBERO's own evaluation
scripts do), same policy (the tiny VLA, parallel head, chunk 8 executed open-loop as OpenVLA-OFT
does) and the same episodes, plus the share of the serial loop's time in the policy versus the
simulator. The engine also skips rendering inside a chunk (envs.LiberoEnv.step(render=False));
the serial loop is timed that way too, so the two gains can be told apart.

python bench/eval.py [episodes=24] [max_steps=80] [sizes=1,2,4,8] [chunk=8] [--quick]
Last line: RESULT batched8_vs_serial=<f> policy_vs_sim_time=<f> ...
"""

import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from omegaconf import OmegaConf

from action_tokenizer import ActionStats
from envs.libero_env import LiberoEnv
from eval_rollouts import engine
from eval_rollouts.results import ResultsLog
from eval_rollouts.worker import EnvSpec
from policies import VLAPolicy
from policies.backbone import build_backbone
from policies.transforms import StateNormalizer
from policies.vla_model import PolicySpec, VLAModel, extra_tokens
from vla.benchopts import options

CAMERAS = ("agentview", "robot0_eye_in_hand")


def tiny_policy(chunk: int) -> VLAPolicy:
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=str(Path(__file__).resolve().parents[1] / "configs"), version_base="1.3"):
        cfg = compose(config_name="config")
    spec = PolicySpec(head="parallel", output="l1", chunk_size=chunk, cameras=list(CAMERAS))
    acts = np.random.default_rng(0).uniform(-0.3, 0.3, (64, 7)).astype(np.float32)
    model = VLAModel(build_backbone(OmegaConf.to_container(cfg.model), extra_tokens(spec)), spec,
                     ActionStats.from_actions(acts), StateNormalizer(np.zeros(8), np.ones(8)))
    return VLAPolicy(model)


def serial(policy, episodes, max_steps, skip_renders=False) -> tuple[float, float, float]:
    """Seconds in all, in the policy, in the simulator (env construction excluded, resets included)."""
    env = LiberoEnv("libero_spatial", 0, cameras=list(CAMERAS), resolution=128, max_steps=max_steps)
    t_policy = t_sim = 0.0
    t0 = time.perf_counter()
    for _, init in episodes:
        t = time.perf_counter()
        obs, _ = env.reset(init_state_index=init)
        t_sim += time.perf_counter() - t
        done = False
        while not done:
            t = time.perf_counter()
            a = policy.act({"images": {c: v[None] for c, v in obs["images"].items()}, "state": obs["state"][None],
                            "instruction": [obs["instruction"]]})
            t_policy += time.perf_counter() - t
            t = time.perf_counter()
            for k, action in enumerate(a[0]):
                obs, _, term, trunc, _ = env.step(action, render=not skip_renders or k == len(a[0]) - 1)
                done = term or trunc
                if done:
                    break
            t_sim += time.perf_counter() - t
    total = time.perf_counter() - t0
    env.close()
    return total, t_policy, t_sim


def batched(policy, episodes, max_steps, n) -> float:
    spec = EnvSpec("libero_spatial", CAMERAS, 128, max_steps=max_steps)
    with tempfile.TemporaryDirectory() as d:
        t0 = time.perf_counter()
        engine.run(policy, spec, episodes, ResultsLog(Path(d) / "e.jsonl"), num_envs=n, replan_steps=policy.spec.chunk_size)
        return time.perf_counter() - t0


def main(argv):
    args = options(argv, {"episodes": 24, "max_steps": 80, "sizes": "1,2,4,8", "chunk": 8},
                   quick={"episodes": 2, "max_steps": 16, "sizes": "2"})
    n_eps, max_steps = args["episodes"], args["max_steps"]
    sizes = [int(x) for x in args["sizes"].split(",")]
    torch.set_num_threads(1)
    policy = tiny_policy(args["chunk"])
    episodes = [(0, k) for k in range(n_eps)]
    total, t_pol, t_sim = serial(policy, episodes, max_steps)
    print(f"serial: {n_eps / total:.3f} episodes/s; policy {t_pol:.1f} s, simulator {t_sim:.1f} s")
    skip_total, _, _ = serial(policy, episodes, max_steps, skip_renders=True)
    print(f"serial, renders skipped inside chunks: {n_eps / skip_total:.3f} episodes/s, {total / skip_total:.2f}x serial")
    ratios = {}
    for n in sizes:
        secs = batched(policy, episodes, max_steps, n)  # includes starting the workers and building their envs
        ratios[n] = total / secs
        print(f"batched N={n}: {n_eps / secs:.3f} episodes/s, {ratios[n]:.2f}x serial")
    ratio_keys = " ".join(f"batched{n}_vs_serial={r:.2f}" for n, r in sorted(ratios.items(), key=lambda kv: -kv[0]))
    print(f"RESULT {ratio_keys} policy_vs_sim_time={t_pol / t_sim:.3f} render_skip_vs_serial={total / skip_total:.2f}")


if __name__ == "__main__":
    main(sys.argv[1:])
