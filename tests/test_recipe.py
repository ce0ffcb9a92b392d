"""The CPU training path: batched torch image inputs, crop augmentation, the matmul patch
embedding, frozen text embeddings, compact checkpoints, and the recipe config."""

import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import load_config
from test_policy import obs_batch, tiny_model

from policies import VLAPolicy
from policies.backbone import image_inputs, image_processor_for
from policies.transforms import crop_and_resize
from vla.dataset.reader import LeRobotDataset
from vla.train import train


@pytest.mark.parametrize("family, patch, size", [("qwen2_5_vl", 14, 112), ("qwen2_5_vl", 14, 140), ("qwen3_vl", 16, 128)])
def test_torch_image_inputs_equal_the_hf_processor(family, patch, size):
    """Where no resize is needed the batched torch path gives the processor's exact layout."""
    proc = image_processor_for(family, patch)
    images = [np.random.default_rng(k).integers(0, 255, (size, size, 3), dtype=np.uint8) for k in range(3)]
    ref = proc(images=images, return_tensors="pt")
    ours, per_image = image_inputs(proc, images)
    torch.testing.assert_close(ours["pixel_values"], ref["pixel_values"], atol=1e-5, rtol=0)
    assert torch.equal(ours["image_grid_thw"], ref["image_grid_thw"])
    assert per_image == (ref["image_grid_thw"].prod(-1) // 4).tolist()


def test_crops_are_random_in_training_and_central_otherwise():
    img = np.random.default_rng(0).integers(0, 255, (4, 64, 64, 3), dtype=np.uint8)
    centre = crop_and_resize(img, 0.9, 56, augment=False)
    assert centre.shape == (4, 3, 56, 56)
    torch.testing.assert_close(centre, crop_and_resize(img, 0.9, 56, augment=False))
    np.random.seed(0)
    a = crop_and_resize(img, 0.9, 56, augment=True)
    np.random.seed(0)
    torch.testing.assert_close(a, crop_and_resize(img, 0.9, 56, augment=True))  # numpy's RNG: resumable
    assert not torch.equal(a, crop_and_resize(img, 0.9, 56, augment=True))
    # crop_scale 1 at the input size is the image itself
    torch.testing.assert_close(crop_and_resize(img, 1.0, 64, augment=True), torch.from_numpy(img).permute(0, 3, 1, 2).float())


def test_patch_embedding_as_matmul_equals_the_conv3d():
    model = tiny_model()
    embed = model.lm.model.visual.patch_embed
    x = torch.randn(10, embed.proj.weight[0].numel())
    conv = embed.proj(x.view(-1, 3, 2, 14, 14)).view(10, -1)
    torch.testing.assert_close(embed(x), conv, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("family", ["qwen2_5_vl", "qwen3_vl"])
def test_batched_window_attention_equals_hfs_per_window_loop(family):
    """The vision tower with one attention call over all equal windows (Qwen2.5-VL: 4 windows per
    112 px image and whole images in its last block) gives HF's per-window result, forward and backward."""
    from test_policy import random_obs

    model = tiny_model(family, resolution=112)
    visual = model.lm.model.visual
    attns = [m for m in visual.modules() if type(m).__name__.endswith("VisionAttention")]
    batch = model.processor.encode(random_obs(2, 112)["images"], np.zeros((2, 8)), ["a", "b"])
    pix, grid = batch["pixel_values"].requires_grad_(True), batch["image_grid_thw"]

    def run():
        pix.grad = None
        out = visual(pix, grid_thw=grid)
        out = out.pooler_output if hasattr(out, "pooler_output") else out
        out = torch.cat(out) if isinstance(out, (list, tuple)) else out
        out.square().sum().backward()
        return out.detach(), pix.grad.clone()

    batched = run()
    for m in attns:
        del m.forward  # HF's own forward again
    loop = run()
    torch.testing.assert_close(batched[0], loop[0], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(batched[1], loop[1], atol=1e-5, rtol=1e-5)


def test_one_query_per_chunk_step_shortens_the_sequence_and_learns():
    """head.queries=steps: 8 placeholders regressing 7 numbers each instead of OFT's 56 regressing
    one: the same actions out, 48 fewer tokens in, and the L1 loss falls on a fixed batch."""
    from test_policy import random_obs

    rng = np.random.default_rng(0)
    obs, actions = random_obs(), rng.uniform(-0.5, 0.5, (2, 8, 7)).astype(np.float32)
    lengths = {}
    for queries in ("dims", "steps"):
        torch.manual_seed(0)
        model = tiny_model(head="parallel", output="l1", chunk_size=8, queries=queries).train()
        batch = model.processor.encode(obs["images"], obs["state"], obs["instruction"], actions=actions)
        lengths[queries] = batch["input_ids"].shape[1]
        opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3)
        losses = []
        for _ in range(25):
            loss = model(batch)["loss"]
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses.append(loss.item())
        assert losses[-1] < 0.7 * losses[0], (queries, losses)
        assert VLAPolicy(model.eval()).act(obs).shape == (2, 8, 7)
    assert lengths["dims"] - lengths["steps"] == 8 * 7 - 8
    with pytest.raises(ValueError, match="queries: steps .* needs head: parallel with output: l1"):
        tiny_model(head="parallel", output="tokens", queries="steps")


def test_compact_prompt_keeps_images_state_and_instruction_only():
    """train.prompt=compact: no chat template, camera names or question, 33 fewer tokens for
    two cameras; the images, the state token and the instruction's words are all still there."""
    from test_policy import random_obs

    obs = random_obs()
    chat, compact = (tiny_model(vocab="qwen", head="parallel", output="l1", chunk_size=2, queries="steps", prompt=p)
                     for p in ("chat", "compact"))
    a, b = (m.processor.encode(obs["images"], obs["state"], obs["instruction"]) for m in (chat, compact))
    assert a["input_ids"].shape[1] - b["input_ids"].shape[1] == 33
    words = compact.tokenizer(obs["instruction"][1], add_special_tokens=False)["input_ids"]
    row = b["input_ids"][1].tolist()
    assert row.count(compact.processor.image_token_id) == (a["input_ids"][1] == chat.processor.image_token_id).sum()
    assert row.count(compact.processor.state_token_id) == 1 and row[-2 - len(words):-2] == words  # then 2 action queries
    assert VLAPolicy(compact).act(obs).shape == (2, 2, 7)
    with pytest.raises(ValueError, match="prompt must be one of"):
        tiny_model(prompt="poem")


NEW_TASK = "pick up the alphabet soup and place it in the basket"


def test_recipe_trains_with_frozen_embeddings_and_ships_a_compact_checkpoint(demo_dataset, tmp_path):
    """Frozen text embeddings are left out of AdamW; the checkpoint keeps only the vocabulary rows
    the prompts use (real 151k vocabulary: a few MB instead of ~160), and reloads to identical actions."""
    cfg = load_config("recipe=cpu", "train.num_threads=1", "train.eval_trials_per_task=0", "train.eval_every=0",
                      f"train.dataset={demo_dataset}", f"train.output_dir={tmp_path}", "train.max_steps=30",
                      "train.save_every=30", "train.batch_size=8", "train.warmup_steps=5", "train.resolution=56")
    ckpt = train(cfg)
    shipped = [f for f in ckpt.rglob("*") if f.is_file() and f.name not in ("optimizer.safetensors", "trainer_state.json")]
    size_mb = sum(f.stat().st_size for f in shipped) / 2**20
    assert size_mb < 25, f"checkpoint without optimizer state: {size_mb:.1f} MB"
    assert (ckpt / "backbone" / "vla_tokenizer.json").is_file()  # the 18 MB Qwen vocabulary is rebuilt, not stored
    log = [json.loads(line)["loss"] for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert np.mean(log[-5:]) < np.mean(log[:5])
    spec = json.loads((ckpt / "policy.json").read_text())["spec"]
    assert spec["crop_scale"] == 0.9 and spec["render_quality"] == "lowpoly" and spec["head"] == "parallel"
    # evaluation renders at the recorded size (64 here), not at the model's input size (56)
    from vla.eval import load_policy

    assert spec["camera_resolution"] == 64 and load_policy("checkpoint", str(ckpt), None)[2] == 64
    ds = LeRobotDataset(demo_dataset, cameras=spec["cameras"])
    b = obs_batch(ds, [0, 40, 80], spec["cameras"])
    a1, a2 = VLAPolicy.from_checkpoint(ckpt).act(b), VLAPolicy.from_checkpoint(ckpt).act(b)
    assert a1.shape == (3, 8, 7)
    np.testing.assert_array_equal(a1, a2)
    # the run resumes from the compact checkpoint (exact weights back in place)
    more = load_config("recipe=cpu", "train.num_threads=1", "train.eval_trials_per_task=0", "train.eval_every=0",
                       f"train.dataset={demo_dataset}", f"train.output_dir={tmp_path}", "train.max_steps=32",
                       "train.save_every=30", "train.batch_size=8", "train.warmup_steps=5", "train.resolution=56")
    assert train(more).name == "step_000032"
    # a new run can start from a trained policy's weights (a shipped checkpoint has no optimiser state),
    # here on a list of datasets whose actions are scaled otherwise and with a new instruction: the
    # warm start keeps the normalisation its weights learned, not the new data's, and the new
    # instruction's words get the fresh model's distinct embeddings (not the compact checkpoint's zeros)
    from policies.checkpoint import load_model_from_checkpoint
    from vla.dataset.collection import dataset_features
    from vla.dataset.format import LeRobotWriter

    halved = LeRobotWriter(tmp_path / "halved", fps=20, features=dataset_features(spec["cameras"], 64),
                           recording={"render_quality": "lowpoly"})
    for e in ds.episodes:
        f = ds.episode_frames(e["episode_index"])
        halved.add_episode({**{f"observation.images.{c}": f["images"][c] for c in spec["cameras"]},
                            "observation.state": f["state"], "action": np.concatenate([f["action"][:, :6] * 0.5, f["action"][:, 6:]], 1)},
                           NEW_TASK)
    warm = load_config("recipe=cpu", "train.num_threads=1", "train.eval_trials_per_task=0", "train.eval_every=0",
                       f"train.dataset=[{demo_dataset},{tmp_path / 'halved'}]", f"train.output_dir={tmp_path / 'warm'}",
                       "train.max_steps=1", "train.save_every=1", "train.batch_size=8", "train.resolution=56", "train.lr=0",
                       f"train.init_from={ckpt}")
    warmed = train(warm)
    started = load_model_from_checkpoint(warmed)
    before = load_model_from_checkpoint(ckpt)
    from policies.checkpoint import _vocab_matrices

    vocab = _vocab_matrices(before)  # compared on the rows the checkpoint holds, below
    for name, value in before.state_dict().items():
        if name not in vocab:
            torch.testing.assert_close(started.state_dict()[name], value, msg=name)  # lr 0: one step changes nothing
    old_rows = before.processor.used_token_ids(ds.tasks)
    new_rows = sorted(set(started.processor.used_token_ids([NEW_TASK])) - set(old_rows))
    rows = started.lm.get_input_embeddings().weight
    torch.testing.assert_close(rows[old_rows], before.lm.get_input_embeddings().weight[old_rows])
    assert len(new_rows) >= 3 and (rows[new_rows].abs().sum(1) > 0).all() and len({tuple(r.tolist()) for r in rows[new_rows]}) == len(new_rows)
    for stats in ("action_stats.json", "state_stats.json"):
        assert (warmed / stats).read_text() == (ckpt / stats).read_text()
    # a warm start may change the head's shape (one query per number instead of per chunk step): the
    # backbone comes from the checkpoint, the reshaped layers start fresh
    steps = train(load_config("recipe=cpu", "train.num_threads=1", "train.eval_trials_per_task=0", "train.eval_every=0",
                              f"train.dataset={demo_dataset}", f"train.output_dir={tmp_path / 'steps'}", "train.max_steps=1",
                              "train.save_every=1", "train.batch_size=8", "train.resolution=56", "train.lr=0",
                              "head.queries=dims", f"train.init_from={ckpt}"))
    assert before.spec.queries == "steps"
    stepped = load_model_from_checkpoint(steps).state_dict()
    assert stepped["action_queries"].shape == (56, 128) and stepped["regressor.3.weight"].shape == (1, 128)
    for name, value in before.state_dict().items():
        if not name.startswith(("action_queries", "regressor.3.")):
            torch.testing.assert_close(stepped[name], value, msg=name)
    # another backbone size is refused by name, not with torch's traceback
    from vla.train import TrainError

    with pytest.raises(TrainError, match="has other backbone sizes than this run's model .*size mismatch for lm.model"):
        train(load_config("recipe=cpu", "train.num_threads=1", "train.eval_trials_per_task=0", f"train.dataset={demo_dataset}",
                          f"train.output_dir={tmp_path / 'other'}", "train.max_steps=1", "train.resolution=56",
                          "model.tiny.intermediate_size=256", f"train.init_from={ckpt}"))


def test_recipe_inputs_are_checked(demo_dataset, tmp_path):
    from vla.dataset.format import DatasetError
    from vla.train import TrainError

    base = ["recipe=cpu", f"train.dataset={demo_dataset}", f"train.output_dir={tmp_path}", "train.max_steps=1"]
    with pytest.raises(TrainError, match="head.chunk_size=500 is longer than the dataset's shortest episode"):
        train(load_config(*base, "head.chunk_size=500"))
    with pytest.raises(DatasetError, match=r"camera\(s\) \['frontview'\] not in the dataset"):
        train(load_config(*base, "train.cameras=[agentview,frontview]"))


def test_render_settings_travel_from_the_dataset_to_evaluation(demo_dataset):
    from vla.eval import render_quality

    info = json.loads((demo_dataset / "meta" / "info.json").read_text())
    assert info["vla"] == {"render_quality": "lowpoly"}  # LiberoEnv's default, recorded by the writer

    class Trained:
        class spec:
            render_quality = "fast"

    assert render_quality("auto", Trained()) == "fast"
    assert render_quality("auto", object()) == "lowpoly"
    with pytest.warns(UserWarning, match="trained on images rendered with fast"):
        assert render_quality("lowpoly", Trained()) == "lowpoly"
    with pytest.raises(ValueError, match="eval.render_quality must be auto or one of"):
        render_quality("pretty", Trained())


def test_recipe_config_reaches_the_model():
    from omegaconf import OmegaConf

    from policies.backbone import build_backbone

    cfg = load_config("recipe=cpu")
    assert cfg.head.name == "parallel" and cfg.train.crop_scale == 0.9 and cfg.train.eval_layouts == "random"
    config = build_backbone(OmegaConf.to_container(cfg.model, resolve=True)).model.config
    assert config.vision_config.window_size == 112 and config.vision_config.depth == 4
    assert config.text_config.num_hidden_layers == 4


SHIPPED = sorted(p.name for p in (Path(__file__).resolve().parents[1] / "checkpoints").glob("tiny-*"))


@pytest.mark.parametrize("name", SHIPPED)
def test_each_shipped_checkpoint_loads_and_acts_in_one_batch(name):
    """checkpoints/tiny-<suite>: the CPU recipe's policy for that suite, in the normal checkpoint
    format (no optimiser state, compact vocabulary, under 25 MB), loads on a fresh machine and acts
    on a batch of its own suite's instructions; vla.eval takes it for that suite."""
    from policies.checkpoint import trained_tasks
    from vla.eval import load_policy

    path = Path(__file__).resolve().parents[1] / "checkpoints" / name
    assert sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) < 25 * 2**20
    policy, cameras, size, chunk = load_policy("checkpoint", str(path), None)
    assert cameras == ["agentview", "robot0_eye_in_hand"] and size == 128 and chunk == 8
    assert policy.spec.render_quality == "lowpoly" and not (path / "optimizer.safetensors").exists()
    instructions, suite = trained_tasks(path)
    assert name == f"tiny-{suite}" and len(instructions) == 10
    rng = np.random.default_rng(0)
    obs = {"images": {c: rng.integers(0, 255, (3, 128, 128, 3), dtype=np.uint8) for c in cameras},
           "state": rng.normal(size=(3, 8)).astype(np.float32), "instruction": instructions[:3],
           "grasps": np.array([0, 1, 2])}  # read by a train.grasp_count policy only
    actions = policy.act(obs)
    assert actions.shape == (3, 8, 7) and np.isfinite(actions).all()
    assert set(np.unique(actions[..., 6])) <= {-1.0, 1.0} and np.abs(actions[..., :6]).max() <= 1.0 + 1e-6


def test_the_readmes_load_policy_snippet_runs_and_drives_the_env():
    """The README's five lines, as written there, then the chunk executed in the real simulator."""
    import vla

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    code = re.search(r"<!-- snippet: load_policy .*?-->\n```python\n(.*?)```", readme, re.S).group(1)
    scope: dict = {}
    exec(compile(code, "README.md", "exec"), scope)
    actions, env = scope["actions"], scope["env"]
    assert actions.shape == (1, 8, 7) and actions.dtype == np.float32
    for a in actions[0]:
        obs, _, done, truncated, _ = env.step(a)
    assert env._steps == 8 and not (done or truncated)
    env.close()
    assert "tiny-libero_spatial" in vla.shipped_policies()
    with pytest.raises(FileNotFoundError, match=re.escape(f"not one of the shipped policies {vla.shipped_policies()}")):
        vla.load_policy("no-such-policy")


def test_the_shipped_policy_acts_as_recorded_before_the_processor_moved_out_of_the_model():
    """tests/data/shipped_policy_reference.npz: six real LIBERO-Spatial observations and the actions
    the shipped policy gave for them when the model still did its own preprocessing (2026-12-07).
    Through the processor now: the same actions (float rounding of other thread counts aside)."""
    from pathlib import Path

    import vla

    ref = np.load(Path(__file__).parent / "data" / "shipped_policy_reference.npz")
    obs = {"images": {c: ref[c] for c in ("agentview", "robot0_eye_in_hand")}, "state": ref["state"],
           "instruction": [str(t) for t in ref["instruction"]]}
    policy = vla.load_policy("tiny-libero_spatial")
    np.testing.assert_allclose(policy.act(obs), ref["actions"], atol=1e-6, rtol=0)
    described = json.loads((Path("checkpoints/tiny-libero_spatial") / "processor.json").read_text())
    assert [s["step"] for s in described["inputs"]] == ["images", "prompt", "state", "action_targets"]
