"""Rendering cost on the CPU: "full" (LIBERO as shipped), "fast" (original meshes, no reflections
or multi-sampling) vs "lowpoly" (fast + decimated visual meshes),
side by side in one run on LIBERO-Spatial task 0, init state 0, two 128x128 cameras.

- ms per frame: MuJoCo's offscreen render of one camera, timed alone;
- ms per step: env.step with both cameras, and without rendering (physics only);
- fidelity: PSNR and mean absolute difference of the two settings' images of the same states
  (identical physics is checked on the way: the states must match exactly);
- a side-by-side picture (fast | lowpoly, both cameras) written to docs/render_lowpoly.png.

python bench/render.py [steps=60] [frames=60] [task=0] [png=docs/render_lowpoly.png] [--quick]
Last line: RESULT render_speedup=<f> step_speedup=<f> psnr=<f> ...
"""

import sys
import time
from pathlib import Path

import numpy as np

from envs.libero_env import LiberoEnv
from envs.suites import CAMERAS
from vla.benchopts import options


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float("inf") if mse == 0 else 10 * np.log10(255.0**2 / mse)


def run(quality: str, task: int, steps: int, frames: int) -> dict:
    t0 = time.perf_counter()
    env = LiberoEnv("libero_spatial", task, cameras=CAMERAS, resolution=128, render_quality=quality)
    obs, _ = env.reset(init_state_index=0)
    build_s = time.perf_counter() - t0
    m = env.sim.model._model
    visible = [m.geom_dataid[g] for g in range(m.ngeom) if m.geom_type[g] == 7 and m.geom_group[g] <= 2]
    faces = int(sum(m.mesh_facenum[i] for i in visible))
    rng = np.random.default_rng(0)
    actions = [np.append(rng.uniform(-0.4, 0.4, 6), rng.choice([-1.0, 1.0])) for _ in range(2 * steps)]
    images, states = [obs["images"]], [obs["state"]]
    t0 = time.perf_counter()
    for a in actions[:steps]:
        obs = env.step(a)[0]
        images.append(obs["images"])
        states.append(obs["state"])
    step_ms = 1000 * (time.perf_counter() - t0) / steps
    t0 = time.perf_counter()
    for a in actions[steps:]:
        states.append(env.step(a, render=False)[0]["state"])
    physics_ms = 1000 * (time.perf_counter() - t0) / steps
    t0 = time.perf_counter()
    for _ in range(frames):
        env.sim.render(camera_name="agentview", width=128, height=128)
    frame_ms = 1000 * (time.perf_counter() - t0) / frames
    qpos = env.sim.data.qpos.copy()
    env.close()
    return dict(build_s=build_s, faces=faces, step_ms=step_ms, physics_ms=physics_ms, frame_ms=frame_ms,
                images=images, states=np.array(states), qpos=qpos)


def main(argv):
    opts = options(argv, {"steps": 60, "frames": 60, "task": 0, "png": "docs/render_lowpoly.png"},
                   quick={"steps": 4, "frames": 4, "png": ""})  # quick: no picture
    steps, frames, task = opts["steps"], opts["frames"], opts["task"]
    full = run("full", task, steps, frames)
    fast = run("fast", task, steps, frames)
    low = run("lowpoly", task, steps, frames)
    same_physics = np.array_equal(fast["states"], low["states"]) and np.array_equal(fast["qpos"], low["qpos"])
    pairs = [(a[c], b[c]) for a, b in zip(fast["images"], low["images"]) for c in CAMERAS]
    p = float(np.mean([psnr(a, b) for a, b in pairs]))
    mad = float(np.mean([np.abs(a.astype(np.int16) - b.astype(np.int16)).mean() for a, b in pairs]))
    for name, r in (("full", full), ("fast", fast), ("lowpoly", low)):
        print(f"{name:8s} visible mesh faces {r['faces']:7d}  frame {r['frame_ms']:6.1f} ms  step (2 cameras) "
              f"{r['step_ms']:6.1f} ms  physics-only step {r['physics_ms']:5.1f} ms  build+reset {r['build_s']:.1f} s")
    print(f"physics identical: {same_physics}; images: PSNR {p:.1f} dB, mean |difference| {mad:.2f} / 255")
    if opts["png"]:
        out = Path(__file__).resolve().parents[1] / opts["png"]
        out.parent.mkdir(exist_ok=True)
        from PIL import Image

        k = len(fast["images"]) // 2
        row = lambda imgs: np.concatenate([imgs[c] for c in CAMERAS], axis=1)  # noqa: E731
        Image.fromarray(np.concatenate([row(fast["images"][k]), row(low["images"][k])], axis=0)).resize((512, 512)).save(out)
        print(f"picture (top: fast, bottom: lowpoly; agentview | wrist): {out}")
    print(f"RESULT render_speedup={fast['frame_ms'] / low['frame_ms']:.2f} step_speedup={fast['step_ms'] / low['step_ms']:.2f} "
          f"psnr={p:.1f} mad={mad:.2f} frame_ms_fast={fast['frame_ms']:.1f} frame_ms_lowpoly={low['frame_ms']:.1f} "
          f"physics_identical={int(same_physics)} lowpoly_vs_full_frame={full['frame_ms'] / low['frame_ms']:.2f}")


if __name__ == "__main__":
    main(sys.argv[1:])
