"""A simulated arm on ROS 1, backed by our LIBERO env: `python -m vla.sim_arm suite=libero_spatial task=0 init=0`.

It publishes what a real arm's drivers would (camera images, the end-effector pose, gripper
joint states) and executes the bridge's commands: each end-effector delta (TwistStamped) is one
control step of the env, with the latest gripper command. So the whole deployment loop, sim arm
-> ROS -> bridge -> policy server -> bridge -> ROS -> sim arm, runs on one machine.
It also publishes the scripted expert's action for the current state (`expert_topic`, for
`vla.serve policy=scripted`, which needs the simulator's ground truth) and the episode status as
JSON on `status_topic` ({"steps", "success", "done", the largest step-to-step change of the
commanded translation and rotation}), also written to `result=` when it ends.

`clock=sim` (lockstep, for measurements): messages are stamped with simulation time
(SIM_EPOCH_S + steps / control rate) instead of the wall clock, and the arm steps once it has both
the twist and the gripper command of a bridge tick (`vla.ros_bridge clock=sim` ticks once per new
observation), so an episode through ROS is the same as one driven directly (vla.deploy.latency).
"""

from __future__ import annotations

import json
import logging
import threading

import numpy as np
from omegaconf import DictConfig

from envs.robot_state import ROTATION_RAD_PER_UNIT, TRANSLATION_M_PER_UNIT

from .ros_io import keep_logging_on_stderr

log = logging.getLogger("vla.sim_arm")
SIM_EPOCH_S = 1.0  # simulation time of the first observation: ROS reads a zero stamp as "not set"


def command_to_action(linear, angular, gripper: float) -> np.ndarray:
    """A per-step end-effector delta (metres, radians) back to the env's OSC_POSE action units."""
    a = np.concatenate([np.asarray(linear) / TRANSLATION_M_PER_UNIT, np.asarray(angular) / ROTATION_RAD_PER_UNIT,
                        [1.0 if gripper > 0 else -1.0]])
    return np.clip(a, -1, 1).astype(np.float32)


class SimArm:
    def __init__(self, cfg: DictConfig):
        import rospy
        from geometry_msgs.msg import PoseStamped, TwistStamped
        from sensor_msgs.msg import Image, JointState
        from std_msgs.msg import Float32, Float32MultiArray, String

        from envs import UnsupportedTask
        from envs.episodes import make_expert
        from envs.libero_env import LiberoEnv

        self.rospy, self.cfg = rospy, cfg
        self.msgs = {"Image": Image, "PoseStamped": PoseStamped, "JointState": JointState,
                     "Float32MultiArray": Float32MultiArray, "String": String}
        rospy.init_node(cfg.node_name, disable_signals=True)
        keep_logging_on_stderr()
        self.env = LiberoEnv(cfg.suite.name, cfg.task, cameras=list(cfg.cameras), resolution=cfg.resolution,
                             render_quality=cfg.render_quality, max_steps=cfg.max_steps)
        self.obs, _ = self.env.reset(init_state_index=cfg.init)
        try:
            self.expert = make_expert(self.env)
            self.expert.reset()
        except UnsupportedTask:
            self.expert = None
        self._expert_action()
        if cfg.clock not in ("wall", "sim"):
            raise ValueError(f"clock must be wall or sim, not {cfg.clock!r}")
        self.lockstep, self.hz = cfg.clock == "sim", float(cfg.suite.control_freq)
        self.steps, self.success, self.done = 0, False, False
        self.last_command, self.max_jump_m, self.max_jump_rad = None, 0.0, 0.0
        self.cam_pubs = {c: rospy.Publisher(t, Image, queue_size=1) for c, t in cfg.camera_topics.items()}
        self.pose_pub = rospy.Publisher(cfg.ee_pose_topic, PoseStamped, queue_size=1)
        self.grip_pub = rospy.Publisher(cfg.gripper_topic, JointState, queue_size=1)
        self.expert_pub = rospy.Publisher(cfg.expert_topic, Float32MultiArray, queue_size=1)
        self.status_pub = rospy.Publisher(cfg.status_topic, String, queue_size=1, latch=True)
        self.gripper, self.pending, self.new_command = -1.0, None, threading.Event()
        self.got = {"twist": False, "gripper": False}  # parts of the next command received (lockstep)
        rospy.Subscriber(cfg.gripper_command_topic, Float32, self._on_gripper, queue_size=1)
        rospy.Subscriber(cfg.command_topic, TwistStamped, self._on_command, queue_size=1)

    def _expert_action(self) -> None:
        # once per env step: the expert's phases advance with each call
        self.expert_action = None if self.expert is None else [float(x) for x in self.expert.act(self.obs)]

    def _on_command(self, msg) -> None:
        t = msg.twist
        self.pending = ((t.linear.x, t.linear.y, t.linear.z), (t.angular.x, t.angular.y, t.angular.z))
        self._received("twist")

    def _on_gripper(self, msg) -> None:
        self.gripper = msg.data
        self._received("gripper")

    def _received(self, part: str) -> None:
        # each part is recorded before the check: of two callbacks racing, the later sees both
        self.got[part] = True
        if self.got["twist"] and (self.got["gripper"] or not self.lockstep):
            self.new_command.set()

    def publish(self) -> None:
        raw = self.env.raw_obs
        now = self.rospy.Time.from_sec(SIM_EPOCH_S + self.steps / self.hz) if self.lockstep else self.rospy.Time.now()
        for cam, pub in self.cam_pubs.items():
            img = self.obs["images"][cam]
            msg = self.msgs["Image"](height=img.shape[0], width=img.shape[1], encoding="rgb8", step=3 * img.shape[1],
                                     data=img.tobytes())
            msg.header.stamp, msg.header.frame_id = now, cam
            pub.publish(msg)
        pose = self.msgs["PoseStamped"]()
        pose.header.stamp, pose.header.frame_id = now, "world"
        (pose.pose.position.x, pose.pose.position.y, pose.pose.position.z) = map(float, raw["robot0_eef_pos"])
        q = raw["robot0_eef_quat"]  # x, y, z, w
        (pose.pose.orientation.x, pose.pose.orientation.y, pose.pose.orientation.z, pose.pose.orientation.w) = map(float, q)
        self.pose_pub.publish(pose)
        joints = self.msgs["JointState"](name=["finger_left", "finger_right"],
                                         position=[float(x) for x in raw["robot0_gripper_qpos"]])
        joints.header.stamp = now
        self.grip_pub.publish(joints)
        if self.expert_action is not None:
            self.expert_pub.publish(self.msgs["Float32MultiArray"](data=self.expert_action))
        self.publish_status()

    def publish_status(self) -> None:
        self.status_pub.publish(self.msgs["String"](json.dumps(self.status())))

    def status(self) -> dict:
        return {"steps": self.steps, "success": self.success, "done": self.done, "max_jump_m": self.max_jump_m,
                "max_jump_rad": self.max_jump_rad}

    def run(self) -> dict:
        # re-publish while waiting, so late subscribers get a (fresh) observation
        while not self.rospy.is_shutdown() and not self.done:
            self.publish()
            if not self.new_command.wait(self.cfg.republish_s):
                continue
            self.new_command.clear()
            self.got = {"twist": False, "gripper": False}
            lin, ang = np.asarray(self.pending[0]), np.asarray(self.pending[1])
            if self.last_command is not None:
                self.max_jump_m = max(self.max_jump_m, float(np.linalg.norm(lin - self.last_command[0])))
                self.max_jump_rad = max(self.max_jump_rad, float(np.linalg.norm(ang - self.last_command[1])))
            self.last_command = (lin, ang)
            self.obs, _, term, trunc, info = self.env.step(command_to_action(lin, ang, self.gripper))
            self.steps, self.success = int(info["steps"]), bool(info["success"])
            self.done = bool(term or trunc)
            self._expert_action()
        self.publish_status()  # no observation after the end: a lockstep bridge would tick once more
        log.info("episode over: %s", self.status())
        return self.status()
