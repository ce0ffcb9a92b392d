"""Drive an arm from the policy server over ROS: `python -m vla.ros_bridge server=ws://gpu-box:8000 config=robot.yaml`.

The bridge subscribes to the configured camera topics (sensor_msgs/Image or CompressedImage), the
end-effector pose (geometry_msgs/PoseStamped, robot base frame) and the gripper joints
(sensor_msgs/JointState), asks the server for action chunks (vla.deploy.chunks: synchronously, or
asynchronously while the arm keeps moving), executes them at `rate_hz` and publishes each step as
an end-effector delta (geometry_msgs/TwistStamped: linear = metres, angular = radians to move
within this control step, base frame) and a gripper command (std_msgs/Float32, -1 open / +1 close).

Safety limits and the watchdog (vla.deploy.bridge) apply to every command; `~enable`
(std_srvs/SetBool) turns commanding on and off (off at start unless `start_enabled`).

`clock: sim` is for the simulated arm (`vla.sim_arm clock=sim`): the bridge ticks once per complete
new observation, reading time from its stamps, and holds each answer back `simulated_delay` (in
control steps), so latency is measured through ROS with the same numbers as without it
(vla.deploy.latency).

ROS 1 runs natively (rospy, `transport: ros1`); ROS 2 is reached through a rosbridge server
(`transport: rosbridge`, `rosbridge_url: ws://robot:9090`, needs `pip install roslibpy`).
"""

from __future__ import annotations

import base64
import io
import logging
import time

import numpy as np
from omegaconf import DictConfig, OmegaConf

from .bridge import Bridge, Command, SafetyLimits
from .chunks import ChunkSettings, SimulatedLatency, delay_steps

log = logging.getLogger("vla.ros_bridge")


def keep_logging_on_stderr() -> None:
    """rospy.init_node sends the root logger to a file under ~/.ros/log only: keep our
    package's messages (clips, stops) on stderr as well."""
    pkg = logging.getLogger("vla")
    if not any(getattr(h, "_vla", False) for h in pkg.handlers):
        h = logging.StreamHandler()
        h._vla = True
        h.setFormatter(logging.Formatter("%(asctime)s %(name)s %(levelname)s %(message)s"))
        pkg.addHandler(h)


# -- ROS message conversion -------------------------------------------------------------------
def image_from_raw(encoding: str, height: int, width: int, step: int, data: bytes) -> np.ndarray:
    """A sensor_msgs/Image's fields -> uint8 [H, W, 3] RGB."""
    channels = {"rgb8": 3, "bgr8": 3, "rgba8": 4, "bgra8": 4, "mono8": 1}
    if encoding not in channels:
        raise ValueError(f"image encoding {encoding!r} is not supported (use one of {sorted(channels)})")
    c = channels[encoding]
    buf = np.frombuffer(data, np.uint8)
    if buf.size < height * step:
        raise ValueError(f"image of {height}x{width} {encoding} has {buf.size} bytes, needs {height * step}")
    img = buf[: height * step].reshape(height, step)[:, : width * c].reshape(height, width, c)
    if encoding.startswith("bgr"):
        img = img[..., [2, 1, 0]]
    elif c == 1:
        img = np.repeat(img, 3, axis=2)
    return np.ascontiguousarray(img[..., :3])


def image_from_compressed(data: bytes) -> np.ndarray:
    from PIL import Image

    return np.asarray(Image.open(io.BytesIO(bytes(data))).convert("RGB"))


class Ros1IO:
    """rospy: subscribers feed the bridge, commands go out as TwistStamped + Float32."""

    def __init__(self, cfg: DictConfig, bridge: Bridge):
        import rospy
        from geometry_msgs.msg import PoseStamped, TwistStamped
        from sensor_msgs.msg import CompressedImage, Image, JointState
        from std_msgs.msg import Float32, Float32MultiArray
        from std_srvs.srv import SetBool, SetBoolResponse

        self.rospy, self.cfg, self.bridge, self.TwistStamped, self.Float32 = rospy, cfg, bridge, TwistStamped, Float32
        rospy.init_node(cfg.node_name, anonymous=False, disable_signals=True)
        keep_logging_on_stderr()
        stamp = lambda msg: msg.header.stamp.to_sec()  # noqa: E731

        for cam, spec in cfg.cameras.items():
            if spec.type == "Image":
                cb = lambda m, cam=cam: bridge.update(cam, image_from_raw(m.encoding, m.height, m.width, m.step, m.data), stamp(m))
            elif spec.type == "CompressedImage":
                cb = lambda m, cam=cam: bridge.update(cam, image_from_compressed(m.data), stamp(m))
            else:
                raise ValueError(f"cameras.{cam}.type must be Image or CompressedImage, not {spec.type!r}")
            rospy.Subscriber(spec.topic, Image if spec.type == "Image" else CompressedImage, cb, queue_size=1,
                             buff_size=1 << 24)
        rospy.Subscriber(cfg.ee_pose_topic, PoseStamped, lambda m: bridge.update(
            "pose", ((m.pose.position.x, m.pose.position.y, m.pose.position.z),
                     (m.pose.orientation.x, m.pose.orientation.y, m.pose.orientation.z, m.pose.orientation.w)), stamp(m)),
            queue_size=1)
        rospy.Subscriber(cfg.gripper_topic, JointState,
                         lambda m: bridge.update("gripper", np.asarray(m.position[:2], np.float32), stamp(m)), queue_size=1)
        for name, topic in (cfg.extra_topics or {}).items():
            rospy.Subscriber(topic, Float32MultiArray,
                             lambda m, name=name: bridge.update(name, np.asarray(m.data, np.float32)), queue_size=1)
        self.cmd_pub = rospy.Publisher(cfg.command_topic, TwistStamped, queue_size=1)
        self.grip_pub = rospy.Publisher(cfg.gripper_command_topic, Float32, queue_size=1)
        rospy.Service("~enable", SetBool, lambda req: SetBoolResponse(True, bridge.set_enabled(req.data)))

    def publish(self, cmd: Command) -> None:
        msg = self.TwistStamped()
        msg.header.stamp, msg.header.frame_id = self.rospy.Time.now(), self.cfg.base_frame
        (msg.twist.linear.x, msg.twist.linear.y, msg.twist.linear.z) = map(float, cmd.translation)
        (msg.twist.angular.x, msg.twist.angular.y, msg.twist.angular.z) = map(float, cmd.rotation)
        self.cmd_pub.publish(msg)
        self.grip_pub.publish(self.Float32(float(cmd.gripper)))

    def running(self) -> bool:
        return not self.rospy.is_shutdown()

    def spin(self, rate_hz: float) -> None:
        rate = self.rospy.Rate(rate_hz)
        while not self.rospy.is_shutdown():
            self.bridge.tick()
            rate.sleep()


class RosbridgeIO:
    """ROS 2 (or ROS 1) through a rosbridge websocket server, with roslibpy. Same topics and
    behaviour as Ros1IO; messages arrive as JSON dicts (image bytes base64-encoded)."""

    def __init__(self, cfg: DictConfig, bridge: Bridge):
        try:
            import roslibpy
        except ImportError:
            raise SystemExit("transport=rosbridge needs roslibpy: pip install roslibpy") from None
        from urllib.parse import urlparse

        url = urlparse(cfg.rosbridge_url)
        self.ros = roslibpy.Ros(host=url.hostname, port=url.port or 9090)
        self.ros.run()
        self.cfg, self.bridge, self.roslibpy = cfg, bridge, roslibpy
        topic = lambda name, kind: roslibpy.Topic(self.ros, name, kind, queue_length=1)  # noqa: E731
        for cam, spec in cfg.cameras.items():
            t = topic(spec.topic, f"sensor_msgs/msg/{spec.type}")
            t.subscribe(lambda m, cam=cam, kind=spec.type: bridge.update(cam, rosbridge_image(m, kind), rosbridge_stamp(m)))
        topic(cfg.ee_pose_topic, "geometry_msgs/msg/PoseStamped").subscribe(
            lambda m: bridge.update("pose", rosbridge_pose(m), rosbridge_stamp(m)))
        topic(cfg.gripper_topic, "sensor_msgs/msg/JointState").subscribe(
            lambda m: bridge.update("gripper", np.asarray(m["position"][:2], np.float32), rosbridge_stamp(m)))
        for name, t in (cfg.extra_topics or {}).items():
            topic(t, "std_msgs/msg/Float32MultiArray").subscribe(
                lambda m, name=name: bridge.update(name, np.asarray(m["data"], np.float32)))
        self.cmd_pub = topic(cfg.command_topic, "geometry_msgs/msg/TwistStamped")
        self.grip_pub = topic(cfg.gripper_command_topic, "std_msgs/msg/Float32")
        service = roslibpy.Service(self.ros, f"/{cfg.node_name}/enable", "std_srvs/srv/SetBool")
        service.advertise(lambda req, res: res.update(success=True, message=bridge.set_enabled(req["data"])) or True)

    def publish(self, cmd: Command) -> None:
        self.cmd_pub.publish(self.roslibpy.Message(twist_stamped_dict(cmd, self.cfg.base_frame, time.time())))
        self.grip_pub.publish(self.roslibpy.Message({"data": float(cmd.gripper)}))

    def running(self) -> bool:
        return self.ros.is_connected

    def spin(self, rate_hz: float) -> None:
        period = 1.0 / rate_hz
        next_t = time.monotonic()
        while self.ros.is_connected:
            self.bridge.tick()
            next_t += period
            time.sleep(max(0.0, next_t - time.monotonic()))


def rosbridge_stamp(msg: dict) -> float:
    s = msg.get("header", {}).get("stamp", {})
    return s.get("sec", s.get("secs", 0)) + 1e-9 * s.get("nanosec", s.get("nsecs", 0))


def rosbridge_image(msg: dict, kind: str) -> np.ndarray:
    data = base64.b64decode(msg["data"]) if isinstance(msg["data"], str) else bytes(msg["data"])
    if kind == "CompressedImage":
        return image_from_compressed(data)
    return image_from_raw(msg["encoding"], msg["height"], msg["width"], msg["step"], data)


def rosbridge_pose(msg: dict):
    p, q = msg["pose"]["position"], msg["pose"]["orientation"]
    return (p["x"], p["y"], p["z"]), (q["x"], q["y"], q["z"], q["w"])


def twist_stamped_dict(cmd: Command, frame: str, now: float) -> dict:
    xyz = lambda v: dict(zip("xyz", map(float, v)))  # noqa: E731
    return {"header": {"stamp": {"sec": int(now), "nanosec": int((now % 1) * 1e9)}, "frame_id": frame},
            "twist": {"linear": xyz(cmd.translation), "angular": xyz(cmd.rotation)}}


# -- entry point ------------------------------------------------------------------------------
def run(cfg: DictConfig) -> None:
    from .client import PolicyClient

    if not cfg.instruction:
        raise ValueError("instruction= is required: the task in words, as in training")
    if cfg.clock not in ("wall", "sim"):
        raise ValueError(f"clock must be wall or sim, not {cfg.clock!r}")
    limits = SafetyLimits(**OmegaConf.to_container(cfg.safety.limits))
    client = PolicyClient(cfg.server, api_key=cfg.api_key, timeout_s=cfg.safety.server_timeout_s,
                          connect_s=cfg.server_connect_s)
    served = client.metadata["cameras"]
    if sorted(served) != sorted(cfg.cameras):
        raise ValueError(f"the server's policy reads cameras {served}; the config subscribes {sorted(cfg.cameras)}")
    bridge = Bridge(client, limits, served, cfg.instruction, publish=None, max_obs_age_s=cfg.safety.max_obs_age_s,
                    execute_steps=cfg.execute_steps, enabled=cfg.start_enabled, extras=list(cfg.extra_topics or {}),
                    chunks=ChunkSettings(**OmegaConf.to_container(cfg.chunks)))
    if cfg.clock == "sim":  # answers held back a simulated delay, counted in the arm's control steps
        d = cfg.simulated_delay
        bridge.requests = SimulatedLatency(client, delay_steps(d.ms, d.jitter_ms, cfg.rate_hz, d.seed))
    transport = {"ros1": Ros1IO, "rosbridge": RosbridgeIO}.get(cfg.transport)
    if transport is None:
        raise ValueError(f"transport must be ros1 or rosbridge, not {cfg.transport!r}")
    ros = transport(cfg, bridge)
    bridge.publish = ros.publish
    pace = f"{cfg.rate_hz} Hz" if cfg.clock == "wall" else f"lockstep on the arm's clock, {cfg.simulated_delay.ms} ms delay"
    log.info("bridge up: server %s (%s), %s, commanding %s", cfg.server, client.metadata["policy"], pace,
             "enabled" if bridge.enabled else "disabled (call ~enable)")
    try:
        if cfg.clock == "sim":
            bridge.run_lockstep(ros.running)
        else:
            ros.spin(cfg.rate_hz)
    finally:
        log.info("bridge stats: %s", bridge.stats)
        bridge.requests.close()
        client.close()
