"""The versioned model store: atomic activation, rollback and a history of every change."""

from modelserve.registry.store import Registry, RegistryError, VersionInfo

__all__ = ["Registry", "RegistryError", "VersionInfo"]
