"""LeRobot v3.0 writer and reader on synthetic episodes (no simulator)."""

import json
import shutil

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from vla.dataset.collection import dataset_features
from vla.dataset.reader import LeRobotDataset
from vla.dataset.format import DatasetError, LeRobotWriter, read_tasks

CAMS = ["agentview", "robot0_eye_in_hand"]


def fake_episode(rng, length, res=32):
    frames = {f"observation.images.{c}": rng.integers(0, 256, (length, res, res, 3), dtype=np.uint8) for c in CAMS}
    frames["observation.state"] = rng.normal(size=(length, 8)).astype(np.float32)
    frames["action"] = rng.uniform(-1, 1, size=(length, 7)).astype(np.float32)
    return frames


@pytest.fixture
def dataset(tmp_path):
    rng = np.random.default_rng(0)
    writer = LeRobotWriter(tmp_path / "ds", fps=20, features=dataset_features(CAMS, 32))
    episodes = [fake_episode(rng, n) for n in (5, 9, 3)]
    tasks = ["put the bowl on the plate", "open the drawer", "put the bowl on the plate"]
    for ep, task in zip(episodes, tasks):
        writer.add_episode(ep, task)
    return tmp_path / "ds", episodes, tasks


def test_round_trip_is_exact(dataset):
    root, episodes, tasks = dataset
    ds = LeRobotDataset(root)
    assert len(ds) == 17 and ds.cameras == CAMS and ds.tasks == ["put the bowl on the plate", "open the drawer"]
    for e, ep in enumerate(episodes):
        back = ds.episode_frames(e)
        np.testing.assert_array_equal(back["action"], ep["action"])
        np.testing.assert_array_equal(back["state"], ep["observation.state"])
        for c in CAMS:
            np.testing.assert_array_equal(back["images"][c], ep[f"observation.images.{c}"])
    assert ds[5]["task"] == "open the drawer" and ds[5]["episode_index"] == 1 and ds[5]["frame_index"] == 0


def test_tasks_file_is_indexed_by_the_task_string_as_lerobot_reads_it(dataset, tmp_path):
    """LeRobot takes a frame's task from `tasks.iloc[task_index].name`: the pandas index."""
    import pandas as pd

    root, _, tasks = dataset
    df = pd.read_parquet(root / "meta/tasks.parquet")
    assert [df.iloc[i].name for i in range(len(df))] == ["put the bowl on the plate", "open the drawer"]
    assert df["task_index"].tolist() == [0, 1]
    # our reader takes both this layout and a plain table with a task column
    plain = tmp_path / "meta"
    plain.mkdir()
    pq.write_table(pa.table({"task": ["b", "a"], "task_index": [1, 0]}), plain / "tasks.parquet")
    assert read_tasks(tmp_path) == ["a", "b"]


def test_metadata_follows_v3(dataset):
    root, episodes, _ = dataset
    info = json.loads((root / "meta/info.json").read_text())
    assert info["codebase_version"] == "v3.0" and info["total_episodes"] == 3 and info["total_frames"] == 17
    assert info["features"]["observation.images.agentview"]["dtype"] == "image"
    for key in ("timestamp", "frame_index", "episode_index", "index", "task_index"):
        assert key in info["features"]
    eps = pq.read_table(root / "meta/episodes/chunk-000/file-000.parquet").to_pylist()
    assert [(e["dataset_from_index"], e["dataset_to_index"]) for e in eps] == [(0, 5), (5, 14), (14, 17)]
    stats = json.loads((root / "meta/stats.json").read_text())
    assert np.asarray(stats["observation.images.agentview"]["mean"]).shape == (3, 1, 1)
    assert stats["action"]["count"] == [17] and stats["observation.state"]["count"] == [17]


def test_stats_pool_per_episode_statistics_as_lerobot_does(tmp_path):
    """stats.json is pooled from the episodes' own statistics (linear in the episodes written):
    min, max, mean and std equal those over all frames; a quantile is the count-weighted mean of
    the episodes' quantiles (LeRobot's rule): within 0.2 standard deviations of the quantile over
    all frames for q10-q90, within 0.4 for the tails q01/q99 (estimated from ~60 frames each)."""
    rng = np.random.default_rng(1)
    writer = LeRobotWriter(tmp_path / "ds", fps=20, features=dataset_features(CAMS, 8))
    episodes = [fake_episode(rng, int(n), res=8) for n in rng.integers(40, 80, 12)]
    for ep in episodes:
        writer.add_episode(ep, "task")
    stats = json.loads((tmp_path / "ds/meta/stats.json").read_text())
    for key in ("action", "observation.state"):
        x = np.concatenate([e[key] for e in episodes]).astype(np.float64)
        for name, exact in (("min", x.min(0)), ("max", x.max(0)), ("mean", x.mean(0)), ("std", x.std(0))):
            np.testing.assert_allclose(stats[key][name], exact, rtol=1e-9, atol=1e-12, err_msg=f"{key} {name}")
        for name, q, tol in (("q01", 0.01, 0.4), ("q10", 0.10, 0.2), ("q50", 0.5, 0.2), ("q90", 0.9, 0.2),
                             ("q99", 0.99, 0.4)):
            err = np.abs(np.asarray(stats[key][name]) - np.quantile(x, q, axis=0))
            assert (err < tol * x.std(0)).all(), (key, name, err / x.std(0))
    # reopening resumes from the episodes table alone and keeps the same statistics
    LeRobotWriter(tmp_path / "ds", fps=20, features=dataset_features(CAMS, 8))
    assert json.loads((tmp_path / "ds/meta/stats.json").read_text()) == stats


def test_action_chunks_pad_past_episode_end(dataset):
    root, episodes, _ = dataset
    ds = LeRobotDataset(root, action_horizon=4)
    s = ds[3]  # episode 0 has 5 frames: steps 3, 4, then two pads repeating step 4
    np.testing.assert_array_equal(s["action"], episodes[0]["action"][[3, 4, 4, 4]])
    assert s["action_is_pad"].tolist() == [False, False, True, True]
    assert ds[5]["action_is_pad"].tolist() == [False] * 4


def test_resume_drops_half_written_episode(dataset):
    root, episodes, _ = dataset
    # a killed run: an episode's data file landed but its metadata did not
    shutil.copy(root / "data/chunk-000/file-002.parquet", root / "data/chunk-000/file-003.parquet")
    (root / "data/chunk-000/file-004.parquet.tmp").write_bytes(b"partial")
    # ... or the episodes table landed and info.json did not
    info = json.loads((root / "meta/info.json").read_text())
    (root / "meta/info.json").write_text(json.dumps(dict(info, total_episodes=2, total_frames=14)))
    writer = LeRobotWriter(root, fps=20, features=dataset_features(CAMS, 32))
    assert writer.num_episodes == 3 and not (root / "data/chunk-000/file-003.parquet").exists()
    assert json.loads((root / "meta/info.json").read_text())["total_frames"] == 17
    assert not (root / "data/chunk-000/file-004.parquet.tmp").exists()
    writer.add_episode(fake_episode(np.random.default_rng(1), 4), "open the drawer")
    ds = LeRobotDataset(root)
    assert len(ds) == 21 and ds.episode_frames(3)["action"].shape == (4, 7)
    np.testing.assert_array_equal(ds.episode_frames(2)["action"], episodes[2]["action"])


def test_writer_rejects_bad_episodes(tmp_path):
    writer = LeRobotWriter(tmp_path / "ds", fps=20, features=dataset_features(CAMS, 32))
    ep = fake_episode(np.random.default_rng(0), 4)
    bad = dict(ep, action=ep["action"][:, :6])
    with pytest.raises(DatasetError, match="'action' has shape"):
        writer.add_episode(bad, "task")
    with pytest.raises(DatasetError, match="missing features"):
        writer.add_episode({k: v for k, v in ep.items() if k != "observation.state"}, "task")
    writer.add_episode(ep, "task")
    with pytest.raises(DatasetError, match="other features or fps"):
        LeRobotWriter(tmp_path / "ds", fps=10, features=dataset_features(CAMS, 32))


def test_corrupt_datasets_give_clear_errors(dataset, tmp_path):
    root, _, _ = dataset
    with pytest.raises(DatasetError, match="dataset folder not found"):
        LeRobotDataset(tmp_path / "nope")
    with pytest.raises(DatasetError, match="camera"):
        LeRobotDataset(root, cameras=["frontview"])

    broken = tmp_path / "missing_file"
    shutil.copytree(root, broken)
    (broken / "data/chunk-000/file-001.parquet").unlink()
    with pytest.raises(DatasetError, match="data file missing: .*file-001.parquet"):
        LeRobotDataset(broken)

    wrong_shape = tmp_path / "wrong_shape"
    shutil.copytree(root, wrong_shape)
    info = json.loads((wrong_shape / "meta/info.json").read_text())
    info["features"]["action"]["shape"] = [8]
    (wrong_shape / "meta/info.json").write_text(json.dumps(info))
    with pytest.raises(DatasetError, match=r"action has shape \(7,\) per frame, info.json says \(8,\)"):
        LeRobotDataset(wrong_shape)

    no_action = tmp_path / "no_action"
    shutil.copytree(root, no_action)
    del info["features"]["action"]
    (no_action / "meta/info.json").write_text(json.dumps(info))
    with pytest.raises(DatasetError, match="feature 'action' is missing"):
        LeRobotDataset(no_action)

    old = tmp_path / "old"
    shutil.copytree(root, old)
    info["codebase_version"] = "v2.1"
    (old / "meta/info.json").write_text(json.dumps(info))
    with pytest.raises(DatasetError, match="v2.1"):
        LeRobotDataset(old)

    (old / "meta/info.json").write_text("{not json")
    with pytest.raises(DatasetError, match="not valid JSON"):
        LeRobotDataset(old)


def _encode_mp4(path, frames, fps):
    import av

    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = frames.shape[2], frames.shape[1], "yuv420p"
        stream.options = {"crf": "10", "g": "2"}
        for f in frames:
            out.mux(stream.encode(av.VideoFrame.from_ndarray(f, format="rgb24")))
        out.mux(stream.encode())


def test_reads_hub_style_video_datasets(dataset, tmp_path):
    """A dataset whose camera is dtype "video" (mp4 holding several episodes back to back, as
    the Hub's lerobot/libero does) decodes to the frames of the right episode."""
    root, episodes, _ = dataset
    video_root = tmp_path / "video_ds"
    shutil.copytree(root, video_root)
    info = json.loads((video_root / "meta/info.json").read_text())
    key = "observation.images.agentview"
    info["features"][key]["dtype"] = "video"
    info["video_path"] = "videos/{video_key}/chunk-{chunk_index:03d}/file-{file_index:03d}.mp4"
    (video_root / "meta/info.json").write_text(json.dumps(info))
    # smooth frames survive lossy coding well enough to compare
    yy, xx = np.mgrid[0:32, 0:32]
    frames = np.stack([np.stack([(xx * 8 + 10 * t) % 256, yy * 8, np.full_like(xx, 20 * t)], -1)
                       for t in range(17)]).astype(np.uint8)
    _encode_mp4(video_root / f"videos/{key}/chunk-000/file-000.mp4", frames, fps=20)
    eps_path = video_root / "meta/episodes/chunk-000/file-000.parquet"
    rows = pq.read_table(eps_path).to_pylist()
    for r in rows:
        r[f"videos/{key}/chunk_index"], r[f"videos/{key}/file_index"] = 0, 0
        r[f"videos/{key}/from_timestamp"] = r["dataset_from_index"] / 20
        r[f"videos/{key}/to_timestamp"] = r["dataset_to_index"] / 20
    import pyarrow as pa

    pq.write_table(pa.Table.from_pylist(rows), eps_path)
    ds = LeRobotDataset(video_root)
    for i in (0, 4, 5, 13, 16):  # first/last frames of episodes 0, 1, 2
        got = ds[i]["images"]["agentview"].astype(int)
        assert got.shape == (32, 32, 3)
        assert np.abs(got - frames[i]).mean() < 6, f"frame {i} decoded from the wrong place"
    np.testing.assert_array_equal(ds[14]["images"]["robot0_eye_in_hand"], episodes[2]["observation.images.robot0_eye_in_hand"][0])


def test_merge_copies_episodes_without_decoding_and_resumes(tmp_path):
    from vla.dataset.collection import merge_datasets

    rng = np.random.default_rng(2)
    parts, everything = [], []
    for p, lengths in enumerate(((4, 6), (5,))):
        w = LeRobotWriter(tmp_path / f"part{p}", fps=20, features=dataset_features(CAMS, 16))
        for n in lengths:
            ep = fake_episode(rng, n, res=16)
            w.add_episode(ep, f"task {p}")
            everything.append((ep, f"task {p}"))
        parts.append(tmp_path / f"part{p}")
    one = LeRobotWriter(tmp_path / "one", fps=20, features=dataset_features(CAMS, 16))
    for ep, task in everything:
        one.add_episode(ep, task)
    merge_datasets(parts[:1], tmp_path / "merged")
    merge_datasets(parts, tmp_path / "merged")  # resumes: part0's episodes are already there
    merged = LeRobotDataset(tmp_path / "merged")
    assert len(merged.episodes) == 3 and merged.tasks == ["task 0", "task 1"]
    for e, (ep, task) in enumerate(everything):
        back = merged.episode_frames(e)
        np.testing.assert_array_equal(back["action"], ep["action"])
        np.testing.assert_array_equal(back["images"]["agentview"], ep["observation.images.agentview"])
        assert merged[int(np.flatnonzero(merged.episode_index == e)[0])]["task"] == task
    # the same dataset as writing every episode into one folder, statistics included
    for name in ("meta/stats.json", "meta/info.json"):
        assert json.loads((tmp_path / "merged" / name).read_text()) == json.loads((tmp_path / "one" / name).read_text())
    assert pq.read_table(tmp_path / "merged/data/chunk-000/file-002.parquet").equals(
        pq.read_table(tmp_path / "one/data/chunk-000/file-002.parquet"))


def test_a_list_of_datasets_reads_as_one(dataset, tmp_path):
    """DAgger trains on the demonstrations plus every round: frames in order, dataset after dataset."""
    from vla.dataset.reader import open_dataset

    root, episodes, tasks = dataset
    rng = np.random.default_rng(1)
    writer = LeRobotWriter(tmp_path / "more", fps=20, features=dataset_features(CAMS, 32))
    extra = fake_episode(rng, 4)
    writer.add_episode(extra, "close the microwave")
    union = open_dataset([root, tmp_path / "more"], action_horizon=2)
    one = LeRobotDataset(root, action_horizon=2)
    assert len(union) == len(one) + 4 and len(union.episodes) == 4
    assert union.tasks == ["put the bowl on the plate", "open the drawer", "close the microwave"]
    np.testing.assert_array_equal(union.actions[-4:], extra["action"])
    last = union[len(one) + 3]
    assert last["task"] == "close the microwave" and last["action_is_pad"].tolist() == [False, True]
    np.testing.assert_array_equal(last["images"]["agentview"], extra["observation.images.agentview"][3])
    np.testing.assert_array_equal(union[0]["images"]["agentview"], one[0]["images"]["agentview"])
    with pytest.raises(IndexError):
        union[len(union)]
    small = LeRobotWriter(tmp_path / "small", fps=20, features=dataset_features(CAMS, 16))
    small.add_episode(fake_episode(rng, 3, res=16), "put the bowl on the plate")
    with pytest.raises(DatasetError, match=r"small cannot be trained on with .*: feature observation.images.agentview"):
        open_dataset([root, tmp_path / "small"])
    assert isinstance(open_dataset([root]), LeRobotDataset)


def test_a_recorded_grasp_count_is_read_and_an_absent_one_derived_from_the_gripper_commands(dataset, tmp_path):
    """DAgger records the count of the commands that ran (the learner's, not the expert's labels);
    demonstrations derive it from their own actions; both train together."""
    from envs.robot_state import grasps_before_each_step
    from vla.dataset.format import vector_feature
    from vla.dataset.reader import GRASPS_KEY, open_dataset

    root, episodes, _ = dataset
    rng = np.random.default_rng(2)
    ep = fake_episode(rng, 12)
    ep["action"][:, 6] = [-1] + [1] * 6 + [-1] * 5  # one cycle in the labels ...
    ep[GRASPS_KEY] = np.array([[0]] * 4 + [[3]] * 8, np.int64)  # ... but the count of what ran
    writer = LeRobotWriter(tmp_path / "relabelled", fps=20, features={**dataset_features(CAMS, 32),
                                                                       GRASPS_KEY: vector_feature(["grasps"], "int64")})
    writer.add_episode(ep, "open the drawer")
    assert LeRobotDataset(tmp_path / "relabelled").grasps.tolist() == [0] * 4 + [3] * 8
    demos = LeRobotDataset(root)
    assert demos.grasps.tolist() == [n for e in episodes for n in grasps_before_each_step(e["action"][:, 6])]
    union = open_dataset([root, tmp_path / "relabelled"])
    assert union.grasps.tolist() == demos.grasps.tolist() + [0] * 4 + [3] * 8 and union[len(demos) + 5]["grasps"] == 3


def test_kept_images_are_the_policys_resized_frames_within_the_memory_budget(dataset, tmp_path):
    """Training keeps frames decoded and resized to its resolution (train.image_cache_gb): the same
    pixels the policy's own resize gives, read back from memory, and never more than the budget."""
    from policies.transforms import camera_images
    from vla.dataset.reader import open_dataset

    root, episodes, _ = dataset
    fresh = LeRobotDataset(root)
    kept = LeRobotDataset(root)
    per_image = 24 * 24 * 3
    kept.keep_images(24, max_bytes=10 * per_image)  # room for 10 of the 34 images
    for _ in range(2):  # the second pass reads the kept ones
        for i in range(len(kept)):
            for c in CAMS:
                want = camera_images({c: fresh[i]["images"][c]}, [c], 24)[0]
                np.testing.assert_array_equal(kept[i]["images"][c], want)
    assert len(kept._kept) == 10 and kept._kept_room == 0
    assert kept[0]["images"]["agentview"] is kept._kept[("agentview", 0)]  # from memory, not a new decode
    union = open_dataset([root, root])
    union.keep_images(24, max_bytes=34 * per_image)
    union[0], union[len(union) - 1]
    assert [len(p._kept) for p in union.parts] == [2, 2] and [p._kept_room for p in union.parts] == [15 * per_image] * 2
