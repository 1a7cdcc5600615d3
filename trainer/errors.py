"""Errors raised by the trainer on purpose; each message says what went wrong and how to fix it.

::

    TrainerError
     ├── ExportError          Label Studio did not give us the project's annotations (unreachable, auth, HTTP)
     ├── EmptyDatasetError    too few usable labelled crops to train (the message gives the counts)
     ├── FolderLayoutError    a training folder (camtrap train BASE) is not laid out as expected, or a file in
     │                        it is malformed (the message names the file, the line and what was expected)
     ├── WorkerLostError      the worker process that started the job died; the orphaned job stops itself
     └── BundleWriteError     a bundle's files or the pointer could not be written (disk full, permissions); also an
                              OSError, with the errno of the failed write

A model the gate refuses is not an error: it is written as a ``rejected`` bundle (``publish.py``).
"""


class TrainerError(Exception):
    """Base class of every error the trainer raises on purpose."""


class ExportError(TrainerError):
    """The project's annotations could not be exported from Label Studio."""


class EmptyDatasetError(TrainerError):
    """Not enough labelled crops (or species) to train and evaluate a classifier."""


class FolderLayoutError(TrainerError):
    """A training folder or one of its files is not what ``camtrap train BASE`` reads."""


class WorkerLostError(TrainerError):
    """The RQ worker that forked this job is gone, so nobody would record the job's outcome."""


class BundleWriteError(TrainerError, OSError):
    """Writing a bundle (or moving the pointer to it) failed; the message names the directory and what is served.

    An ``OSError`` too, so callers that handle failed writes keep doing so; ``errno`` is the failed write's.
    """
