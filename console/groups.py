"""Device groups are saved through devices.services; re-exported for the console views."""

from devices.services import GroupError, save_group

__all__ = ["GroupError", "save_group"]
