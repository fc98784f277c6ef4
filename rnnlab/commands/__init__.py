"""Click sub-commands of ``rnnlab``, one module each. Modules import only click at the top,
so ``rnnlab --help`` never loads torch, hydra or mlflow."""
