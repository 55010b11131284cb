"""What ``check`` says of a training plan beyond its memory: the micro-batch its dp and microbatches make, and a
pipeline split that model.n_layers does not divide evenly."""

from __future__ import annotations

from moesim.check import summary
from moesim.cli import main
from moesim.loader import load_scenario
from moesim.stage_memory import uneven_split_note

UNEVEN = ["plan.dp=16", "plan.pp=4", "model.n_layers=30"]


def test_check_shows_the_micro_batch_that_dp_and_microbatches_make():
    base = summary(load_scenario("mixtral-8x7b-h100-train"))
    s = load_scenario("mixtral-8x7b-h100-train", ["plan.dp=16", "plan.pp=4"])
    wide = summary(s)
    w = s.workload
    assert wide["micro_batch_seqs"] == w.global_batch_seqs // (16 * s.plan.microbatches)
    assert wide["tokens_per_microbatch"] == wide["micro_batch_seqs"] * w.seq_len
    assert wide["micro_batch_seqs"] > base["micro_batch_seqs"]  # fewer DP ranks: larger micro-batches
    assert "micro_batch_seqs" not in summary(load_scenario("mixtral-8x7b-h100-serve"))


def test_an_uneven_pipeline_split_is_named_with_its_layer_counts():
    s = load_scenario("mixtral-8x7b-h100-train", UNEVEN)
    note = uneven_split_note(s.model, s.plan)
    assert "model.n_layers 30" in note and "2 of 8, 2 of 7 layers" in note and "plan.first_stage_layers" in note
    assert uneven_split_note(load_scenario("mixtral-8x7b-h100-train", ["plan.dp=16", "plan.pp=4"]).model,
                             load_scenario("mixtral-8x7b-h100-train", ["plan.dp=16", "plan.pp=4"]).plan) == ""
    placed = load_scenario("mixtral-8x7b-h100-train", [*UNEVEN, "plan.first_stage_layers=6"])
    assert uneven_split_note(placed.model, placed.plan) == ""  # the plan says where the layers go


def test_check_and_simulate_print_the_note_and_check_json_carries_it(capsys):
    assert main(["check", "mixtral-8x7b-h100-train", *[a for x in UNEVEN for a in ("--set", x)]]) == 0
    assert "note: model.n_layers 30 does not split evenly" in capsys.readouterr().out
    assert main(["check", "mixtral-8x7b-h100-train", *[a for x in UNEVEN for a in ("--set", x)], "--json"]) == 0
    import json

    assert "2 of 8, 2 of 7" in json.loads(capsys.readouterr().out)["pipeline_note"]
    assert main(["simulate", "llama-2-7b-a100-train", "--set", "plan.pp=3", "--set", "plan.dp=2",
                 "--set", "hardware.node.devices_per_node=6"]) == 0
    assert "note: model.n_layers 32 does not split evenly over 3 pipeline chunks" in capsys.readouterr().out


def test_a_dualpipe_split_counts_each_model_chunk_once():
    """DualPipe holds each of its pp chunks once per direction: 61 layers split over 16 chunks, not 32."""
    s = load_scenario("deepseek-v3-h800-train")
    note = uneven_split_note(s.model, s.plan)
    assert "over 16 pipeline chunks" in note and "13 of 4, 3 of 3 layers" in note
