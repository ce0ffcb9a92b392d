"""A ROS 1 master (Debian's rosmaster) on a free loopback port, for the simulated deployment loop
(tests, bench/latency.py transport=ros): `with ros_master(home) as env:` gives the environment
for ROS processes, also set in os.environ while the master runs."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
import xmlrpc.client
from contextlib import contextmanager
from pathlib import Path

ROS_VARS = ("ROS_MASTER_URI", "ROS_HOSTNAME", "ROS_HOME")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def stop(*procs: subprocess.Popen) -> None:
    """Terminate, then kill what is still running after 10 s."""
    for p in procs:
        if p.poll() is None:
            p.terminate()
    for p in procs:
        try:
            p.wait(10)
        except subprocess.TimeoutExpired:
            p.kill()


@contextmanager
def ros_master(home: Path, timeout_s: float = 30.0):
    if shutil.which("rosmaster") is None:
        raise RuntimeError("rosmaster not found: install.sh installs Debian's python3-rosmaster")
    port = free_port()
    env = dict(os.environ, ROS_MASTER_URI=f"http://127.0.0.1:{port}", ROS_HOSTNAME="127.0.0.1", ROS_HOME=str(home),
               PYTHONUNBUFFERED="1")
    master = subprocess.Popen(["rosmaster", "--core", "-p", str(port)], env=env, stdout=subprocess.DEVNULL,
                              stderr=subprocess.STDOUT)
    old = {k: os.environ.get(k) for k in ROS_VARS}
    try:
        deadline = time.time() + timeout_s
        while True:
            try:
                xmlrpc.client.ServerProxy(env["ROS_MASTER_URI"]).getPid("/vla")
                break
            except OSError:
                if time.time() > deadline:
                    raise RuntimeError(f"the ROS master did not come up in {timeout_s:.0f} s") from None
                time.sleep(0.2)
        os.environ.update({k: env[k] for k in ROS_VARS})
        yield env
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        stop(master)
