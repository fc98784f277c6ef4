"""Recurrent cells. Every cell is one layer that implements the :class:`~rnnlab.cells.base.Cell` interface.

A cell is chosen by config (``conf/cell/*.yaml``) through ``_target_``; the layer stack
(:mod:`rnnlab.models.stack`) never branches on which cell it runs.
"""

from rnnlab.cells.base import Cell, State

__all__ = ["Cell", "State"]
