"""A user's CSV with a header: features by name, the label anywhere, the task inferred.

Real data sets that scikit-learn ships (iris, diabetes, breast cancer), written as users
write CSVs: a header, the label in a column other than the last.
"""

from __future__ import annotations

import numpy as np
import pytest
from sklearn import datasets
from tabular import as_csv, iris_csv

from modelserve.model.spec import Task
from modelserve.model.table import TableError, infer_task, parse_table


def test_iris_is_multiclass_with_its_species_names_and_plain_feature_names():
    """Text labels -> multiclass; 'sepal length (cm)' -> sepal_length_cm, said out loud."""
    table = parse_table(iris_csv(), "species", source="iris.csv")
    assert table.task is Task.MULTICLASS and table.classes == ("setosa", "versicolor",
                                                               "virginica")
    assert "multiclass" in table.inferred
    assert table.feature_names == ("sepal_length_cm", "sepal_width_cm", "petal_length_cm",
                                   "petal_width_cm")
    assert ("sepal length (cm)", "sepal_length_cm") in table.renamed
    assert table.features.shape == (150, 4) and table.features.dtype == np.float32
    assert np.bincount(table.target).tolist() == [50, 50, 50]


def test_diabetes_progression_is_regression():
    """Hundreds of distinct numbers -> regression; the label column sits in the middle."""
    data = datasets.load_diabetes()
    names = list(data.feature_names)
    columns = [*data.data.T[:5], data.target, *data.data.T[5:]]
    table = parse_table(as_csv([*names[:5], "progression", *names[5:]], columns),
                        "progression", source="diabetes.csv")
    assert table.task is Task.REGRESSION and table.classes == ()
    assert table.feature_names == tuple(names) and table.target.dtype == np.float64
    np.testing.assert_allclose(table.target, data.target)


def test_breast_cancer_is_binary_over_thirty_features():
    """Two label values -> binary, class order numeric: 0 then 1."""
    data = datasets.load_breast_cancer()
    text = as_csv(["malignant", *data.feature_names], [data.target, *data.data.T])
    table = parse_table(text, "malignant")
    assert table.task is Task.BINARY and table.classes == ("0", "1")
    assert table.features.shape == (569, 30)
    assert table.target.tolist() == data.target.tolist()


def test_a_given_task_overrides_the_inference_and_must_fit():
    """Integer labels read as classes unless told otherwise; a misfit task is one line."""
    text = as_csv(["rating", "x"], [[1, 2, 3, 4, 5] * 4, list(range(20))])
    assert parse_table(text, "rating").task is Task.MULTICLASS
    assert parse_table(text, "rating", Task.REGRESSION).task is Task.REGRESSION
    with pytest.raises(TableError, match="has 5 label values; binary needs exactly 2"):
        parse_table(text, "rating", Task.BINARY)
    with pytest.raises(TableError, match="'setosa' is not a number; regression needs numbers"):
        parse_table(iris_csv(), "species", Task.REGRESSION)


@pytest.mark.parametrize("text, expected", [
    ("a,b,label\n1,2,0\n1,red,1\n", "row 3, column 'b': 'red' is text; this column needs "
                                   "encoding as numbers"),
    ("a,b,label\n1,,0\n", "row 2, column 'b': a missing value"),
    ("a,b,label\n1,2,\n", "row 2, column 'label': the label is missing"),
    ("a,b,label\n1,2,0,5\n", "row 2: 4 columns; the header has 3"),
    ("a,a,label\n1,2,0\n", "duplicate column name 'a'"),
    ("Age,age ,label\n1,2,0\n", "duplicate column name 'Age' and 'age'"),
    ("1,2,0\n3,4,1\n", "the first row is data"),
    ("a,b,label\n1,1e39,0\n", "not a finite number within float32"),
    ("a,b,label\n", "a header and no data rows"),
    ("a,b,c\n1,2,0\n", "no column 'label' in the header"),
    ("label\n0\n1\n", "the only column is the label"),
    ("a,label\n1,x\n2,x\n3,y\n", "class 'y' has 1 row(s); a stratified split needs at least 2"),
])
def test_every_refusal_is_one_line_naming_row_and_column(text, expected):
    """What a user gets for each way a CSV can be wrong."""
    with pytest.raises(TableError, match=expected.replace("(", r"\(").replace(")", r"\)")) as why:
        parse_table(text, "label", source="mine.csv")
    assert str(why.value).startswith("mine.csv: ") and "\n" not in str(why.value)


def test_the_inference_says_why():
    """Each rule in words."""
    assert infer_task(["no", "yes", "no"])[0] is Task.BINARY
    assert infer_task(["1", "2", "3"]) == (Task.MULTICLASS, "3 integer label values: multiclass "
                                           "(give --task regression if they are quantities)")
    assert infer_task([str(x / 10) for x in range(30)])[0] is Task.REGRESSION
    assert infer_task([str(x) for x in range(21)])[0] is Task.REGRESSION
