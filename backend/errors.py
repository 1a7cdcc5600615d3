"""Errors raised by the backend's library modules.

::

    BackendError
     ├── ConfigurationError    a setting or the detector cannot be used (refuse to start)
     ├── LabelConfigError      the project's labeling config lacks what we need (-> 4xx on /setup)
     ├── BundleError           a model bundle is missing, incomplete or of an unknown format
     ├── ImageError            one image cannot be fetched or decoded (fails that task only)
     │    └── ImageAccessError   the image reference is refused or unreachable (URL policy, auth, HTTP)
     └── LabelStudioError      a Label Studio API call failed (connection, auth, HTTP status)
"""


class BackendError(Exception):
    """Base class of every error this package raises on purpose."""


class ConfigurationError(BackendError):
    """A setting, or the detector it names, cannot be used."""


class LabelConfigError(BackendError):
    """The labeling config is unsupported; the message says what is missing."""


class BundleError(BackendError):
    """A model bundle is missing, incomplete or unreadable."""


class ImageError(BackendError):
    """One image cannot be fetched or decoded."""


class ImageAccessError(ImageError):
    """The image reference is refused by policy or cannot be downloaded."""


class LabelStudioError(BackendError):
    """A call to the Label Studio API failed; the message names the URL and the status or cause."""
