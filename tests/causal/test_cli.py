"""`edgecompress causal FILE` and `edgecompress causal --pairs`: a table file's two columns
decided, the JSON output, the pairs benchmark on the real data, and every bad input one line
naming the file and the column, exit status 2."""

from __future__ import annotations

import json

import numpy as np
import pytest

from edgecompress.causal import read_columns, simulate
from edgecompress.errors import CausalInputError

from ..test_cli_errors import run_main


@pytest.fixture(scope="module")
def pair():
    """y = cubic(x) + uniform noise: ANM decides x->y."""
    return simulate(200, 1, mechanisms=["cubic"], noises=["uniform"], seed=3)


@pytest.fixture
def csv_file(tmp_path, pair):
    path = tmp_path / "pair.csv"
    np.savetxt(path, np.c_[np.arange(len(pair.x)), pair.x, pair.y], delimiter=",",
               header="id,altitude,temperature", comments="", fmt=["%d", "%.8g", "%.8g"])
    return path


@pytest.fixture
def table_file(tmp_path, pair):
    path = tmp_path / "pair.txt"
    np.savetxt(path, np.c_[pair.y, pair.x], fmt="%.8g", delimiter="   ")
    return path


def test_csv_with_header_by_name(csv_file, pair, capsys):
    code, out, _ = run_main(["causal", str(csv_file), "--x", "altitude", "--y",
                             "temperature"], capsys)
    assert code == 0
    assert out.splitlines()[0] == f"{csv_file}: x = altitude, y = temperature"
    assert "causal direction (anm, n=200, level=0.05, rule=level): x->y" in out
    assert pair.direction == "x->y"


def test_whitespace_table_by_index_and_json(table_file, tmp_path, capsys):
    # the file holds (effect, cause): with --x 1 --y 0 the answer is x->y, by default y->x
    report = tmp_path / "out" / "result.json"
    code, out, _ = run_main(["causal", str(table_file), "--x", "1", "--y", "0", "--json",
                             str(report)], capsys)
    assert code == 0 and ": x = column 1, y = column 0" in out
    saved = json.loads(report.read_text())
    assert (saved["direction"], saved["x"], saved["y"], saved["n"]) == ("x->y", "column 1",
                                                                       "column 0", 200)
    assert saved["x_to_y"]["p_value"] > saved["y_to_x"]["p_value"]
    assert saved["file"] == str(table_file) and saved["method"] == "anm"
    code, out, _ = run_main(["causal", str(table_file), "--rule", "forced"], capsys)
    assert code == 0 and "rule=forced): y->x" in out


def test_read_columns_header_and_default_columns(csv_file, table_file, pair):
    x, y, names = read_columns(csv_file)
    assert names == ("id", "altitude") and x[:3].tolist() == [0.0, 1.0, 2.0]
    x, y, names = read_columns(table_file)
    assert names == ("column 0", "column 1")
    np.testing.assert_allclose(y, pair.x, rtol=1e-7)
    np.testing.assert_allclose(x, pair.y, rtol=1e-7)


#: file name -> (content, extra arguments, words the error line must contain)
BAD = {
    "text.csv": ("a,b\n1,2\n3,oops\n", [], ["text.csv", "column 'b'", "not numeric",
                                            "line 3", "'oops'"]),
    "named.csv": ("a,b\n1,2\n3,4\n", ["--y", "c"], ["named.csv", "no column named 'c'",
                                                     "a, b"]),
    "index.txt": ("1 2\n3 4\n", ["--x", "2"], ["index.txt", "column index 2 out of range",
                                                "2 columns"]),
    "one.csv": ("a\n1\n2\n", [], ["one.csv", "one column", "need two"]),
    "empty.csv": ("\n  \n", [], ["empty.csv", "empty file"]),
    "header_only.csv": ("a,b\n", [], ["header_only.csv", "no data rows"]),
    "same.csv": ("a,b\n1,2\n", ["--x", "b", "--y", "1"], ["same.csv", "same column", "'b'"]),
    "nan.csv": ("a,b\n1,2\n3,nan\n", [], ["nan.csv", "column 'b'", "non-finite", "NaN"]),
    "ragged.txt": ("1 2\n3\n", [], ["ragged.txt", "line 2 has 1 fields"]),
    "short.csv": ("a,b\n1,2\n3,4\n", [], ["short.csv", "x = a, y = b", "2 samples",
                                          "at least 20"]),
    "constant.txt": ("\n".join(f"{i} 7" for i in range(30)), [],
                     ["constant.txt", "y = column 1", "constant"]),
}


@pytest.mark.parametrize("name", BAD)
def test_bad_input_is_one_line_exit_2(name, tmp_path, capsys):
    content, extra, words = BAD[name]
    path = tmp_path / name
    path.write_text(content)
    code, out, err = run_main(["causal", str(path), *extra], capsys)
    assert code == 2, err
    assert err.startswith("error: ") and err.count("\n") == 1, err
    for word in words:
        assert word in err, (word, err)


@pytest.mark.parametrize("argv, words", [
    (["causal"], ["FILE or --pairs"]),
    (["causal", "{file}", "--pairs"], ["FILE or --pairs"]),
    (["causal", "{file}", "--max-n", "10"], ["--max-n", "--pairs only"]),
    (["causal", "--pairs", "{tmp}", "--x", "a"], ["--x", "FILE only"]),
    (["causal", "--pairs", "{tmp}"], ["tuebingen_pairs", "{tmp}", "not found"]),
    (["causal", "{file}", "--level", "1.5"], ["level", "1.5"]),
    (["causal", "{file}", "--regressor", "svm"], ["svm", "gp"]),
    (["causal", "{tmp}/missing.csv"], ["missing.csv", "does not exist"]),
])
def test_bad_options_are_one_line_exit_2(argv, words, csv_file, tmp_path, capsys):
    fill = {"file": str(csv_file), "tmp": str(tmp_path)}
    code, _, err = run_main([a.format(**fill) for a in argv], capsys)
    assert code == 2, err
    assert err.count("\n") == 1, err
    for word in words:
        assert word.format(**fill) in err, (word, err)


def test_read_columns_raises_causal_input_error(tmp_path):
    path = tmp_path / "t.csv"
    path.write_text("x,y\n1,a\n")
    with pytest.raises(CausalInputError, match="column 'y' is not numeric"):
        read_columns(path)


def test_pairs_on_the_real_data(shared_data, tmp_path, capsys):
    root = shared_data("tuebingen_pairs")
    report = tmp_path / "pairs.json"
    code, out, _ = run_main(["causal", "--pairs", "--data-root", str(root), "--limit", "3",
                             "--max-n", "200", "--no-progress", "--json", str(report)], capsys)
    assert code == 0
    lines = out.splitlines()
    assert [line.split()[0] for line in lines[:3]] == ["pair0001", "pair0002", "pair0003"]
    assert all("n=200" in line for line in lines[:3])
    saved = json.loads(report.read_text())
    assert saved["rule"] == "forced" and saved["max_n"] == 200
    assert [p["n_used"] for p in saved["pairs"]] == [200, 200, 200]
    right = sum(p["weight"] for p in saved["pairs"] if p["correct"])
    total = sum(p["weight"] for p in saved["pairs"])
    assert saved["weighted_accuracy"] == pytest.approx(right / total)
    assert f"3 pairs, at most 200 points each): {right / total:.3f}" in out
    # the same subsample for the same seed: the decisions repeat
    code, again, _ = run_main(["causal", "--pairs", str(root), "--limit", "3", "--max-n", "200",
                               "--no-progress"], capsys)
    untimed = [line.rsplit(" ", 2)[0] for line in lines[:3]]
    assert code == 0 and [line.rsplit(" ", 2)[0] for line in again.splitlines()[:3]] == untimed


def test_help(capsys):
    code, out, _ = run_main(["causal", "--help"], capsys)
    assert code == 0 and "Usage: edgecompress causal [OPTIONS] [FILE]" in out
    for option in ("--pairs [DIR]", "--x", "--method [anm|hetero]", "--max-n", "--limit"):
        assert option in out
