"""Offline data: datasets on disk read into the replay layout (one time-ordered stream),
and the recorder's formats (Minari for vector tasks, the DQN Replay layout for Atari)."""
