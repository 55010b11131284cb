"""The one reader of moesim/data's published tables: comment lines anywhere are skipped; shipped tables
are named through ``data_path``."""

from __future__ import annotations

from moesim.costmodel.published import DATA_DIR, data_path, read_table


def test_comment_lines_are_skipped_wherever_they_are(tmp_path):
    p = tmp_path / "t.csv"
    p.write_text("# source: somewhere\n# units: us\na,b\n1,x\n# a note between rows\n2,y\n")
    assert read_table(p) == [{"a": "1", "b": "x"}, {"a": "2", "b": "y"}]


def test_shipped_tables_are_read_from_the_package_data_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "mamf.csv").write_text("device,dtype\nx,bf16\n")  # a file of the same name here is not read
    shipped = read_table(data_path("mamf.csv"))
    assert data_path("mamf.csv") == DATA_DIR / "mamf.csv" and {"device", "dtype", "mamf_tflops"} <= set(shipped[0])
    assert read_table(tmp_path / "mamf.csv") == [{"device": "x", "dtype": "bf16"}]  # a path reads that file
