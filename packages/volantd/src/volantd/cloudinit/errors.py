"""The error of the cloud-init seed builder."""

from volantd.errors import VolantError


class CloudInitError(VolantError):
    """A VM's cloud-init documents could not be read, or its seed image not be built."""
