"""Errors raised by the trainer on purpose; each message says what went wrong and how to fix it.

::

    TrainerError
     ├── ExportError          Label Studio did not give us the project's annotations (unreachable, auth, HTTP)
     ├── EmptyDatasetError    too few usable labelled crops to train (the message gives the counts)
     └── WorkerLostError      the worker process that started the job died; the orphaned job stops itself

A model the gate refuses is not an error: it is written as a ``rejected`` bundle (``publish.py``).
"""


class TrainerError(Exception):
    """Base class of every error the trainer raises on purpose."""


class ExportError(TrainerError):
    """The project's annotations could not be exported from Label Studio."""


class EmptyDatasetError(TrainerError):
    """Not enough labelled crops (or species) to train and evaluate a classifier."""


class WorkerLostError(TrainerError):
    """The RQ worker that forked this job is gone, so nobody would record the job's outcome."""
