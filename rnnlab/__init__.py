"""rnnlab: a command-line experiment runner for recurrent sequence models.

Importing the package is cheap on purpose: ``rnnlab --help`` and ``rnnlab --version``
must not pull in torch or mlflow.
"""

__version__ = "0.1.0"
