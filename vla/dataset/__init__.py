"""The LeRobot v3 dataset format (writer, stats, tasks), the training-sample reader, and scripted collection into it."""
