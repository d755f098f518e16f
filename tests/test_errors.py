"""Errors travel from worker processes whole: an engine's worker that raises one must not
break the pool (BrokenProcessPool) because the error cannot be unpickled."""

import pickle

from smartset.errors import ColumnNotFoundError, ImageDecodeError


def test_errors_with_keyword_fields_pickle_round_trip():
    error = pickle.loads(pickle.dumps(ImageDecodeError("Could not decode 'a.jpg'",
                                                       path="a.jpg", reason="truncated")))
    assert isinstance(error, ImageDecodeError) and isinstance(error, OSError)
    assert (str(error), error.path, error.reason) == ("Could not decode 'a.jpg'", "a.jpg",
                                                      "truncated")
    column = pickle.loads(pickle.dumps(ColumnNotFoundError("no 'label'", column="label",
                                                           found=["path"], path="t.csv",
                                                           line=1)))
    assert (column.column, column.found, column.path, column.line) == ("label", ["path"],
                                                                       "t.csv", 1)
