"""Engines that run teams somewhere other than this process (``engine:`` in huddle.yaml); `temporal` is the one."""
