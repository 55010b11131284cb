"""Close-name suggestions: names holding every word typed come first, then difflib's; the CLI
errors that suggest names use them."""

from __future__ import annotations

from moesim.cli import main
from moesim.metrics import METRICS
from moesim.suggest import close_names, words


def test_words_split_at_separators():
    assert words("plan.Recompute_modules-x y") == ["plan", "recompute", "modules", "x", "y"]


def test_reordered_or_partial_words_find_the_metric():
    assert close_names("usd_run", METRICS)[0] == "run_cost_usd"
    assert close_names("memory_peak", METRICS)[0] == "peak_memory_gib"


def test_a_plain_typo_still_found_and_the_name_itself_never_offered():
    assert close_names("recomput", ["dp", "recompute", "recompute_modules"]) == ["recompute", "recompute_modules"]
    assert "tokens_per_s" not in close_names("tokens_per_s", METRICS)
    assert close_names("zzz", ["dp", "tp"]) == []
    assert len(close_names("s", [f"a_s_{i}" for i in range(9)], n=3)) == 3


def test_unknown_field_error_leads_with_the_close_name(capsys):
    rc = main(["check", "switch-base-128-train", "--set", "plan.recomput=full"])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and "\n" not in err
    assert err.startswith("error: plan.recomput: unknown field; did you mean recompute or recompute_modules?; allowed:")


def test_unknown_preset_error_suggests_the_preset(capsys):
    for value, close in (("model=qwen3-30b", "did you mean qwen3-30b-a3b"), ("hardware.preset=4090", "did you mean rtx-4090?"),
                         ("hardware.preset=m2ultra", "did you mean m2-ultra?")):
        rc = main(["check", "switch-base-128-train", "--set", value])
        err = capsys.readouterr().err.strip()
        assert rc == 2 and "\n" not in err
        assert "unknown preset; " + close in err and "; allowed: " in err


def test_grid_field_typo_suggests_the_field(tmp_path, capsys):
    rc = main(["sweep", "switch-base-128-serve", "--grid", "workload.max_bach_seqs=64,256", "--out", str(tmp_path / "s")])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and "\n" not in err
    assert "workload.max_bach_seqs is not a scenario field; did you mean max_batch_seqs" in err
    assert not (tmp_path / "s").exists()


def test_readme_guard_rails_quotes_are_what_the_commands_print(capsys, tmp_path):
    from tests.conftest import ROOT

    prose = " ".join((ROOT / "README.md").read_text().split())
    for argv, quoted in (
            (["check", "switch-base-128-train", "--set", "plan.recomput=full"],
             "plan.recomput: unknown field; did you mean recompute or recompute_modules?"),
            (["check", "switch-base-128-train", "--set", "hardware.preset=4090"],
             "hardware.preset = 4090: unknown preset; did you mean rtx-4090?"),
            (["sweep", "switch-base-128-train", "--experts", "8,16", "--best", "usd_run", "--out", str(tmp_path / "s")],
             "did you mean run_cost_usd")):
        assert main(argv) == 2
        assert quoted in capsys.readouterr().err
        assert quoted.split(";")[0].split(":")[0] in prose and quoted.split("; ")[-1] in prose
