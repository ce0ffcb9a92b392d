import json

import numpy as np
import pytest

from action_tokenizer import ActionStats, ActionTokenizer

VOCAB = 151643  # Qwen2.5's text vocabulary size
BIN_WIDTH = 2 / 255  # edges = linspace(-1, 1, 256)


def make_stats(seed=0, n=5000, gripper=True):
    rng = np.random.default_rng(seed)
    acts = rng.normal(0, 0.3, size=(n, 7)).astype(np.float32)
    acts[:, 6] = rng.choice([-1.0, 1.0], size=n)
    mask = [True] * 6 + [not gripper]
    return ActionStats.from_actions(acts, mask=mask), acts


def openvla_reference(actions, q01, q99, mask, vocab_size):
    """OpenVLA's pipeline written out one scalar at a time: BOUNDS_Q99 normalisation,
    np.digitize over linspace(-1, 1, 256), token = vocab_size - bin, and back."""
    edges = np.linspace(-1, 1, 256)
    centers = (edges[:-1] + edges[1:]) / 2.0
    ids = np.zeros(actions.shape, np.int64)
    decoded = np.zeros(actions.shape, np.float64)
    for n in range(actions.shape[0]):
        for d in range(actions.shape[1]):
            x = np.float32(actions[n, d])
            if mask[d]:
                x = np.clip(2 * (x - q01[d]) / (q99[d] - q01[d] + np.float32(1e-8)) - 1, -1, 1)
            x = np.clip(x, -1, 1)
            ids[n, d] = vocab_size - np.digitize(x, edges)
            i = np.clip(vocab_size - ids[n, d] - 1, 0, 254)
            c = centers[i]
            decoded[n, d] = 0.5 * (c + 1) * (q99[d] - q01[d]) + q01[d] if mask[d] else c
    return ids, decoded


def test_matches_openvla_reference_exactly():
    stats, acts = make_stats()
    tok = ActionTokenizer(stats, vocab_size=VOCAB)
    sample = acts[:300]
    ref_ids, ref_dec = openvla_reference(sample, stats.q01, stats.q99, stats.mask, VOCAB)
    np.testing.assert_array_equal(tok.encode(sample), ref_ids)
    np.testing.assert_allclose(tok.decode(ref_ids), ref_dec, rtol=0, atol=1e-6)


def test_hand_computed_ids():
    stats = ActionStats(q01=[-2.0], q99=[2.0], mean=[0.0], std=[1.0], min=[-3.0], max=[3.0], mask=[True])
    tok = ActionTokenizer(stats, vocab_size=1000)
    # -2 -> -1 -> bin 1 -> id 999;  +2 -> +1 -> bin 256 -> id 744;  0 -> 0.0 -> bin 128 -> id 872
    # beyond q01/q99 clips to the end bins; 1.0 -> 0.5 -> digitize = 192 -> id 808
    ids = tok.encode(np.array([[-2.0], [2.0], [0.0], [-5.0], [9.0], [1.0]]))
    assert ids[:, 0].tolist() == [999, 744, 872, 999, 744, 808]
    dec = tok.decode(ids)[:, 0]
    edges = np.linspace(-1, 1, 256)
    centers = (edges[:-1] + edges[1:]) / 2
    assert dec[0] == pytest.approx(2 * centers[0], abs=1e-6)
    assert dec[1] == pytest.approx(2 * centers[254], abs=1e-6)  # top bin shares the last centre
    assert dec[2] == pytest.approx(2 * centers[127], abs=1e-6)


def test_round_trip_within_half_bin_in_normalized_space():
    stats, _ = make_stats(seed=1)
    tok = ActionTokenizer(stats, vocab_size=VOCAB)
    rng = np.random.default_rng(2)
    acts = rng.uniform(stats.q01, stats.q99, size=(20000, 7)).astype(np.float32)
    err = np.abs(stats.normalize(tok.decode(tok.encode(acts))) - stats.normalize(acts))
    assert err[:, stats.mask].max() <= BIN_WIDTH / 2 + 1e-6
    # interior bins are exact to half a bin; the top bin is one centre short of +1 (OpenVLA's quirk)
    assert err.max() <= BIN_WIDTH + 1e-6


def test_mask_passes_gripper_through_unnormalized():
    stats, _ = make_stats(gripper=True)
    assert stats.mask.tolist() == [True] * 6 + [False]
    acts = np.zeros((3, 7), np.float32)
    acts[:, 6] = [-1.0, 1.0, 0.25]
    norm = stats.normalize(acts)
    np.testing.assert_array_equal(norm[:, 6], acts[:, 6])
    tok = ActionTokenizer(stats, vocab_size=VOCAB)
    dec = tok.decode(tok.encode(acts))
    assert dec[0, 6] < -0.99 and dec[1, 6] > 0.99 and abs(dec[2, 6] - 0.25) <= BIN_WIDTH / 2


def test_constant_dimension_maps_to_zero():
    acts = np.zeros((100, 2), np.float32)
    acts[:, 0] = np.linspace(-1, 1, 100)
    acts[:, 1] = 0.5  # q01 == q99
    stats = ActionStats.from_actions(acts)
    norm = stats.normalize(np.array([[0.3, 0.5], [0.3, 0.9]]))
    assert norm[:, 1].tolist() == [0.0, 0.0]


def test_json_round_trip_exact(tmp_path):
    stats, _ = make_stats(seed=3)
    again = ActionStats.from_json(stats.to_json())
    assert again == stats
    path = tmp_path / "action_stats.json"
    stats.to_json(path)
    assert ActionStats.from_json(path) == stats
    assert json.loads(path.read_text())["mask"][-1] is False


@pytest.mark.parametrize("shape", [(7,), (4, 7), (2, 8, 7), (3, 2, 5, 7)])
def test_chunked_shapes(shape):
    stats, _ = make_stats()
    tok = ActionTokenizer(stats, vocab_size=VOCAB)
    acts = np.random.default_rng(0).normal(0, 0.2, size=shape).astype(np.float32)
    ids = tok.encode(acts)
    assert ids.shape == shape and ids.dtype == np.int64
    flat = tok.encode(acts.reshape(-1, 7)).reshape(shape)
    np.testing.assert_array_equal(ids, flat)
    dec = tok.decode(ids)
    assert dec.shape == shape and dec.dtype == np.float32


def test_added_mode_ids_follow_the_vocabulary():
    stats, acts = make_stats()
    tok = ActionTokenizer(stats, mode="added", vocab_size=VOCAB)
    assert tok.token_ids[0] == VOCAB and tok.token_ids[-1] == VOCAB + 255
    assert tok.special_tokens[0] == "<|action_0|>" and len(tok.special_tokens) == 256
    ovla = ActionTokenizer(stats, mode="openvla", vocab_size=VOCAB)
    ids = tok.encode(acts[:100])
    assert np.isin(ids, tok.token_ids).all()
    # same bins as "openvla" mode, only the id mapping differs
    np.testing.assert_array_equal(ids - VOCAB, (VOCAB - ovla.encode(acts[:100])) - 1)
    np.testing.assert_array_equal(tok.decode(ids), ovla.decode(ovla.encode(acts[:100])))


def test_openvla_token_ids_are_last_256():
    stats, acts = make_stats()
    tok = ActionTokenizer(stats, vocab_size=32000)
    assert tok.token_ids.tolist() == list(range(32000 - 256, 32000))
    assert np.isin(tok.encode(acts), tok.token_ids).all()


@pytest.mark.parametrize(
    "bad, match",
    [
        (np.full((2, 7), np.nan), "NaN or inf"),
        (np.array([[0, 0, 0, np.inf, 0, 0, 0]]), "NaN or inf"),
        (np.zeros((2, 6)), "last dimension is 6, expected 7"),
        (np.array(1.0), "scalar"),
        (np.array([["a"] * 7]), "real numbers"),
    ],
)
def test_bad_actions_give_clear_errors(bad, match):
    stats, _ = make_stats()
    tok = ActionTokenizer(stats, vocab_size=VOCAB)
    with pytest.raises(ValueError, match=match):
        tok.encode(bad)


@pytest.mark.parametrize("mode", ["openvla", "added"])
def test_decode_rejects_non_action_ids(mode):
    stats, _ = make_stats()
    tok = ActionTokenizer(stats, mode=mode, vocab_size=VOCAB)
    good = np.tile(tok.token_ids[:7], (2, 1))
    tok.decode(good)
    for bad_id in (tok.token_ids[0] - 1, tok.token_ids[-1] + 1, 0):
        ids = good.copy()
        ids[1, 3] = bad_id
        with pytest.raises(ValueError, match=f"token id {bad_id} is not an action token"):
            tok.decode(ids)
    with pytest.raises(ValueError, match="shape"):
        tok.decode(good[:, :5])
    with pytest.raises(ValueError, match="integers"):
        tok.decode(good.astype(float))


def test_bad_stats_and_modes():
    with pytest.raises(ValueError, match="expected 3"):
        ActionStats(q01=[0, 0, 0], q99=[1, 1], mean=[0, 0, 0], std=[1, 1, 1], min=[0, 0, 0], max=[1, 1, 1], mask=[1, 1, 1])
    with pytest.raises(ValueError, match="missing keys"):
        ActionStats.from_dict({"q01": [0.0]})
    with pytest.raises(ValueError, match="not found"):
        ActionStats.from_json("/nonexistent/stats.json")
    stats, _ = make_stats()
    with pytest.raises(ValueError, match="unknown action token mode 'bins'"):
        ActionTokenizer(stats, mode="bins")


def test_digitize_matches_numpy_at_and_between_edges():
    stats, _ = make_stats()
    tok = ActionTokenizer(stats, vocab_size=VOCAB)
    edges = tok.edges
    x = np.concatenate([
        edges, np.nextafter(edges, -2), np.nextafter(edges, 2),
        edges.astype(np.float32), np.random.default_rng(0).uniform(-1, 1, 200_000),
    ])
    x = np.clip(x, -1, 1)
    for arr in (x, x.astype(np.float32)):
        np.testing.assert_array_equal(tok._digitize(arr), np.digitize(arr, edges))
