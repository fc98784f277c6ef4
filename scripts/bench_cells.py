"""``make bench``: every cell on every path against fused nn.LSTM (see rnnlab.benchmarks.cells).

Same as ``rnnlab bench cells``; arguments pass through (``--device cuda``, ``--cells lstm``).
"""

from rnnlab.benchmarks.cells import main

if __name__ == "__main__":
    main()
