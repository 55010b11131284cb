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
