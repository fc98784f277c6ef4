"""``python -m rnnlab``: the same as the ``rnnlab`` command (``torchrun -m rnnlab train ...``)."""

from rnnlab.cli import main

if __name__ == "__main__":
    main()
