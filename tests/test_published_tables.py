"""The one reader of moesim/data's published tables: comment lines anywhere are skipped, a bare file name
is a shipped table, a path is read as given."""

from __future__ import annotations

from moesim.costmodel.published import DATA_DIR, data_path, read_table


def test_comment_lines_are_skipped_wherever_they_are(tmp_path):
    p = tmp_path / "t.csv"
    p.write_text("# source: somewhere\n# units: us\na,b\n1,x\n# a note between rows\n2,y\n")
    assert read_table(p) == [{"a": "1", "b": "x"}, {"a": "2", "b": "y"}]


def test_a_bare_name_reads_the_shipped_table_and_a_path_reads_that_file(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    shipped = read_table("mamf.csv")
    assert data_path("mamf.csv") == DATA_DIR / "mamf.csv" and {"device", "dtype", "mamf_tflops"} <= set(shipped[0])
    (tmp_path / "mine.csv").write_text("device,dtype\nx,bf16\n")
    assert read_table(tmp_path / "mine.csv") == [{"device": "x", "dtype": "bf16"}]
