"""Models built from cells: the layer stack that runs cells over time, and task heads."""
