"""smartset: turn a raw image collection into a quality data set, and measure what each
data step was worth.

    >>> import smartset
    >>> ws = smartset.init("my-workspace")            # doctest: +SKIP
    >>> ws.ingest("photos/train")                     # doctest: +SKIP
    >>> ws.samples().groupby("label").size()          # doctest: +SKIP
"""

from smartset.errors import (ColumnNotFoundError, ImageDecodeError, LabelError, SmartsetError,
                             SourceError, VersionError, WorkspaceError)
from smartset.workspace import Workspace, init
from smartset.workspace import open_workspace as open  # noqa: A001 - smartset.open(DIR) reads best

__version__ = "0.1.0"

__all__ = [
    "Workspace",
    "init",
    "open",
    "SmartsetError",
    "WorkspaceError",
    "SourceError",
    "ColumnNotFoundError",
    "ImageDecodeError",
    "VersionError",
    "LabelError",
    "__version__",
]
