"""The processor around the model (policies/processor.py): what goes in and what comes out."""

import numpy as np
import pytest
from test_policy import random_obs, tiny_model

from action_tokenizer import ActionStats
from policies.processor import KEY_MAPS, map_keys


def gripper_stats():
    acts = np.random.default_rng(0).uniform(-1, 1, (200, 7)).astype(np.float32)
    acts[:, 6] = np.where(acts[:, 6] > 0, 1.0, -1.0)
    mask = np.ones(7, bool)
    mask[6] = False  # the gripper is not normalised (OpenVLA)
    return acts, ActionStats.from_actions(acts, mask=mask)


@pytest.mark.parametrize("binarize", [True, False])
def test_outputs_are_unnormalised_and_the_gripper_snapped(binarize):
    acts, stats = gripper_stats()
    model = tiny_model(head="parallel", output="l1", chunk_size=2, binarize_gripper=binarize)
    p = model.processor
    p.action_stats = stats
    normalized = np.clip(stats.normalize(acts[:4]), -1, 1).reshape(2, 2, 7)
    normalized[..., 6] = [[0.3, -0.2], [0.9, -0.7]]  # a regressed gripper is anywhere in -1..1
    out = p.decode({"normalized": normalized.copy()})
    np.testing.assert_allclose(out[..., :6], stats.unnormalize(normalized)[..., :6], rtol=0, atol=1e-6)
    expected = [[1, -1], [1, -1]] if binarize else normalized[..., 6]
    np.testing.assert_allclose(out[..., 6], expected, atol=1e-6)
    assert out.dtype == np.float32


def test_training_targets_round_trip_through_the_processor():
    """Actions -> normalised targets and action token ids -> back: the L1 path within float
    rounding, the token path within one bin."""
    obs = random_obs()
    model = tiny_model(head="parallel", output="l1", chunk_size=2)
    p = model.processor
    acts = np.random.default_rng(1).uniform(-0.5, 0.5, (2, 2, 7)).astype(np.float32)
    batch = p.encode(obs["images"], obs["state"], obs["instruction"], actions=acts, augment=True)
    back = p.decode({"normalized": batch["target_norm"].numpy().reshape(2, 2, 7)})
    unsnapped = ~np.asarray(p.action_stats.mask, bool)
    np.testing.assert_allclose(back[..., ~unsnapped], acts[..., ~unsnapped], atol=1e-5)
    ids = batch["target_ids"].numpy().reshape(2, 2, 7)
    width = (p.action_stats.q99 - p.action_stats.q01) / 255 * 1.01
    assert np.all(np.abs(p.action_tokenizer.decode(ids) - acts) <= width)


def test_openpi_observations_map_to_ours():
    rng = np.random.default_rng(0)
    img, wrist = (rng.integers(0, 255, (8, 8, 3), dtype=np.uint8) for _ in range(2))
    msg = {"observation/image": img, "observation/wrist_image": wrist, "observation/state": np.zeros(8), "prompt": "go"}
    obs = map_keys(msg, KEY_MAPS["openpi_libero"])
    np.testing.assert_array_equal(obs["images"]["agentview"], img[:, ::-1])  # openpi's images are ours mirrored
    np.testing.assert_array_equal(obs["images"]["robot0_eye_in_hand"], wrist[:, ::-1])
    assert obs["instruction"] == "go"
    with pytest.raises(ValueError, match=r"observation lacks \['prompt'\]"):
        map_keys({k: v for k, v in msg.items() if k != "prompt"}, KEY_MAPS["openpi_libero"])
