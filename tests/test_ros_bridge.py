"""Deployment over ROS with a real ROS 1 master (Debian's rosmaster) on loopback: safety limits,
the watchdog, the enable service, and the whole loop sim arm -> ROS -> bridge -> server ->
policy -> bridge -> ROS -> sim arm with the scripted policy."""

import json
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from policies import RandomPolicy
from vla.deploy.bridge import SafetyLimits
from vla.deploy.ros_io import image_from_raw, rosbridge_image, rosbridge_stamp, twist_stamped_dict
from vla.deploy.rosmaster import free_port, ros_master, stop
from vla.deploy.server import PolicyServer

ROOT = Path(__file__).resolve().parents[1]
SIM_ROBOT = str(ROOT / "configs/robot/libero_sim.yaml")
BOX_MIN, BOX_MAX = np.array([-0.45, -0.45, 0.85]), np.array([0.30, 0.50, 1.40])  # libero_sim.yaml


def start(args, log: Path, env) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", *args], cwd=ROOT, env=env, stdout=log.open("w"),
                            stderr=subprocess.STDOUT)


@pytest.fixture(scope="module")
def ros_env(tmp_path_factory):
    """A real ROS master on a free loopback port; yields the environment for ROS processes."""
    with ros_master(tmp_path_factory.mktemp("ros_home")) as env:
        yield env


def test_safety_limits_clip_every_command():
    limits = SafetyLimits(workspace_min=BOX_MIN, workspace_max=BOX_MAX, max_translation_m=0.01, max_rotation_rad=0.1)
    rng = np.random.default_rng(0)
    for _ in range(2000):
        pos = rng.uniform(BOX_MIN - 0.05, BOX_MAX + 0.05)  # sometimes already outside the box
        cmd = limits.command(rng.uniform(-3, 3, 7), pos)
        assert np.linalg.norm(cmd.translation) <= 0.01 + 1e-9 and np.linalg.norm(cmd.rotation) <= 0.1 + 1e-9
        inside = (pos >= BOX_MIN) & (pos <= BOX_MAX)
        target = pos + cmd.translation
        assert ((target >= BOX_MIN - 1e-9) & (target <= BOX_MAX + 1e-9) | ~inside).all()
        # outside the box it may only move back towards it
        assert (cmd.translation[pos < BOX_MIN] >= -1e-12).all() and (cmd.translation[pos > BOX_MAX] <= 1e-12).all()
        assert cmd.gripper in (-1.0, 1.0)
    small = limits.command([0.1, -0.1, 0.05, 0.1, 0, 0, -1], [0, 0, 1.0])  # within limits: exact, unflagged
    np.testing.assert_allclose(small.translation, [0.005, -0.005, 0.0025])
    np.testing.assert_allclose(small.rotation, [0.05, 0, 0])
    assert not small.notes
    for bad in ([np.nan] * 7, [0] * 6):
        cmd = limits.command(bad, [0, 0, 1.0])
        assert cmd.is_stop and "invalid" in cmd.notes[0]
    with pytest.raises(ValueError, match="workspace_min"):
        SafetyLimits(workspace_min=[0, 0, 1], workspace_max=[1, 1, 0.5])


def test_rosbridge_messages_convert_like_ros1_ones():
    import base64

    img = np.random.default_rng(0).integers(0, 255, (4, 5, 3), dtype=np.uint8)
    padded = np.zeros((4, 16), np.uint8)
    padded[:, :15] = img[..., ::-1].reshape(4, 15)  # bgr8 with a padded row stride
    np.testing.assert_array_equal(image_from_raw("bgr8", 4, 5, 16, padded.tobytes()), img)
    msg = {"header": {"stamp": {"sec": 12, "nanosec": 500_000_000}}, "encoding": "rgb8", "height": 4, "width": 5,
           "step": 15, "data": base64.b64encode(img.tobytes()).decode()}
    np.testing.assert_array_equal(rosbridge_image(msg, "Image"), img)
    assert rosbridge_stamp(msg) == 12.5
    with pytest.raises(ValueError, match="encoding '16UC1'"):
        image_from_raw("16UC1", 4, 5, 10, bytes(40))
    limits = SafetyLimits(workspace_min=BOX_MIN, workspace_max=BOX_MAX)
    d = twist_stamped_dict(limits.command([1, 0, 0, 0, 0, 0, 1], [0, 0, 1.0]), "world", 3.25)
    assert d["twist"]["linear"]["x"] == pytest.approx(0.01) and d["header"]["stamp"] == {"sec": 3, "nanosec": 250_000_000}


def test_bridge_clips_stops_on_stale_observations_and_obeys_enable(ros_env, tmp_path):
    import rospy
    from geometry_msgs.msg import PoseStamped, TwistStamped
    from sensor_msgs.msg import Image, JointState
    from std_srvs.srv import SetBool

    server = PolicyServer(RandomPolicy(chunk_size=8, seed=1), ["agentview", "robot0_eye_in_hand"], 64, 8).start_in_thread()
    bridge = start(["vla.ros_bridge", f"config={SIM_ROBOT}", f"server=ws://127.0.0.1:{server.port}",
                    "instruction=pick up the bowl", "node_name=bridge_under_test", "rate_hz=20",
                    "safety.limits.max_translation_m=0.01", "safety.limits.max_rotation_rad=0.1"],
                   tmp_path / "bridge.log", ros_env)
    rospy.init_node("bridge_tester", disable_signals=True)
    commands = []  # (receive time, linear, angular)
    rospy.Subscriber("/sim_arm/ee_delta", TwistStamped, lambda m: commands.append((time.time(), np.array(
        [m.twist.linear.x, m.twist.linear.y, m.twist.linear.z]), np.array([m.twist.angular.x, m.twist.angular.y, m.twist.angular.z]))))
    pubs = {"agentview": rospy.Publisher("/sim_arm/agentview/image_raw", Image, queue_size=1),
            "robot0_eye_in_hand": rospy.Publisher("/sim_arm/wrist/image_raw", Image, queue_size=1),
            "pose": rospy.Publisher("/sim_arm/ee_pose", PoseStamped, queue_size=1),
            "gripper": rospy.Publisher("/sim_arm/gripper/joint_states", JointState, queue_size=1)}
    corner = BOX_MAX  # the arm at the workspace's upper corner: no command may push it further out
    publishing, last_sent = threading.Event(), [0.0]
    publishing.set()

    def publish_observations():
        while publishing.is_set():
            now = rospy.Time.now()
            for cam in ("agentview", "robot0_eye_in_hand"):
                img = Image(height=64, width=64, encoding="rgb8", step=192, data=bytes(64 * 64 * 3))
                img.header.stamp = now
                pubs[cam].publish(img)
            pose = PoseStamped()
            pose.header.stamp = now
            pose.pose.position.x, pose.pose.position.y, pose.pose.position.z = map(float, corner)
            pose.pose.orientation.w = 1.0
            pubs["pose"].publish(pose)
            joints = JointState(position=[0.02, -0.02])
            joints.header.stamp = now
            pubs["gripper"].publish(joints)
            last_sent[0] = now.to_sec()
            time.sleep(0.05)

    feeder = threading.Thread(target=publish_observations, daemon=True)
    feeder.start()
    try:
        rospy.wait_for_service("/bridge_under_test/enable", timeout=120)
        time.sleep(1.0)
        assert not commands, "the bridge commanded before it was enabled"
        enable = rospy.ServiceProxy("/bridge_under_test/enable", SetBool)
        assert enable(True).success
        time.sleep(2.0)
        moving = [c for c in commands if c[1].any()]
        assert len(moving) >= 10, f"only {len(moving)} motion commands in 2 s"
        for _, lin, ang in commands:
            assert np.linalg.norm(lin) <= 0.01 + 1e-9 and np.linalg.norm(ang) <= 0.1 + 1e-9
            assert (corner + lin <= BOX_MAX + 1e-9).all()

        publishing.clear()  # the cameras go silent
        feeder.join()
        t_last = last_sent[0]
        time.sleep(1.0)
        first_stop = next(t for t, lin, ang in commands if t > t_last and not lin.any() and not ang.any())
        # within the 200 ms threshold plus one 50 ms control period (and a little scheduling slack)
        assert first_stop - t_last <= 0.2 + 0.05 + 0.1, f"stopped {first_stop - t_last:.3f} s after the last observation"
        late = [c for c in commands if c[0] > t_last + 0.35]
        assert late and all(not lin.any() and not ang.any() for _, lin, ang in late)

        assert enable(False).success
        time.sleep(0.3)
        n = len(commands)
        time.sleep(0.5)
        assert len(commands) == n, "the bridge kept commanding while disabled"
    finally:
        publishing.clear()
        stop(bridge)
        server.stop()
        rospy.signal_shutdown("test over")
    log = (tmp_path / "bridge.log").read_text()
    assert "clipped: " in log and "stop: observation is" in log and "commanding disabled" in log


@pytest.mark.slow
def test_scripted_policy_completes_a_libero_task_through_ros(ros_env, tmp_path):
    from envs.suites import get_suite

    port, result = free_port(), tmp_path / "result.json"
    server = start(["vla.serve", "policy=scripted", f"port={port}"], tmp_path / "server.log", ros_env)
    arm = start(["vla.sim_arm", "task=0", "init=0", f"result={result}"], tmp_path / "sim_arm.log", ros_env)
    bridge = start(["vla.ros_bridge", f"config={SIM_ROBOT}", f"server=ws://127.0.0.1:{port}",
                    f"instruction={get_suite('libero_spatial').tasks[0].instruction}",
                    "+extra_topics.expert_action=/sim_arm/expert_action", "start_enabled=true", "rate_hz=10",
                    # the simulated arm renders at ~8 Hz on 2 CPU cores: allow older observations than a real arm
                    "safety.max_obs_age_s=0.5"], tmp_path / "bridge.log", ros_env)
    try:
        arm.wait(240)
    except subprocess.TimeoutExpired:
        pytest.fail("the episode did not end in 240 s; logs in " + str(tmp_path))
    finally:
        stop(arm, bridge, server)
    status = json.loads(result.read_text())
    assert status["success"], f"{status}; bridge log:\n{(tmp_path / 'bridge.log').read_text()[-2000:]}"
    assert status["steps"] < 220
    log = (tmp_path / "bridge.log").read_text()
    assert "bridge up: server" in log and "bridge stats" in log


@pytest.mark.slow
def test_latency_through_ros_gives_the_direct_runs_numbers(ros_env, tmp_path):
    """The same episode (shipped policy, async, 200 ms +-60 ms jitter) driven directly and through
    ROS in lockstep: the same steps, answers, dropped and late chunks, and command changes."""
    from envs.libero_env import LiberoEnv
    from vla.deploy.chunks import ChunkSettings, delay_steps
    from vla.deploy.client import PolicyClient
    from vla.deploy.latency import run_episode, run_episode_ros, sim_limits
    from vla.eval import load_policy, render_quality

    policy, cameras, resolution, chunk = load_policy("checkpoint", str(ROOT / "checkpoints/tiny-libero_spatial"), None)
    quality = render_quality("auto", policy)
    server = PolicyServer(policy, cameras, resolution, chunk).start_in_thread()
    client = PolicyClient(f"ws://127.0.0.1:{server.port}", timeout_s=30)
    settings = ChunkSettings(mode="async", threshold=4)
    env = LiberoEnv("libero_spatial", 0, cameras=cameras, resolution=resolution, render_quality=quality, max_steps=40)
    try:
        direct = run_episode(env, client, 0, settings, delay_steps(200, 60, 20.0, 7), sim_limits())
        ros = run_episode_ros(f"ws://127.0.0.1:{server.port}", "libero_spatial", 0, 0, settings, 200, 60, 7, cameras,
                              resolution, quality, 40, tmp_path / "ros")
    finally:
        env.close()
        client.close()
        server.stop()
    assert direct["steps"] == 40 and direct["answers"] >= 5 and direct["past_dropped"] > 0
    for key in ("success", "steps", "queries", "answers", "past_dropped", "late", "stops", "clipped"):
        assert ros[key] == direct[key], f"{key}: ROS {ros[key]}, direct {direct[key]}"
    assert ros["max_jump_m"] == pytest.approx(direct["max_jump_m"], abs=1e-9) and direct["max_jump_m"] > 0
    assert ros["max_jump_rad"] == pytest.approx(direct["max_jump_rad"], abs=1e-9)
