"""Who is who: people, e-mails, roles and managers (file, Microsoft Entra ID through Graph, or none).

``directory_from_settings`` builds the one the settings name; the service receives it injected.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .file import FileDirectory
from .models import Directory, DirectoryError, Person
from .open import OpenDirectory

if TYPE_CHECKING:
    from ..settings import Settings

__all__ = ["Directory", "DirectoryError", "FileDirectory", "OpenDirectory", "Person", "directory_from_settings"]


def directory_from_settings(settings: Settings) -> Directory:
    """The directory ``HITL_DIRECTORY`` names (Graph is imported only when used)."""
    if settings.directory == "file":
        assert settings.directory_file is not None  # Settings.validate guarantees it
        return FileDirectory.from_path(settings.directory_file)
    if settings.directory == "graph":
        from .graph import GraphDirectory

        return GraphDirectory.from_settings(settings)
    return OpenDirectory()
