"""Perturbed episodes (envs.perturb, envs.language): each axis changes what it claims and nothing
else, per episode the same every time, undone for the next episode; the engine records them."""

import json

import numpy as np
import pytest
import torch

from envs import perturb
from envs.language import NOUNS, VERBS, WRAPPERS, rewrite
from envs.perturb import AXES, CAMERA_PIVOT, Perturbation, camera_pose, draw, noisy_image, parse

SPATIAL3 = "pick up the black bowl on the cookie box and place it on the plate"


def test_axes_and_levels_parse_and_bad_ones_are_named():
    assert parse("camera:3") == [("camera", 3)]
    assert parse("noise") == [("noise", level) for level in range(1, 6)]
    assert parse("camera:1, light:5") == parse(["camera:1", "light:5"]) == [("camera", 1), ("light", 5)]
    assert len(parse("all")) == 35 and parse(None) == [] and parse("") == []
    with pytest.raises(ValueError, match="unknown perturbation axis 'fog'.*camera, robot, language"):
        parse("fog:2")
    with pytest.raises(ValueError, match="unknown perturbation level '6'"):
        parse("camera:6")
    with pytest.raises(ValueError, match="instruction="):
        draw("language", 1, 0, 0)


def test_a_draw_depends_on_its_episode_alone():
    for axis in AXES:
        a, b = draw(axis, 3, 2, 7, SPATIAL3), draw(axis, 3, 2, 7, SPATIAL3)
        assert a.params == b.params and a.seed == b.seed
        assert json.loads(json.dumps(a.record()))["axis"] == axis  # plain numbers, for episodes.jsonl
        assert draw(axis, 3, 2, 8, SPATIAL3).seed != a.seed
    # magnitudes grow with the level, inside each level's band
    joint_norm = [np.linalg.norm(draw("robot", lv, 0, 0).params["joint_offsets"]) for lv in range(1, 6)]
    assert np.allclose(joint_norm, [0.1, 0.2, 0.3, 0.4, 0.5], atol=1e-3)
    for lv in range(1, 6):
        shifts = draw("layout", lv, 0, 0).params["shift_cm"]
        assert all(1.2 * (lv - 1) <= s <= 1.2 * lv for s in shifts)


def test_camera_moves_are_the_geometry_they_name():
    pos, quat = np.array([0.6586, 0.0, 1.6104]), np.array([0.638, 0.305, 0.305, 0.638])
    quat = quat / np.linalg.norm(quat)
    none = {"azimuth_deg": 0.0, "elevation_deg": 0.0, "distance_scale": 1.0, "yaw_deg": 0.0, "pitch_deg": 0.0}
    p, q = camera_pose(pos, quat, none)
    assert np.allclose(p, pos) and np.allclose(np.abs(q @ quat), 1)
    p, _ = camera_pose(pos, quat, {**none, "azimuth_deg": 60.0})  # orbit: same height, same radius, 60 degrees round
    r0, r1 = (pos - CAMERA_PIVOT)[:2], (p - CAMERA_PIVOT)[:2]
    assert np.isclose(p[2], pos[2]) and np.isclose(np.linalg.norm(r1), np.linalg.norm(r0))
    assert np.isclose(np.degrees(np.arctan2(r1[1], r1[0]) - np.arctan2(r0[1], r0[0])), 60.0)
    p, _ = camera_pose(pos, quat, {**none, "elevation_deg": 15.0})  # raised, same distance from the pivot
    assert p[2] > pos[2] and np.isclose(np.linalg.norm(p - CAMERA_PIVOT), np.linalg.norm(pos - CAMERA_PIVOT))
    p, _ = camera_pose(pos, quat, {**none, "distance_scale": 1.5})
    assert np.allclose(p - CAMERA_PIVOT, 1.5 * (pos - CAMERA_PIVOT))
    p, q = camera_pose(pos, quat, {**none, "yaw_deg": 8.0, "pitch_deg": -6.0})  # the look turns, the camera stays
    assert np.allclose(p, pos) and not np.allclose(np.abs(q @ quat), 1)


def test_instruction_rewrites_keep_their_referents_and_hold_out_the_eval_words():
    rng = np.random.default_rng(0)
    for level in range(1, 6):
        text = rewrite(SPATIAL3, level, "eval", rng)
        assert text != SPATIAL3
        if level in (1, 2):
            assert SPATIAL3 in text  # wrapper and distractor only
    verbs = rewrite(SPATIAL3, 3, "eval", rng)
    assert "black bowl" in verbs and "cookie box" in verbs and "pick up" not in verbs
    nouns = rewrite(SPATIAL3, 4, "eval", rng)
    assert "pick up" in nouns and "cookie box" not in nouns and any(p in nouns for p in NOUNS["cookie box"]["eval"])
    for table in (VERBS, NOUNS):  # the evaluation's words are never training's
        for forms in table.values():
            assert not set(forms["train"]) & set(forms["eval"])
    assert not set(WRAPPERS["train"]) & set(WRAPPERS["eval"])
    names = set(NOUNS)
    for forms in NOUNS.values():  # a paraphrase never names another object
        assert not (set(forms["train"]) | set(forms["eval"])) & names


def test_sensor_noise_is_fresh_every_frame_and_the_same_every_run():
    img = np.random.default_rng(0).integers(0, 255, (128, 128, 3), dtype=np.uint8)
    for kind in perturb.NOISE_KINDS:
        p = Perturbation("noise", 4, {"kind": kind, "angle_deg": 30.0}, seed=5)
        a, b = noisy_image(img, p, 3), noisy_image(img, p, 3)
        assert a.shape == img.shape and a.dtype == np.uint8 and np.array_equal(a, b)
        assert np.abs(a.astype(int) - img).mean() > 2
    g = Perturbation("noise", 2, {"kind": "gaussian", "angle_deg": 0.0}, seed=5)
    assert not np.array_equal(noisy_image(img, g, 0), noisy_image(img, g, 1))


@pytest.fixture(scope="module")
def spatial3():
    """LIBERO-Spatial task 3 (a bowl on the cookie box, another in the cabinet), with the held-out
    background textures in its model."""
    from envs.libero_env import LiberoEnv

    env = LiberoEnv("libero_spatial", 3, textures=tuple(perturb.TEXTURES["eval"]))
    plain, _ = env.reset(init_state_index=0)
    yield env, plain
    env.close()


def _changed(obs, plain) -> dict:
    return {c: float(np.abs(obs["images"][c].astype(int) - plain["images"][c]).mean()) for c in plain["images"]}


def test_each_axis_changes_what_it_claims_and_is_undone_after(spatial3):
    from envs import ground_truth as gt

    env, plain = spatial3
    for axis in AXES:
        p = draw(axis, 5, 3, 1, env.instruction)
        obs, _ = env.reset(init_state_index=0, options={"perturbation": p})
        again, _ = env.reset(init_state_index=0, options={"perturbation": p})
        assert all(np.array_equal(obs["images"][c], again["images"][c]) for c in obs["images"]), f"{axis}: not reproducible"
        change = _changed(obs, plain)
        moved_state = float(np.abs(obs["state"] - plain["state"]).max())
        if axis in ("camera", "noise"):  # the third-person camera only
            assert change["agentview"] > 3 and change["robot0_eye_in_hand"] == 0 and moved_state == 0, axis
        elif axis == "language":
            assert obs["instruction"] == p.params["instruction"] != plain["instruction"]
            assert max(change.values()) == 0 and moved_state == 0
        elif axis == "robot":
            assert moved_state > 0.05 and change["robot0_eye_in_hand"] > 3
        elif axis in ("light", "background"):
            assert change["robot0_eye_in_hand"] > 1 and moved_state == 0, axis
        if axis == "camera":  # where the renderer draws the plate is where the new extrinsics project it
            plate = gt.object_info(env, "plate_1").center
            seg, names = gt.render_segmentation(env, "agentview", 128, 128)
            v, u = np.nonzero(seg == names.index("plate_1") + 1)
            assert np.linalg.norm(gt.project(env, "agentview", plate, 128, 128) - [u.mean(), v.mean()]) < 6
        restored, _ = env.reset(init_state_index=0)
        assert _changed(restored, plain) == {c: 0.0 for c in plain["images"]}, f"{axis} leaked into the next episode"


def test_layout_moves_table_objects_and_what_stands_on_them_and_leaves_fixtures_alone(spatial3):
    env, _ = spatial3
    pos = lambda: {n: np.array(env.sim.data._data.xpos[b]) for n, b in env._free_objects().items()}
    env.reset(init_state_index=0)
    before = pos()
    env.reset(init_state_index=0, options={"perturbation": draw("layout", 5, 3, 0)})
    moved = {n: np.linalg.norm((p - before[n])[:2]) for n, p in pos().items()}
    assert all(moved[n] > 0.03 for n in ("cookies_1", "plate_1", "glazed_rim_porcelain_ramekin_1"))
    assert moved["akita_black_bowl_2"] < 0.005  # in the cabinet: a fixture holds it
    on_box = pos()["akita_black_bowl_1"] - pos()["cookies_1"]
    assert np.linalg.norm(on_box[:2] - (before["akita_black_bowl_1"] - before["cookies_1"])[:2]) < 0.01  # still on the box


@pytest.mark.slow
def test_the_engine_records_perturbations_and_the_expert_ignores_what_it_cannot_see(tmp_path):
    """Through vla.eval's workers: each episode's perturbation in episodes.jsonl; the scripted
    expert (ground truth) takes the very same steps under sensor noise and reworded instructions."""
    from conftest import load_config

    from vla.eval import evaluate

    steps = {}
    for spec in (None, "noise:5", "language:5"):
        out = tmp_path / str(spec)
        evaluate(load_config("suite=libero_spatial", "eval.policy=scripted", "eval.tasks=[0]", "eval.trials_per_task=2",
                             "eval.num_envs=1", "eval.save_videos=0", f"eval.out={out}",
                             *([f"eval.perturb={spec}"] if spec else [])))
        records = [json.loads(line) for line in (out / "episodes.jsonl").read_text().splitlines()]
        assert all(r["success"] for r in records)
        steps[spec] = [r["steps"] for r in sorted(records, key=lambda r: r["init"])]
        if spec:
            assert all(r["perturbation"]["axis"] == spec.split(":")[0] and r["perturbation"]["level"] == 5 for r in records)
    assert steps["noise:5"] == steps[None] == steps["language:5"]


def test_training_rewrites_are_fixed_per_frame_and_their_words_travel_in_the_checkpoint(demo_dataset, tmp_path):
    from conftest import load_config
    from safetensors import safe_open

    from envs.language import training_instruction, vocabulary
    from policies import VLAPolicy
    from vla.train import train

    shown = [training_instruction(SPATIAL3, 0.5, [0, 3, f]) for f in range(200)]
    assert shown == [training_instruction(SPATIAL3, 0.5, [0, 3, f]) for f in range(200)]  # resume sees the same
    assert 60 < sum(s != SPATIAL3 for s in shown) < 140 and len(set(shown)) > 20
    assert training_instruction(SPATIAL3, 0.0, [0, 3, 1]) == SPATIAL3
    ckpt = train(load_config("recipe=cpu", "train.num_threads=1", "train.eval_trials_per_task=0", "train.eval_every=0",
                             f"train.dataset={demo_dataset}", f"train.output_dir={tmp_path}", "train.max_steps=2",
                             "train.save_every=2", "train.batch_size=4", "train.resolution=56",
                             "train.instruction_rewrites=1.0"))
    policy = VLAPolicy.from_checkpoint(ckpt)
    with safe_open(str(ckpt / "model.safetensors"), "pt") as f:
        kept = set(f.get_tensor("vocab_rows").tolist())
    assert set(policy.model.processor.used_token_ids(vocabulary("train"))) <= kept
    unseen = sorted(set(policy.model.processor.used_token_ids(["timber cabinet chest of drawers"])) - kept)
    assert unseen  # held out: not in the file
    # ... yet they load as the model had them in training (frozen rows from the run's seed), not as zeros
    from omegaconf import OmegaConf

    from policies.backbone import build_backbone
    from policies.vla_model import extra_tokens

    cfg = OmegaConf.create((ckpt / "config.yaml").read_text())
    fresh = build_backbone(OmegaConf.to_container(cfg.model, resolve=True), extra_tokens(policy.spec), seed=cfg.seed)
    loaded = policy.model.lm.get_input_embeddings().weight[unseen]
    assert loaded.abs().sum() > 0
    assert torch.equal(loaded, fresh.model.get_input_embeddings().weight[unseen])


def test_perturbations_are_refused_where_they_cannot_apply(tmp_path):
    from conftest import load_config

    from vla.eval import evaluate

    with pytest.raises(ValueError, match="eval.perturb applies to LIBERO suites; suite=robocasa"):
        evaluate(load_config("suite=robocasa", "eval.policy=random", "eval.perturb=camera", f"eval.out={tmp_path}"))
    with pytest.raises(ValueError, match="unknown perturbation axis 'weather'"):
        evaluate(load_config("eval.policy=random", "eval.perturb=weather:2", f"eval.out={tmp_path}"))
