"""Drive an arm from the policy server over ROS: `python -m vla.ros_bridge server=ws://gpu-box:8000 config=robot.yaml`.

The bridge subscribes to the configured camera topics (sensor_msgs/Image or CompressedImage), the
end-effector pose (geometry_msgs/PoseStamped, robot base frame) and the gripper joints
(sensor_msgs/JointState), asks the server for action chunks (vla.deploy.chunks: synchronously, or
asynchronously while the arm keeps moving), executes them at `rate_hz` and publishes each step as
an end-effector delta (geometry_msgs/TwistStamped: linear = metres, angular = radians to move
within this control step, base frame) and a gripper command (std_msgs/Float32, -1 open / +1 close).

Safety, on the robot side, whatever the server sends:
- every command is clipped to `max_translation_m` / `max_rotation_rad` per step and its target
  to the workspace box (base frame); non-finite actions become a stop;
- a watchdog publishes a stop (zero delta, gripper held) when the newest observation is older
  than `max_obs_age_s` (default 200 ms) or the server does not answer within `server_timeout_s`;
- `~enable` (std_srvs/SetBool) turns commanding on and off (off at start unless `start_enabled`);
- every clipped or stopped command is logged.

ROS 1 runs natively (rospy, `transport: ros1`); ROS 2 is reached through a rosbridge server
(`transport: rosbridge`, `rosbridge_url: ws://robot:9090`, needs `pip install roslibpy`).
"""

from __future__ import annotations

import base64
import dataclasses
import io
import logging
import threading
import time
from dataclasses import dataclass, field

import numpy as np
from omegaconf import DictConfig, OmegaConf

from envs.robot_state import ROTATION_RAD_PER_UNIT, TRANSLATION_M_PER_UNIT, robot_state

from .chunks import ChunkQueue, ChunkSettings, ThreadedRequests

log = logging.getLogger("vla.ros_bridge")


# -- safety ---------------------------------------------------------------------------------
@dataclass
class Command:
    translation: np.ndarray  # metres this step, base frame
    rotation: np.ndarray     # radians this step (axis-angle), base frame
    gripper: float           # -1 open, +1 close
    notes: list[str] = field(default_factory=list)  # why it was clipped or stopped

    @property
    def is_stop(self) -> bool:
        return not self.translation.any() and not self.rotation.any()


@dataclass
class SafetyLimits:
    workspace_min: tuple = (-0.6, -0.6, 0.0)
    workspace_max: tuple = (0.6, 0.6, 0.8)
    max_translation_m: float = 0.01   # per control step (0.2 m/s at 20 Hz)
    max_rotation_rad: float = 0.1
    translation_m_per_unit: float = TRANSLATION_M_PER_UNIT
    rotation_rad_per_unit: float = ROTATION_RAD_PER_UNIT

    def __post_init__(self):
        lo, hi = np.asarray(self.workspace_min, float), np.asarray(self.workspace_max, float)
        if lo.shape != (3,) or hi.shape != (3,) or not (lo < hi).all():
            raise ValueError(f"workspace_min {list(lo)} must be below workspace_max {list(hi)} in x, y and z")
        if self.max_translation_m <= 0 or self.max_rotation_rad <= 0:
            raise ValueError("max_translation_m and max_rotation_rad must be positive")
        self.lo, self.hi = lo, hi

    def command(self, action, eef_pos) -> Command:
        """A policy action (OSC_POSE delta in [-1, 1] units) at end-effector position eef_pos ->
        the command to publish, within every limit."""
        a = np.asarray(action, np.float64).reshape(-1)
        if a.shape != (7,) or not np.isfinite(a).all():
            return Command(np.zeros(3), np.zeros(3), 0.0, [f"invalid action {a.round(3).tolist()}: stop"])
        notes = []
        gripper = 1.0 if a[6] > 0 else -1.0
        rot = a[3:6] * self.rotation_rad_per_unit
        if np.linalg.norm(rot) > self.max_rotation_rad:
            notes.append(f"rotation {np.linalg.norm(rot):.3f} rad clipped to {self.max_rotation_rad}")
            rot *= self.max_rotation_rad / np.linalg.norm(rot)
        pos = np.asarray(eef_pos, np.float64)
        delta = a[:3] * self.translation_m_per_unit
        target = np.clip(pos + delta, self.lo, self.hi)
        if not np.allclose(target, pos + delta):
            notes.append(f"target {np.round(pos + delta, 3).tolist()} clipped to the workspace box")
            delta = target - pos
        if np.linalg.norm(delta) > self.max_translation_m:
            notes.append(f"translation {np.linalg.norm(delta):.4f} m clipped to {self.max_translation_m}")
            delta *= self.max_translation_m / np.linalg.norm(delta)
        return Command(delta, rot, gripper, notes)


# -- the bridge, independent of the ROS flavour ----------------------------------------------
class Bridge:
    """Keeps the newest observation parts with their times, and on each tick decides the command:
    the next queued action (vla.deploy.chunks: sync or asynchronous refills), or a stop."""

    def __init__(self, client, limits: SafetyLimits, cameras: list[str], instruction: str, publish,
                 max_obs_age_s: float = 0.2, execute_steps: int | None = None, enabled: bool = False,
                 extras: list[str] = (), clock=time.time, chunks: ChunkSettings | None = None, requests=None):
        self.client, self.limits, self.cameras, self.instruction = client, limits, list(cameras), instruction
        self.publish, self.max_obs_age_s = publish, max_obs_age_s
        self.extras, self.clock = list(extras), clock
        settings = chunks or ChunkSettings()
        if execute_steps is not None:  # the caller's settings stay as they were
            settings = dataclasses.replace(settings, execute_steps=execute_steps)
        self.chunks = ChunkQueue(settings)
        self.requests = requests or ThreadedRequests(client)
        self.enabled, self.gripper, self.step = enabled, -1.0, 0
        self.parts: dict[str, tuple[object, float]] = {}  # name -> (value, stamp in seconds)
        self.stats = {"commands": 0, "clipped": 0, "stops": 0, "queries": 0, "server_errors": 0, "answers": 0, "late": 0,
                      "past_dropped": 0}
        self.lock = threading.Lock()
        self._stopped_for = None

    def update(self, name: str, value, stamp: float | None = None) -> None:
        """A new camera image / 'pose' (pos, quat xyzw) / 'gripper' qpos / extra; stamp = its
        capture time (header stamp), or now when the publisher left it empty."""
        with self.lock:
            self.parts[name] = (value, stamp if stamp else self.clock())

    def set_enabled(self, on: bool) -> str:
        self.enabled = bool(on)
        self.chunks.clear()
        if not on:
            self._stop("disabled")
        log.info("commanding %s", "enabled" if on else "disabled")
        return "enabled" if on else "disabled"

    def observation(self):
        """(observation for the server, its age in seconds, eef position) or (None, reason, None)."""
        with self.lock:
            need = self.cameras + ["pose", "gripper"] + self.extras
            missing = [n for n in need if n not in self.parts]
            if missing:
                return None, f"no message yet from {missing}", None
            age = self.clock() - min(self.parts[n][1] for n in need)
            (pos, quat), _ = self.parts["pose"]
            obs = {"images": {c: self.parts[c][0] for c in self.cameras},
                   "state": robot_state(pos, quat, self.parts["gripper"][0]), "instruction": self.instruction}
            for n in self.extras:
                obs[n] = self.parts[n][0]
        return obs, age, np.asarray(pos, np.float64)  # float64: the box check must not see float32 rounding

    def _stop(self, reason: str, kind: str | None = None) -> None:
        cmd = Command(np.zeros(3), np.zeros(3), self.gripper, [reason])
        if self._stopped_for != (kind or reason):  # log when a stop begins; publish one every tick
            log.warning("stop: %s", reason)
        self._stopped_for = kind or reason
        self.stats["stops"] += 1
        self.publish(cmd)

    def _receive(self) -> None:
        """Take in an answer that has arrived (the request's error, if it failed, propagates)."""
        got = self.requests.poll(self.step)
        if got is not None:
            self.stats["answers"] += 1
            self.stats["past_dropped"] += self.chunks.arrive(*got)

    def tick(self) -> None:
        if not self.enabled:
            return
        obs, age, eef_pos = self.observation()
        if obs is None:
            return self._stop(age)
        if age > self.max_obs_age_s:
            self.chunks.clear()  # the world moved on: a stale chunk is not resumed
            return self._stop(f"observation is {age * 1000:.0f} ms old (limit {self.max_obs_age_s * 1000:.0f} ms)", "stale")
        try:
            self._receive()
            if self.chunks.wants(self.requests.in_flight):
                self.requests.submit(obs, self.chunks.executed, self.step)
                self.stats["queries"] += 1
                self._receive()  # an answer with no delay joins at once
        except Exception as e:  # timeout, lost link, error frame: stop now, queue dropped, ask again next tick
            self.stats["server_errors"] += 1
            self.chunks.clear()
            self.step += 1
            return self._stop(f"policy server: {e}", "server")
        action = self.chunks.next()
        self.step += 1
        if action is None:
            if self.chunks.settings.mode == "async" and self.chunks.executed:
                if self._stopped_for != "late":
                    self.stats["late"] += 1
                return self._stop("the next chunk is late: the queue ran out, holding still", "late")
            return self._stop("waiting for the policy server", "waiting")
        cmd = self.limits.command(action, eef_pos)
        self._stopped_for = None
        if cmd.notes:
            self.stats["clipped"] += 1
            log.warning("clipped: %s", "; ".join(cmd.notes))
        self.gripper = cmd.gripper
        self.stats["commands"] += 1
        self.publish(cmd)


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
    limits = SafetyLimits(**OmegaConf.to_container(cfg.safety.limits))
    client = PolicyClient(cfg.server, api_key=cfg.api_key, timeout_s=cfg.safety.server_timeout_s,
                          connect_s=cfg.server_connect_s)
    served = client.metadata["cameras"]
    if sorted(served) != sorted(cfg.cameras):
        raise ValueError(f"the server's policy reads cameras {served}; the config subscribes {sorted(cfg.cameras)}")
    bridge = Bridge(client, limits, served, cfg.instruction, publish=None, max_obs_age_s=cfg.safety.max_obs_age_s,
                    execute_steps=cfg.execute_steps, enabled=cfg.start_enabled, extras=list(cfg.extra_topics or {}),
                    chunks=ChunkSettings(**OmegaConf.to_container(cfg.chunks)))
    transport = {"ros1": Ros1IO, "rosbridge": RosbridgeIO}.get(cfg.transport)
    if transport is None:
        raise ValueError(f"transport must be ros1 or rosbridge, not {cfg.transport!r}")
    ros = transport(cfg, bridge)
    bridge.publish = ros.publish
    log.info("bridge up: server %s (%s), %s Hz, commanding %s", cfg.server, client.metadata["policy"], cfg.rate_hz,
             "enabled" if bridge.enabled else "disabled (call ~enable)")
    try:
        ros.spin(cfg.rate_hz)
    finally:
        log.info("bridge stats: %s", bridge.stats)
        bridge.requests.close()
        client.close()
