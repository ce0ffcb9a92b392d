"""Robot-side chunk execution (vla.deploy.chunks) through the bridge: alignment of a delayed
answer, blending at the seams, a late chunk, a lost server, the synchronous mode."""

import logging

import numpy as np
import pytest

from vla.deploy.bridge import Bridge, SafetyLimits
from vla.deploy.chunks import ChunkQueue, ChunkSettings, SimulatedLatency

CAMERAS = ["agentview"]
H = 8


class StepClient:
    """Answers with a chunk whose action i is labelled (in x) with the step it was planned for:
    the observation's count of executed actions + i (+ 1, so no label reads as a stop), so an
    executed label shows alignment."""

    def __init__(self, bridge_ref):
        self.bridge_ref, self.calls = bridge_ref, 0

    def act(self, obs):
        self.calls += 1
        start = self.bridge_ref[0].chunks.executed
        return np.array([[(start + i + 1) / 100, 0, 0, 0, 0, 0, -1] for i in range(H)], np.float32)


def make_bridge(settings: ChunkSettings, delay, client_cls=StepClient):
    ref, sent = [], []
    client = client_cls(ref)
    limits = SafetyLimits(workspace_min=(-10, -10, -10), workspace_max=(10, 10, 10), max_translation_m=1.0,
                          translation_m_per_unit=1.0)
    bridge = Bridge(client, limits, CAMERAS, "pick", sent.append, enabled=True, clock=lambda: 0.0,
                    chunks=settings, requests=SimulatedLatency(client, delay))
    ref.append(bridge)
    for name, value in (("agentview", np.zeros((8, 8, 3), np.uint8)), ("pose", ((0, 0, 0), (0, 0, 0, 1))),
                        ("gripper", np.zeros(2))):
        bridge.update(name, value, stamp=0.0)
    return bridge, sent


@pytest.mark.parametrize("blend", ["replace", "crossfade", "ensemble"])
@pytest.mark.parametrize("delay", [0, 2, 4])
def test_async_answers_are_aligned_to_what_was_executed_during_their_flight(blend, delay):
    bridge, sent = make_bridge(ChunkSettings(mode="async", threshold=4, blend=blend), delay)
    for _ in range(60):
        bridge.tick()
    moving = [c for c in sent if not c.is_stop]
    # the arm only waits for the very first answer, then never stops
    assert len(sent) - len(moving) == delay and all(not c.is_stop for c in sent[delay:])
    # the k-th executed action is the one planned for step k: past actions were dropped, and the
    # next action continues the executed one (blending identical plans changes nothing)
    np.testing.assert_allclose([c.translation[0] for c in moving], np.arange(1, len(moving) + 1) / 100, atol=1e-9)
    assert bridge.stats["past_dropped"] == delay * (bridge.stats["answers"] - 1)  # all but the first answer


class PlannedAtClient(StepClient):
    """StepClient's labels, and in y the count of executed actions its observation saw."""

    def act(self, obs):
        chunk = super().act(obs)
        chunk[:, 1] = self.bridge_ref[0].chunks.executed / 1000
        return chunk


@pytest.mark.parametrize("delay", [2, 4])
def test_requests_in_flight_together_plan_each_action_from_the_freshest_observation(delay):
    staleness = {}
    for in_flight in (1, delay):
        bridge, sent = make_bridge(ChunkSettings(mode="async", threshold=H - 1, blend="replace", max_in_flight=in_flight),
                                   delay, client_cls=PlannedAtClient)
        for _ in range(60):
            bridge.tick()
        moving = [c for c in sent if not c.is_stop]
        assert len(sent) - len(moving) == delay  # only the first answer is waited for
        np.testing.assert_allclose([c.translation[0] for c in moving], np.arange(1, len(moving) + 1) / 100, atol=1e-9)
        # executed action k (from 0) was planned when the observation had seen `planned` actions
        ages = {k - round(c.translation[1] * 1000) for k, c in enumerate(moving) if k >= 2 * H}
        staleness[in_flight] = ages
        assert bridge.stats["queries"] <= 60 and bridge.stats["late"] == 0
    assert staleness[delay] == {delay}  # each action is the delay-th of a plan made delay steps before
    assert max(staleness[1]) > delay  # one request at a time: older plans in between


def test_an_answer_older_than_one_taken_in_is_dropped():
    q = ChunkQueue(ChunkSettings(mode="async", blend="replace"))
    q.arrive(np.full((H, 7), 2.0), asked_at=5)
    assert q.arrive(np.full((H, 7), 1.0), asked_at=3) == H  # jitter let the older one arrive later
    assert all(a[0] == 2.0 for a in q.queue)


def test_blending_stays_between_the_chunks_and_softens_the_seam():
    rng = np.random.default_rng(0)
    for blend in ("crossfade", "ensemble"):
        q = ChunkQueue(ChunkSettings(mode="async", blend=blend, blend_steps=3))
        old, new = rng.uniform(-1, 1, (6, 7)), rng.uniform(-1, 1, (8, 7))
        q.queue = [a for a in old]
        q.arrive(new, asked_at=0)
        for i, a in enumerate(q.queue[:6]):
            lo, hi = np.minimum(old[i], new[i]), np.maximum(old[i], new[i])
            assert np.all(a[:6] >= lo[:6] - 1e-12) and np.all(a[:6] <= hi[:6] + 1e-12)
            assert a[6] in (old[i][6], new[i][6])  # the gripper is never half-way
    # a plan that changed its mind: the crossfade spreads the change over the blend steps
    jumps = {}
    for blend in ("replace", "crossfade"):
        q = ChunkQueue(ChunkSettings(mode="async", blend=blend, blend_steps=3))
        q.queue = [np.zeros(7) for _ in range(4)]
        q.arrive(np.ones((8, 7)), asked_at=0)
        path = [np.zeros(7)] + q.queue
        jumps[blend] = max(np.abs(b[:6] - a[:6]).max() for a, b in zip(path, path[1:]))
    assert jumps["replace"] == 1.0 and jumps["crossfade"] <= 0.25 + 1e-12


def test_a_late_chunk_holds_the_arm_still_and_says_so(caplog):
    bridge, sent = make_bridge(ChunkSettings(mode="async", threshold=2), delay=5)
    with caplog.at_level(logging.WARNING, logger="vla.ros_bridge"):
        for _ in range(30):
            bridge.tick()
    late = [c for c in sent if c.is_stop and c.notes and "late" in c.notes[0]]
    assert late and bridge.stats["late"] >= 1 and all(c.gripper == -1 for c in late)
    assert any("next chunk is late" in r.message for r in caplog.records)


def test_a_lost_server_mid_chunk_stops_the_arm_at_once_and_drops_the_queue():
    class Flaky(StepClient):
        def act(self, obs):
            if self.calls == 1:
                self.calls += 1
                raise ConnectionError("connection closed")
            return super().act(obs)

    bridge, sent = make_bridge(ChunkSettings(mode="async", threshold=4), 0, client_cls=Flaky)
    for _ in range(5):  # the first chunk's actions 0..4; the refill at 4 left fails
        bridge.tick()
    assert sent[-1].is_stop and "connection closed" in sent[-1].notes[0]
    assert bridge.chunks.queue == [] and bridge.stats["server_errors"] == 1
    bridge.tick()  # asks again, from the newest observation
    assert not sent[-1].is_stop


def test_sync_mode_holds_still_for_every_answer_and_drops_nothing():
    bridge, sent = make_bridge(ChunkSettings(mode="sync"), delay=3)
    for _ in range(33):
        bridge.tick()
    moving = [c for c in sent if not c.is_stop]
    assert len(moving) == 24 and bridge.stats["queries"] == 3  # 3 whole chunks, each after 3 steps of waiting
    assert all("waiting" in c.notes[0] for c in sent if c.is_stop) and bridge.stats["past_dropped"] == 0
    np.testing.assert_allclose([c.translation[0] for c in moving], np.arange(1, 25) / 100, atol=1e-9)


def test_bad_chunk_settings_are_named():
    with pytest.raises(ValueError, match="chunks.mode must be one of"):
        ChunkSettings(mode="fast")
    with pytest.raises(ValueError, match="chunks.blend must be one of"):
        ChunkSettings(blend="average")
    with pytest.raises(ValueError, match="execute_steps"):
        ChunkSettings(execute_steps=0)
    with pytest.raises(ValueError, match="max_in_flight"):
        ChunkSettings(max_in_flight=0)


@pytest.mark.parametrize("mode,in_flight", [("sync", 1), ("async", 1), ("async", 3)])
def test_the_bridge_predicts_which_ticks_send_a_request(mode, in_flight):
    """asks_next_tick (a simulation renders the cameras only then) agrees with what each tick does,
    under jittered delays from 0 to 5 steps."""
    rng = np.random.default_rng(3)
    bridge, _ = make_bridge(ChunkSettings(mode=mode, threshold=4, execute_steps=6, max_in_flight=in_flight),
                            lambda i: int(rng.integers(0, 6)))
    asked = []
    for _ in range(200):
        predicted, before = bridge.asks_next_tick(), bridge.stats["queries"]
        bridge.tick()
        asked.append(bridge.stats["queries"] > before)
        assert predicted == asked[-1], f"tick {len(asked) - 1}"
    assert 20 < sum(asked) < 150  # requests come and go: the prediction was tested both ways


@pytest.mark.slow
def test_rendering_only_for_requests_leaves_a_real_episode_unchanged():
    """The shipped policy through the real server on a LIBERO episode, async with jittered delays:
    the cameras rendered only when a request reads them give the same episode as rendering every step."""
    from pathlib import Path

    from envs.libero_env import LiberoEnv
    from vla.deploy.chunks import delay_steps
    from vla.deploy.client import PolicyClient
    from vla.deploy.latency import run_episode, sim_limits
    from vla.deploy.server import PolicyServer
    from vla.eval import load_policy, render_quality

    ckpt = str(Path(__file__).resolve().parents[1] / "checkpoints/tiny-libero_spatial")
    policy, cameras, resolution, chunk = load_policy("checkpoint", ckpt, None)
    server = PolicyServer(policy, cameras, resolution, chunk).start_in_thread()
    client = PolicyClient(f"ws://127.0.0.1:{server.port}", timeout_s=30)
    env = LiberoEnv("libero_spatial", 1, cameras=cameras, resolution=resolution,
                    render_quality=render_quality("auto", policy), max_steps=60)
    renders = []
    step = env.step
    env.step = lambda a, render=True: (renders.append(render), step(a, render=render))[1]
    try:
        runs = [run_episode(env, client, 2, ChunkSettings(mode="async"), delay_steps(150, 60, 20.0, 5), sim_limits(),
                            render_all=render_all) for render_all in (True, False)]
    finally:
        env.close()
        client.close()
        server.stop()
    assert runs[0] == runs[1] and runs[0]["answers"] >= 5
    assert sum(renders[60:]) <= 60 / 2, "the lazy run rendered most steps"
