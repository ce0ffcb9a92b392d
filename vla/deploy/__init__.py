"""The deployment stack: the policy server and its wire format, the client, the ROS bridge and a simulated arm."""
