"""Users' CSVs made from data sets scikit-learn ships: a header, the label not last.

iris (multiclass, species by name, first column), diabetes (regression, progression in the
middle) and breast cancer (binary over 30 features, label second). Shared by the unit tests
of parsing and training and the end-to-end tests of serving and delivery.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path

from sklearn import datasets


def as_csv(names: list[str], columns: list) -> str:
    """CSV text with a header from equally long columns."""
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(names)
    writer.writerows(zip(*columns, strict=True))
    return out.getvalue()


def iris_csv() -> str:
    """Iris, its species by name, in the first column."""
    iris = datasets.load_iris()
    species = [iris.target_names[i] for i in iris.target]
    return as_csv(["species", *iris.feature_names], [species, *iris.data.T])


def diabetes_csv() -> str:
    """Diabetes progression (a quantity), in the sixth of eleven columns."""
    data = datasets.load_diabetes()
    names = list(data.feature_names)
    columns = [*data.data.T[:5], data.target, *data.data.T[5:]]
    return as_csv([*names[:5], "progression", *names[5:]], columns)


def breast_cancer_csv() -> str:
    """Breast cancer, 0/1 in the second column, 30 features around it."""
    data = datasets.load_breast_cancer()
    names = [name.replace(" ", "_") for name in data.feature_names]
    columns = [data.data.T[0], data.target, *data.data.T[1:]]
    return as_csv([names[0], "malignant", *names[1:]], columns)


# The file name, label column and task of each data set.
TABLES = {
    "multiclass": ("iris.csv", "species", iris_csv),
    "regression": ("diabetes.csv", "progression", diabetes_csv),
    "binary": ("breast_cancer.csv", "malignant", breast_cancer_csv),
}


def write_table(directory: Path, task: str) -> tuple[Path, str]:
    """Write one data set's CSV into directory: its path and label column."""
    name, label, make = TABLES[task]
    path = Path(directory) / name
    path.write_text(make())
    return path, label
