"""Tasks: each owns its data, its loss and its metrics; the training loop knows none of them."""

from rnnlab.tasks.base import Task

__all__ = ["Task"]
