"""The run session: a Hydra job of ``rnnlab train`` (new run or resume), and rebuilding a
finished run for the commands that use its model (``eval``, ``generate``, ``translate``)."""
