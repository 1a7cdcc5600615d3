"""Errors raised by the backend's library modules (the web service maps them to HTTP statuses in
``backend.service.http_errors``).

::

    BackendError
     ├── ConfigurationError    a setting or the detector cannot be used (refuse to start)
     ├── InvalidProjectError   a value that is not a project id (also a ValueError)
     ├── LabelConfigError      the project's labeling config lacks what we need (-> 4xx on /setup)
     ├── BundleError           a model bundle is incomplete or of an unknown format
     │    └── BundleNotFoundError  no such bundle (or project)
     ├── ImageError            one image cannot be fetched or decoded (fails that task only)
     │    └── ImageAccessError   the image reference is refused or unreachable (URL policy, auth, HTTP)
     ├── LabelStudioError      a Label Studio API call failed (connection, auth, HTTP status)
     └── FileFormatError       a file we read (CSV, COCO, label spec...) is not in its format (names file + line)
"""


class BackendError(Exception):
    """Base class of every error this package raises on purpose."""


class ConfigurationError(BackendError):
    """A setting, or the detector it names, cannot be used."""


class InvalidProjectError(BackendError, ValueError):
    """A value that is not a usable project id; the message names it."""


class LabelConfigError(BackendError):
    """The labeling config is unsupported; the message says what is missing."""


class BundleError(BackendError):
    """A model bundle is incomplete or unreadable."""


class BundleNotFoundError(BundleError):
    """There is no bundle of that version (in that project)."""


class ImageError(BackendError):
    """One image cannot be fetched or decoded."""


class ImageAccessError(ImageError):
    """The image reference is refused by policy or cannot be downloaded."""


class LabelStudioError(BackendError):
    """A call to the Label Studio API failed; the message names the URL and the status or cause."""


class FileFormatError(BackendError, ValueError):
    """A file is not in the format it should be in; the message names the file, the line or entry, and what was
    expected (``backend.formats``)."""
