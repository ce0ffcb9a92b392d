"""Decimated visual meshes (render_quality="lowpoly"): the same physics, the same scene, fewer faces."""

import numpy as np
import pytest

from envs.episodes import make_expert
from envs.libero_env import LiberoEnv
from envs.lowpoly import TWIN_SUFFIX, decimate, lowpoly_file, read_mesh
from envs.suites import libero_root


def bowl_mesh():
    return libero_root() / "assets/stable_scanned_objects/akita_black_bowl/visual/akita_black_bowl_vis.msh"


def test_decimated_copy_keeps_shape_frame_and_texture_coordinates(tmp_path, monkeypatch):
    monkeypatch.setenv("VLA_CACHE", str(tmp_path))
    points, faces, uv = read_mesh(bowl_mesh())
    assert len(faces) > 40_000 and uv is not None
    p, f, t, n = decimate(points, faces, uv, 2000)
    assert len(f) <= 2000 and f.max() < len(p) and t.shape == (len(p), 2) and n.shape == (len(p), 3)
    # same frame and extent (MuJoCo re-centres either the same way), texture coordinates from the original atlas
    np.testing.assert_allclose(p.min(0), points.min(0), atol=0.02 * np.ptp(points))
    np.testing.assert_allclose(p.max(0), points.max(0), atol=0.02 * np.ptp(points))
    assert t.min() >= uv.min() - 1e-6 and t.max() <= uv.max() + 1e-6
    # cached: made once, then reused as it is; a mesh under the budget is not copied
    first = lowpoly_file(bowl_mesh(), 2000)
    stamp = first.stat().st_mtime_ns
    assert lowpoly_file(bowl_mesh(), 2000) == first and first.stat().st_mtime_ns == stamp
    cp, cf, cuv = read_mesh(first)
    assert len(cf) <= 2000 and cuv is not None
    assert lowpoly_file(bowl_mesh(), 100_000) is None


@pytest.mark.slow
@pytest.mark.parametrize("suite, task, init", [("libero_spatial", 3, 0), ("libero_object", 2, 0)])
def test_expert_and_physics_are_unchanged_on_decimated_scenes(suite, task, init):
    """The expert succeeds on both settings with bit-identical states at every step, while the
    lowpoly scene renders from far fewer faces and still looks like the same scene."""
    runs = {}
    for quality in ("fast", "lowpoly"):
        env = LiberoEnv(suite, task, cameras=["agentview"], resolution=64, render_quality=quality)
        obs, _ = env.reset(init_state_index=init)
        model = env.sim.model._model
        faces = sum(model.mesh_facenum[model.geom_dataid[g]] for g in range(model.ngeom)
                    if model.geom_type[g] == 7 and model.geom_group[g] <= 2)
        expert = make_expert(env)
        expert.reset()
        states, success = [obs["state"]], False
        for _ in range(env.max_steps):
            obs, _, success, truncated, _ = env.step(expert.act(obs))
            states.append(obs["state"])
            if success or truncated:
                break
        twins = sum(name.endswith(TWIN_SUFFIX) for name in (env.sim.model.geom_id2name(g) or "" for g in range(model.ngeom)))
        runs[quality] = dict(success=success, states=np.array(states), faces=faces, twins=twins,
                             image=env.reset(init_state_index=init)[0]["images"]["agentview"])
        env.close()
    fast, low = runs["fast"], runs["lowpoly"]
    assert fast["success"] and low["success"], f"expert failed on {suite} task {task}: {runs}"
    np.testing.assert_array_equal(fast["states"], low["states"])
    assert fast["twins"] == 0 and low["twins"] > 0
    assert low["faces"] < fast["faces"] / 3
    mse = np.mean((fast["image"].astype(float) - low["image"].astype(float)) ** 2)
    assert 10 * np.log10(255**2 / mse) > 25  # PSNR: the same scene, slightly coarser


def test_render_quality_is_named_when_wrong():
    with pytest.raises(ValueError, match="render_quality must be one of"):
        LiberoEnv("libero_spatial", 0, render_quality="ultra")
