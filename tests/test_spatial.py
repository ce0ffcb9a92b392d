"""Spatial VQA from the simulator: every answer checked against ground truth read another way
(depth buffer, segmentation, world poses), on real LIBERO scenes."""

import numpy as np
import pytest

from envs import ground_truth as gt
from envs.libero_env import LiberoEnv
from vla.spatial import questions as Q
from vla.spatial.scene import MIN_VISIBLE_PIXELS, add_camera_motion, capture, randomize

RES = 128


@pytest.fixture(scope="module")
def scenes():
    """Four random layouts of two libero_spatial tasks, with each scene's questions and depth maps."""
    out = []
    for task in (0, 5):
        env = LiberoEnv("libero_spatial", task, cameras=["agentview"], resolution=RES)
        env.reset(seed=0)
        for s in range(2):
            rng = np.random.default_rng(100 * task + s)
            randomize(env, rng)
            scene = capture(env, "libero_spatial", task, s, RES)
            add_camera_motion(env, scene, rng, RES)
            depth = {c: gt.render_depth(env, c, RES, RES) for c in scene.views}
            world = {n: gt.object_info(env, n).center for n in scene.objects}
            world["radius"] = {n: np.linalg.norm(gt.object_info(env, n).size) / 2 for n in scene.objects}
            eef = np.array(env.robosuite_env.sim.data.site_xpos[env.robosuite_env.robots[0].eef_site_id])
            records = [r for _ in range(3) for r in Q.scene_questions(scene, rng)]
            out.append((scene, records, depth, world, eef))
        env.close()
    return out


def by_type(scenes, task_type):
    found = [(scene, r, depth, world, eef) for scene, recs, depth, world, eef in scenes for r in recs
             if r["task_type"] == task_type]
    assert found, f"no {task_type} question in the test scenes"
    return found


def marks(record_image, scene_image):
    """Pixels where the drawn marks changed the image, by mark colour."""
    out = {}
    diff = np.any(record_image != scene_image, axis=-1)
    for name, rgb in Q.COLORS.items():
        hit = diff & np.all(np.abs(record_image.astype(int) - rgb) < 8, axis=-1)
        if hit.any():
            vs, us = np.nonzero(hit)
            out[name] = (int(round(us.mean())), int(round(vs.mean())))
    return out


def test_every_task_type_is_generated(scenes):
    types = {r["task_type"] for _, recs, *_ in scenes for r in recs}
    assert types == set(Q.TASK_TYPES)
    for _, recs, *_ in scenes:
        for r in recs:
            assert "?" in r["question"] and r["answer"]
            if r["choices"]:
                assert r["answer"] in r["choices"], r


def test_depth_and_closer_agree_with_the_depth_buffer(scenes):
    for scene, r, depth, world, _ in by_type(scenes, "depth"):
        view = scene.views[r["gt"]["camera"]]
        (u, v), = marks(r["images"][0], view.image).values()
        # the mark sits on the object: the depth buffer there is within the object's radius of its centre depth
        assert abs(depth[view.camera][v, u] - float(r["answer"])) < world["radius"][r["gt"]["objects"][0]] + 0.01
    for task_type in ("closer", "front_behind"):
        for scene, r, depth, world, _ in by_type(scenes, task_type):
            view = scene.views[r["gt"]["camera"]]
            pts = marks(r["images"][0], view.image)
            za = view.to_camera(world[r["gt"]["objects"][0]])[2]
            zb = view.to_camera(world[r["gt"]["objects"][1]])[2]
            assert abs(za - zb) >= Q.MARGIN["depth_order"]
            first = (za < zb)
            assert r["answer"] == ({"closer": ("red", "blue"), "front_behind": ("in front", "behind")}[task_type][0 if first else 1])
            assert set(pts) == {"red", "blue"}


def test_lateral_relations_agree_with_the_image(scenes):
    for task_type, axis, words in (("left_right", 0, ("left", "right")), ("above_below", 1, ("above", "below"))):
        for scene, r, depth, world, _ in by_type(scenes, task_type):
            view = scene.views[r["gt"]["camera"]]
            # the object centres' projections into the image order as the answer says
            pa, pb = ((view.K @ p)[:2] / p[2] for p in (view.to_camera(world[n]) for n in r["gt"]["objects"]))
            assert r["answer"] == words[0 if pa[axis] < pb[axis] else 1]
            assert abs(pa[axis] - pb[axis]) >= Q.MARGIN["lateral"] * view.K[0, 0]


def test_distances_and_positions_match_world_poses(scenes):
    for scene, r, depth, world, _ in by_type(scenes, "distance"):
        a, b = r["gt"]["objects"]
        assert abs(float(r["answer"]) - np.linalg.norm(world[a] - world[b])) <= 0.006
    for scene, r, depth, world, _ in by_type(scenes, "position"):
        view = scene.views[r["gt"]["camera"]]
        p = np.array(Q.parse_numbers(r["answer"]))
        assert np.allclose(p, view.to_camera(world[r["gt"]["objects"][0]]), atol=0.006)
        u, v = (view.K @ p)[:2] / p[2]
        k = scene.objects.index(r["gt"]["objects"][0]) + 1
        vs, us = np.nonzero(view.labels == k)  # the position projects onto the marked object's pixels
        assert us.min() - 3 <= u <= us.max() + 3 and vs.min() - 3 <= v <= vs.max() + 3


def test_correspondence_has_exactly_one_right_answer(scenes):
    for scene, r, *_ in by_type(scenes, "correspondence"):
        v1, v2 = (scene.views[c] for c in r["gt"]["cameras"])
        (u, v), = marks(r["images"][0], v1.image).values()
        target = v1.labels[v, u]
        assert target > 0 and scene.objects[target - 1] == r["gt"]["object"]
        pts = marks(r["images"][1], v2.image)
        assert set(pts) == set(r["choices"])
        matches = [c for c, (u2, v2_) in pts.items() if v2.labels[v2_, u2] == target]
        assert matches == [r["answer"]]


def test_visibility_matches_segmentation(scenes):
    for scene, r, *_ in by_type(scenes, "visibility"):
        k = scene.objects.index(r["gt"]["object"]) + 1
        seen = [scene.views[c].visible(k) >= MIN_VISIBLE_PIXELS for c in r["gt"]["cameras"]]
        assert r["answer"] == {(True, True): "both", (True, False): "image 1", (False, True): "image 2",
                               (False, False): "neither"}[tuple(seen)]
        assert Q.readable(r["gt"]["object"]) in r["question"]


def test_camera_motion_moves_the_scene_the_right_way(scenes):
    for scene, recs, *_ in scenes:
        before, after, label, translation, yaw = scene.motion
        r = next(x for x in recs if x["task_type"] == "camera_motion")
        assert r["answer"] == label
        # a fixed world point (the mean object centre) moves in the image opposite to the camera
        p = scene.centers.mean(0)
        uv0, uv1 = ((view.K @ view.to_camera(p))[:2] / view.to_camera(p)[2] for view in (before, after))
        z0, z1 = before.to_camera(p)[2], after.to_camera(p)[2]
        expect = {"left": uv1[0] > uv0[0], "right": uv1[0] < uv0[0], "up": uv1[1] > uv0[1], "down": uv1[1] < uv0[1],
                  "forward": z1 < z0, "backward": z1 > z0, "turned left": uv1[0] > uv0[0], "turned right": uv1[0] < uv0[0]}
        assert expect[label], (label, uv0, uv1, z0, z1)
        assert not np.array_equal(before.image, after.image)


def test_gripper_relations_use_the_robot_frame(scenes):
    for scene, r, depth, world, eef in by_type(scenes, "gripper_direction"):
        off = world[r["gt"]["object"]] - eef  # LIBERO's robot base faces world +x, left is +y
        axis = int(np.argmax(np.abs(off)))
        words = [("behind", "in front of"), ("to the right of", "to the left of"), ("below", "above")][axis]
        assert r["answer"] == words[int(off[axis] > 0)]
    for scene, r, depth, world, eef in by_type(scenes, "gripper_distance"):
        assert abs(float(r["answer"]) - np.linalg.norm(world[r["gt"]["object"]] - eef)) <= 0.006



# -- grounding: the instruction's own object and target ----------------------------------------
def bddl_goal(scene):
    """The goal predicate read straight from the task's BDDL file, e.g. ('on', 'akita_black_bowl_1', 'plate_1')."""
    import re

    from envs.suites import get_suite

    text = get_suite(scene.suite).task(scene.task_index).bddl_file.read_text()
    goal = re.search(r"\(:goal\s*\(And\s*\((\w+) (\w+) (\w+)\)", text, re.IGNORECASE)
    return goal.group(1).lower(), goal.group(2), goal.group(3)


def project(view, point_world):
    x, y, z = view.to_camera(point_world)
    return view.K[0, 0] * x / z + view.K[0, 2], view.K[1, 1] * y / z + view.K[1, 2]


def test_grounding_roles_follow_the_bddl_goal(scenes):
    for scene, *_ in scenes:
        _, obj, target = bddl_goal(scene)
        assert scene.roles == {"object": obj, "target": target}
        assert scene.instruction.startswith("pick up the black bowl")


def test_pointing_lands_on_the_referred_object(scenes):
    for role in Q.ROLES:
        for scene, r, depth, world, _ in by_type(scenes, f"point_{role}"):
            name = scene.roles[role]
            assert r["gt"]["object"] == name and scene.instruction in r["question"]
            view = scene.views[r["gt"]["camera"]]
            x, y = map(float, r["answer"].split(", "))
            u, v = int(x * RES), int(y * RES)
            assert view.labels[v, u] == scene.index(name)  # the segmentation under the point
            # and the point is near where the object's world centre projects (pose and intrinsics, not pixels)
            cu, cv = project(view, world[name])
            reach = view.K[0, 0] * world["radius"][name] / view.to_camera(world[name])[2]
            assert np.hypot(u - cu, v - cv) <= reach + 2, (u, v, cu, cv, reach)
            assert np.array_equal(r["mask"], view.labels == scene.index(name))
            assert Q.score(r["task_type"], r["answer"], r["answer"], r["mask"]) == 1.0
            vs, us = np.nonzero(view.labels != scene.index(name))
            assert Q.score(r["task_type"], f"{(us[0] + 0.5) / RES:.3f}, {(vs[0] + 0.5) / RES:.3f}", r["answer"], r["mask"]) == 0.0


def test_choosing_marks_exactly_the_referred_object(scenes):
    for role in Q.ROLES:
        for scene, r, *_ in by_type(scenes, f"choose_{role}"):
            view = scene.views[r["gt"]["camera"]]
            found = marks(r["images"][0], view.image)
            assert set(found) == set(r["choices"]) and r["answer"] in found
            for color, (u, v) in found.items():
                on_referred = view.labels[v, u] == scene.index(scene.roles[role])
                assert on_referred == (color == r["answer"]), (color, r["answer"])
    # the other black bowls are the first distractors of the black bowl
    bowls = [r for _, r, *_ in by_type(scenes, "choose_object")]
    assert all(sum("black_bowl" in n for n in r["gt"]["candidates"].values()) >= 2 for r in bowls)


def test_grounded_positions_and_gripper_relations_match_world_poses(scenes):
    for role in Q.ROLES:
        for scene, r, depth, world, eef in by_type(scenes, f"position_{role}"):
            p = np.array(Q.parse_numbers(r["answer"]))
            # LIBERO's robot base faces world +x with +y to its left: the same axes, shifted to the base
            base = scene.base_pose[:3, 3]
            assert np.allclose(p, world[scene.roles[role]] - base, atol=0.006)
            assert p[0] > 0.2  # the table is in front of the robot
        for scene, r, depth, world, eef in by_type(scenes, f"distance_{role}"):
            assert abs(float(r["answer"]) - np.linalg.norm(world[scene.roles[role]] - eef)) <= 0.006
        for scene, r, depth, world, eef in by_type(scenes, f"direction_{role}"):
            off = world[scene.roles[role]] - eef  # the base faces world +x: its left is world +y
            assert abs(off[1]) >= Q.MARGIN["side"] and r["answer"] == ("left" if off[1] > 0 else "right")


def test_chained_goals_ask_no_grounding():
    from vla.spatial.scene import goal_roles

    objects = ["akita_black_bowl_1", "plate_1", "wooden_cabinet_1"]
    assert goal_roles(["in", "akita_black_bowl_1", "wooden_cabinet_1_top_region"], objects) == {
        "object": "akita_black_bowl_1", "target": "wooden_cabinet_1"}
    assert goal_roles(["open", "wooden_cabinet_1_top_region"], objects) == {"object": "wooden_cabinet_1"}
    assert goal_roles(["on", "ketchup_1", "plate_1"], objects) == {"target": "plate_1"}


def test_scoring():
    assert Q.score("closer", " Red.", "red") == 1.0 and Q.score("closer", "blue", "red") == 0.0
    assert Q.score("depth", "1.00", "1.00") == 1.0 and Q.score("depth", "about 2", "1.00") == 0.0
    assert Q.score("depth", "1.08", "1.00") == pytest.approx(0.9)  # 8 % off: below 1 - t for t <= 0.90
    assert Q.score("depth", "no idea", "1.00") == 0.0
    assert Q.score("position", "0.10, 0.20, 1.00", "0.10, 0.20, 1.00") == 1.0
    assert Q.score("position", "0.1, 0.2", "0.10, 0.20, 1.00") == 0.0
    mask = np.zeros((10, 20), bool)
    mask[2:4, 10:12] = True  # rows 2-3, columns 10-11
    assert Q.score("position_object", "0.60, 0.10, 0.05", "0.60, 0.10, 0.05") == 1.0
    assert Q.score("position_object", "0.63, 0.10, 0.05", "0.60, 0.10, 0.05") == pytest.approx(0.7)  # 3 cm: under 4..10
    assert Q.score("position_object", "0.80, 0.10, 0.05", "0.60, 0.10, 0.05") == 0.0  # MRA would give 0.5
    assert Q.score("point_object", "0.55, 0.35", "0.55, 0.35", mask) == 1.0
    assert Q.score("point_object", "(0.52, 0.21)", "0.55, 0.35", mask) == 1.0
    assert Q.score("point_object", "0.45, 0.35", "0.55, 0.35", mask) == 0.0
    assert Q.score("point_object", "55, 35", "0.55, 0.35", mask) == 0.0  # not a fraction
    assert Q.score("point_object", "0.55", "0.55, 0.35", mask) == 0.0
    assert Q.point_in_mask(f"{Q.point_inside(mask)[0]:.2f}, {Q.point_inside(mask)[1]:.2f}", mask)
    with pytest.raises(ValueError, match="mask"):
        Q.score("point_object", "0.55, 0.35", "0.55, 0.35")


# -- dataset, spatial stage, benchmark --------------------------------------------------------
def spatial_cfg(out, samples):
    from hydra import compose, initialize_config_dir

    from conftest import CONFIGS

    with initialize_config_dir(config_dir=str(CONFIGS), version_base="1.3"):
        return compose(config_name="spatial", overrides=[f"out={out}", f"samples={samples}", "scenes_per_shard=2",
                                                         "test_every=2"])


@pytest.fixture(scope="module")
def spatial_dataset(tmp_path_factory):
    from vla.spatial.generate import generate

    root = tmp_path_factory.mktemp("spatial") / "libero_spatial"
    generate(spatial_cfg(root, 60))  # shard 0 (task 0, train) and shard 1 (task 1, test)
    return root


def test_generator_writes_splits_by_task_and_resumes_without_duplicates(spatial_dataset):
    from vla.spatial.generate import generate, load_images, read_records, shard_path

    records = read_records(spatial_dataset)
    assert {r["split"] for r in records} == {"train", "test"}
    assert {r["task_index"] for r in records if r["split"] == "test"}.isdisjoint(
        {r["task_index"] for r in records if r["split"] == "train"})
    assert len({r["id"] for r in records}) == len(records)
    assert all(im.shape == (128, 128, 3) for im in load_images(spatial_dataset, records[0]))
    # a run killed before shard 1 was written: rerunning regenerates exactly the same records
    shard_path(spatial_dataset, 1).unlink()
    generate(spatial_cfg(spatial_dataset, 60))
    again = read_records(spatial_dataset)
    assert [(r["id"], r["question"], r["answer"]) for r in again] == [(r["id"], r["question"], r["answer"]) for r in records]


def test_spatial_stage_learns_and_its_checkpoint_starts_the_action_stage(spatial_dataset, demo_dataset, tmp_path):
    import json

    import torch
    from omegaconf import OmegaConf

    from conftest import load_config
    from policies.checkpoint import load_model_from_checkpoint
    from vla.spatial.eval import evaluate
    from vla.spatial.generate import read_records
    from vla.spatial.model import build_vqa_model
    from vla.train import train

    tiny = ["model.vocab=bytes", "train.num_threads=1"]
    ckpt = train(load_config(*tiny, "stage=spatial", f"train.dataset={spatial_dataset}", "train.max_steps=40",
                             "train.lr=2e-3", "train.save_every=40", "train.eval_questions=8",
                             f"train.output_dir={tmp_path / 'spatial'}"))
    losses = [json.loads(l)["loss"] for l in (tmp_path / "spatial" / "metrics.jsonl").read_text().splitlines()]
    assert np.mean(losses[-10:]) < 0.5 * np.mean(losses[:5]), losses
    assert (ckpt / "config.json").is_file() and (ckpt / "model.safetensors").is_file()

    # the action stage starts from exactly these backbone weights
    act = train(load_config(*tiny, "train.resolution=64", "train.eval_trials_per_task=0", "head=parallel",
                            f"backbone_checkpoint={ckpt}", f"train.dataset={demo_dataset}", "train.max_steps=1",
                            "train.lr=1e-12", f"train.output_dir={tmp_path / 'action'}"))
    policy = load_model_from_checkpoint(act)
    records = read_records(spatial_dataset, "train")
    tuned = build_vqa_model({**OmegaConf.to_container(load_config(*tiny).model), "pretrained": str(ckpt)}, 0, records)
    w_tuned = tuned.lm.model.visual.patch_embed.proj.weight
    w_policy = policy.lm.model.visual.patch_embed.proj.weight
    assert torch.allclose(w_tuned, w_policy, atol=1e-6)
    untuned = build_vqa_model(OmegaConf.to_container(load_config(*tiny).model), 0, records)
    assert not torch.allclose(untuned.lm.model.visual.patch_embed.proj.weight, w_policy, atol=1e-6)

    # the benchmark scores the checkpoint on the held-out split and writes its table
    from hydra import compose, initialize_config_dir

    from conftest import CONFIGS

    with initialize_config_dir(config_dir=str(CONFIGS), version_base="1.3"):
        ecfg = compose(config_name="spatial_eval", overrides=[*tiny[:1], f"checkpoint={ckpt}", f"dataset={spatial_dataset}",
                                                               f"out={tmp_path / 'eval'}"])
    summary = evaluate(ecfg)
    assert summary["overall"]["n"] == sum(1 for _ in open(tmp_path / "eval" / "answers.jsonl"))
    assert 0 <= summary["overall"]["choice_accuracy"] <= 1 and (tmp_path / "eval" / "summary.md").is_file()
    point = summary["by_type"]["point_object"]  # points scored by the mask: chance is the mask's share of the image
    assert point["metric"] == "in mask" and 0 < point["chance"] < 0.5 and point["blind"] is not None
    assert summary["overall"]["pointing_accuracy"] is not None and "| **pointing" in (tmp_path / "eval" / "summary.md").read_text()
    with pytest.raises(ValueError, match="not a spatial-stage checkpoint"):
        evaluate(OmegaConf.merge(ecfg, {"checkpoint": str(tmp_path)}))


def test_cotraining_mixes_spatial_questions_into_the_action_loop_and_resumes_exactly(spatial_dataset, demo_dataset, tmp_path):
    import json
    import shutil

    from conftest import load_config
    from vla.train import TrainError, train

    args = ["model.vocab=bytes", "train.resolution=64", "train.num_threads=1", "train.eval_trials_per_task=0",
            "head=parallel", "train.freeze_embeddings=true", f"train.dataset={demo_dataset}", "train.batch_size=4",
            "train.max_steps=40", "train.save_every=20", "train.lr=2e-3", "train.warmup_steps=2",
            f"train.spatial_dataset={spatial_dataset}", "train.spatial_loss_weight=0.5", "train.cotrain_spatial=1"]
    whole, killed = tmp_path / "whole", tmp_path / "killed"
    train(load_config(*args, f"train.output_dir={whole}"))
    lines = [json.loads(l) for l in (whole / "metrics.jsonl").read_text().splitlines()]
    assert len(lines) == 40
    for l in lines:  # each step: the action loss plus half the loss of its 4 spatial questions
        assert l["loss"] == pytest.approx(l["action_loss"] + 0.5 * l["spatial_loss"], abs=1e-4)
    spatial = [l["spatial_loss"] for l in lines]
    assert np.mean(spatial[-5:]) < 0.8 * np.mean(spatial[:5]), spatial

    # killed after step 20: the resumed run continues both curves exactly (the answer rows and the
    # questions' token rows travel in the compact checkpoint)
    shutil.copytree(whole, killed)
    shutil.rmtree(killed / "checkpoints" / "step_000040")
    train(load_config(*args, f"train.output_dir={killed}"))
    strip = lambda path: [{k: v for k, v in json.loads(l).items() if not k.endswith("_s")}
                          for l in (path / "metrics.jsonl").read_text().splitlines()]
    assert strip(killed) == strip(whole)

    with pytest.raises(TrainError, match="cotrain_spatial"):  # the same folder without co-training is another run
        train(load_config(*args[:-1], "train.max_steps=50", f"train.output_dir={whole}"))
    with pytest.raises(TrainError, match="cotrain_spatial=1.5"):
        train(load_config(*args[:-1], "train.cotrain_spatial=1.5", f"train.output_dir={tmp_path / 'bad'}"))
    with pytest.raises(TrainError, match="spatial_loss_weight=0"):
        train(load_config(*args, "train.spatial_loss_weight=0", f"train.output_dir={tmp_path / 'bad'}"))
    with pytest.raises(TrainError, match="spatial_dataset.*no spatial dataset"):
        train(load_config(*args[:-2], f"train.spatial_dataset={tmp_path / 'none'}", "train.cotrain_spatial=1",
                          f"train.output_dir={tmp_path / 'bad'}"))
