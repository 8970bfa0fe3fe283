"""The built-in example data, shipped as package data so that training needs no network.

`pima-indians-diabetes.csv` is the public Pima Indians Diabetes data set (NIDDK, via the UCI
Machine Learning Repository); README.md beside it gives its source and licence.
"""

from __future__ import annotations

from importlib import resources

EXAMPLE_FILE = "pima-indians-diabetes.csv"
# The one file this package ships: anything else read under that name is a damaged install.
EXAMPLE_SHA256 = "995b9b4fe0404948275414f54366b786626d2c8530deabacfd826d369d1afddb"
EXAMPLE_SOURCE = f"the built-in example ({EXAMPLE_FILE}, shipped with modelserve)"


def example_bytes() -> bytes:
    """Read the packaged example CSV (a zip or wheel install included)."""
    return resources.files(__name__).joinpath(EXAMPLE_FILE).read_bytes()
