"""The policy server and client: wire format, auth, bad input, batching across clients, reconnect."""

import threading
import time
import urllib.error
import urllib.request

import msgpack
import numpy as np
import pytest
from test_policy import tiny_model

from policies import RandomPolicy, VLAPolicy
from vla.deploy.client import PolicyClient, ServerError
from vla.deploy.server import PolicyServer
from vla.deploy.wire import NDARRAY, WireError, pack, unpack

CAMERAS = ["agentview", "robot0_eye_in_hand"]


def observation(res=64, seed=0, state=None):
    rng = np.random.default_rng(seed)
    return {"images": {c: rng.integers(0, 255, (res, res, 3), dtype=np.uint8) for c in CAMERAS},
            "state": rng.normal(size=8).astype(np.float32) if state is None else np.asarray(state, np.float32),
            "instruction": "pick up the black bowl and place it on the plate"}


class EchoPolicy:
    """Action row = the state's first value, so a client can tell its own answer; records batch
    sizes and takes 30 ms per call, so that concurrent requests pile up."""

    def __init__(self):
        self.batches = []

    def reset(self):
        pass

    def act(self, obs):
        self.batches.append(len(obs["instruction"]))
        time.sleep(0.03)
        return np.repeat(np.asarray(obs["state"])[:, None, :1], 7, axis=2).repeat(2, axis=1).astype(np.float32)


@pytest.fixture
def server():
    servers = []

    def start(policy=None, **kw):
        s = PolicyServer(policy or RandomPolicy(chunk_size=8), CAMERAS, 64, 8, **kw).start_in_thread()
        servers.append(s)
        return s, f"ws://127.0.0.1:{s.port}"

    yield start
    for s in servers:
        s.stop()


def test_wire_round_trips_arrays_and_refuses_anything_else():
    msg = {"a": np.arange(12, dtype=np.float32).reshape(3, 4), "b": np.zeros((2, 2, 3), np.uint8), "s": "x",
           "n": [1, 2.5, None], "m": np.array([True, False]), "i": np.int64(7)}
    back = unpack(pack(msg))
    for k in ("a", "b", "m"):
        assert back[k].dtype == msg[k].dtype and back[k].shape == msg[k].shape
        np.testing.assert_array_equal(back[k], msg[k])
    assert back["s"] == "x" and back["n"] == [1, 2.5, None] and back["i"] == 7
    with pytest.raises(WireError, match="dtype object"):
        pack({"x": np.array([object()], dtype=object)})
    with pytest.raises(WireError, match="type set"):
        pack({"x": {1, 2}})
    evil = msgpack.packb(msgpack.ExtType(NDARRAY, msgpack.packb(["|O", [1]]) + b"\0" * 8))
    with pytest.raises(WireError, match="not allowed"):
        unpack(evil)
    short = msgpack.packb(msgpack.ExtType(NDARRAY, msgpack.packb(["<f4", [4]]) + b"\0" * 8))
    with pytest.raises(WireError, match="does not match"):
        unpack(short)
    with pytest.raises(WireError, match="not a valid msgpack"):
        unpack(b"\xc1garbage")


def test_served_actions_equal_the_policy_in_process(server):
    policy = VLAPolicy(tiny_model(head="parallel", chunk_size=4))
    s, url = server(policy)
    obs = observation()
    with PolicyClient(url) as client:
        assert client.metadata["cameras"] == CAMERAS and client.metadata["image_size"] == [64, 64]
        served = client.act(obs)
        assert set(client.last_timing) == {"queue_ms", "infer_ms", "total_ms", "batch_size"}
        assert client.last_timing["infer_ms"] <= client.last_timing["total_ms"]
    direct = policy.act({"images": {c: v[None] for c, v in obs["images"].items()}, "state": obs["state"][None],
                         "instruction": [obs["instruction"]]})[0]
    assert served.shape == (4, 7) and served.dtype == np.float32
    np.testing.assert_array_equal(served, direct)


def test_api_key_is_required_and_healthz_is_open(server):
    s, url = server(api_key="s3cret")
    for key in (None, "wrong"):
        with pytest.raises(ServerError, match="401"):
            PolicyClient(url, api_key=key)
    with PolicyClient(url, api_key="s3cret") as client:
        assert client.act(observation()).shape == (8, 7)
    with urllib.request.urlopen(f"http://127.0.0.1:{s.port}/healthz", timeout=5) as r:
        assert r.status == 200
    with pytest.raises(urllib.error.HTTPError, match="401"):
        urllib.request.urlopen(f"http://127.0.0.1:{s.port}/", timeout=5)


def test_bad_messages_get_an_error_frame_and_the_connection_stays_usable(server):
    s, url = server(max_message_bytes=1 << 20)
    good = observation()
    bad = {
        "no instruction": ({k: v for k, v in good.items() if k != "instruction"}, "lacks \\['instruction'\\]"),
        "missing camera": (dict(good, images={"agentview": good["images"]["agentview"]}), "robot0_eye_in_hand"),
        "float image": (dict(good, images={c: v.astype(np.float32) for c, v in good["images"].items()}), "uint8"),
        "short state": (dict(good, state=np.zeros(3, np.float32)), "state must be 8 numbers"),
        "negative grasps": (dict(good, grasps=-1), "grasps must be a count"),
        "fractional grasps": (dict(good, grasps=1.5), "grasps must be a count"),
        "oversize": (dict(good, padding=np.zeros(2 << 20, np.uint8)), "exceeds the server's limit"),
    }
    with PolicyClient(url) as client:
        for name, (msg, error) in bad.items():
            with pytest.raises(ServerError, match=error):
                client.request(msg)
        client._ws.send(b"\xc1\xc1 not msgpack")
        assert "not a valid msgpack" in unpack(client._ws.recv(timeout=5))["error"]
        client._ws.send(pack([1, 2, 3]))
        assert "must be a map" in unpack(client._ws.recv(timeout=5))["error"]
        client._ws.send("a text frame")
        assert "binary" in unpack(client._ws.recv(timeout=5))["error"]
        assert client.act(good).shape == (8, 7)  # same connection, still served


def test_concurrent_clients_share_policy_calls_and_get_their_own_answers(server):
    policy = EchoPolicy()
    s, url = server(policy, max_batch=8, batch_wait_ms=20)
    clients = [PolicyClient(url) for _ in range(6)]
    answers, barrier = {}, threading.Barrier(len(clients))

    def ask(i, client):
        barrier.wait()
        for k in range(5):
            answers[i, k] = client.act(observation(state=[i * 10 + k] + [0] * 7))[0, 0]

    threads = [threading.Thread(target=ask, args=(i, c)) for i, c in enumerate(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    for c in clients:
        c.close()
    assert answers == {(i, k): i * 10 + k for i in range(6) for k in range(5)}
    assert sum(policy.batches) == 30 and max(policy.batches) > 1
    assert len(policy.batches) < 30  # some requests shared a call


def test_requests_in_flight_together_each_get_their_own_answer(server):
    """The bridge's real-time requester with 3 in flight: one connection each, answers in order."""
    from vla.deploy.chunks import ThreadedRequests

    s, url = server(EchoPolicy(), max_batch=8, batch_wait_ms=5)
    requests = ThreadedRequests(PolicyClient(url), max_in_flight=3)
    for i in range(3):
        requests.submit(observation(state=[i + 1] + [0] * 7), asked_at=i, step=i)
    assert requests.in_flight == 3 and len({id(c) for c in requests.clients}) == 3
    got, deadline = [], time.monotonic() + 10
    while len(got) < 3 and time.monotonic() < deadline:
        got += requests.poll(0)
        time.sleep(0.005)
    requests.close()
    assert sorted((asked_at, float(chunk[0, 0])) for chunk, asked_at in got) == [(0, 1.0), (1, 2.0), (2, 3.0)]
    assert requests.in_flight == 0


def test_client_reconnects_after_a_server_restart(server):
    s, url = server()
    client = PolicyClient(url, retry_wait_s=0.1)
    assert client.act(observation()).shape == (8, 7)
    s.stop()
    s2 = PolicyServer(RandomPolicy(chunk_size=8), CAMERAS, 64, 8).start_in_thread(port=s.port)
    try:
        assert client.act(observation()).shape == (8, 7)
    finally:
        client.close()
        s2.stop()


@pytest.mark.parametrize("args, error", [
    (["vla.serve", "policy=checkpoint"], "needs a checkpoint folder"),
    (["vla.serve", "policy=checkpoint", "checkpoint=/nonexistent/ckpt"], "/nonexistent/ckpt"),
    (["vla.serve", "policy=magic"], "policy must be checkpoint, scripted or random, not 'magic'"),
    (["vla.serve", "policy=random", "obs_map=openpi_aloha"], "obs_map must be one of ['openpi_libero'] or null, not 'openpi_aloha'"),
    (["vla.ros_bridge", "config=/nonexistent/robot.yaml"], "cannot read config=/nonexistent/robot.yaml"),
    (["vla.ros_bridge"], "instruction= is required"),
])
def test_entry_points_name_the_bad_setting(args, error):
    import subprocess
    import sys

    r = subprocess.run([sys.executable, "-m", *args], capture_output=True, text=True, timeout=120)
    assert r.returncode != 0 and error in r.stderr, r.stderr[-2000:]
    assert "Traceback" not in r.stderr


def test_bridge_stops_when_the_server_is_too_slow_and_resumes_after(server):
    from vla.deploy.bridge import Bridge, SafetyLimits

    class SlowPolicy(EchoPolicy):
        delay = 0.5

        def act(self, obs):
            time.sleep(self.delay)
            return np.zeros((len(obs["instruction"]), 2, 7), np.float32) + 0.1

    policy = SlowPolicy()
    s, url = server(policy)
    sent = []
    bridge = Bridge(PolicyClient(url, timeout_s=0.2), SafetyLimits(), CAMERAS, "pick", sent.append, enabled=True)
    obs = observation()
    for cam in CAMERAS:
        bridge.update(cam, obs["images"][cam])
    bridge.update("pose", ((0.5, 0.0, 0.3), (0, 0, 0, 1)))
    bridge.update("gripper", np.zeros(2))

    def tick_until(done, limit_s: float) -> float:
        t0 = time.perf_counter()
        while not done() and time.perf_counter() - t0 < limit_s:
            for name in CAMERAS + ["pose", "gripper"]:  # fresh observation parts
                bridge.update(name, bridge.parts[name][0])
            bridge.tick()
            time.sleep(0.02)
        return time.perf_counter() - t0

    bridge.tick()  # asks, and holds still while the answer is on its way (the tick does not block)
    assert sent[-1].is_stop and "waiting for the policy server" in sent[-1].notes[0]
    assert tick_until(lambda: bridge.stats["server_errors"], 2.0) < 0.4  # the client's 0.2 s timeout
    assert sent[-1].is_stop and "no answer" in sent[-1].notes[0]
    policy.delay = 0.0
    time.sleep(0.5)  # the slow call still holds the policy
    tick_until(lambda: not sent[-1].is_stop, 2.0)
    assert not sent[-1].is_stop and sent[-1].translation[0] == pytest.approx(0.005)
    bridge.requests.close()


def openpi_observation(obs: dict) -> dict:
    """`obs` as openpi's LIBERO example client sends it: flat keys, images turned 180 degrees from
    the raw render (ours are only flipped upside down, so theirs are ours mirrored), float64 state."""
    return {"observation/image": np.ascontiguousarray(obs["images"]["agentview"][:, ::-1]),
            "observation/wrist_image": np.ascontiguousarray(obs["images"]["robot0_eye_in_hand"][:, ::-1]),
            "observation/state": obs["state"].astype(np.float64), "prompt": obs["instruction"]}


def test_openpi_client_gets_the_actions_our_client_gets(server):
    """The real openpi-client (PyPI) against our server with obs_map=openpi_libero: metadata, and for
    the same observation the same actions our own client gets; our client is still answered in our
    encoding on the same server; openpi's "Api-Key" header passes the API key check."""
    from openpi_client.websocket_client_policy import WebsocketClientPolicy

    s, url = server(VLAPolicy(tiny_model(head="parallel", chunk_size=4)), obs_map="openpi_libero", api_key="k")
    obs = observation(seed=3)
    with PolicyClient(url, api_key="k") as client:
        ours = client.act(obs)
    theirs = WebsocketClientPolicy("127.0.0.1", s.port, api_key="k")
    assert theirs.get_server_metadata()["cameras"] == CAMERAS
    answer = theirs.infer(openpi_observation(obs))
    assert answer["actions"].dtype == np.float32 and answer["actions"].shape == (4, 7)
    np.testing.assert_array_equal(answer["actions"], ours)
    other = theirs.infer(openpi_observation(observation(seed=4)))["actions"]
    assert not np.array_equal(other, ours)  # the answer follows the observation


def test_openpi_client_gets_our_clean_errors(server):
    """Malformed openpi-style frames get the messages ours get, as the text frames openpi's client
    raises on; its connection stays usable; refused dtypes never reach numpy."""
    from openpi_client.websocket_client_policy import WebsocketClientPolicy

    s, _ = server(obs_map="openpi_libero")
    client = WebsocketClientPolicy("127.0.0.1", s.port)
    good = openpi_observation(observation())
    bad = {
        "no prompt": ({k: v for k, v in good.items() if k != "prompt"}, "lacks \\['prompt'\\]"),
        "float image": (dict(good, **{"observation/image": good["observation/image"].astype(np.float32)}), "uint8"),
        "short state": (dict(good, **{"observation/state": np.zeros(3)}), "state must be 8 numbers"),
    }
    for name, (msg, error) in bad.items():
        with pytest.raises(RuntimeError, match=error):
            client.infer(msg)
    forged = msgpack.packb({b"__ndarray__": True, b"data": b"x" * 8, b"dtype": "|O", b"shape": [1]})
    client._ws.send(forged)
    assert "not allowed" in client._ws.recv(timeout=5)
    client._ws.send(msgpack.packb({b"__ndarray__": True, b"data": b"x" * 7, b"dtype": "<f4", b"shape": [2]}))
    assert "does not match" in client._ws.recv(timeout=5)
    assert client.infer(good)["actions"].shape == (8, 7)  # same connection, still served
