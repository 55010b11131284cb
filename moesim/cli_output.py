"""The consoles of the CLI and what ``simulate`` (and ``show`` again, from a saved result) prints under a
run: the summary table, why it does not fit, its steady state, its capacity limit, the host-wait note, a
serving run's mean decode step and the nearest published measurements. Registered commands import
``out`` and ``err`` from :mod:`moesim.cli`, which takes them from here."""

from __future__ import annotations

from rich.console import Console, ConsoleDimensions

#: Columns ``out`` prints in where stdout is no terminal (a file, a pipe) and no width was asked for: wider
#: than any table moesim prints, so each takes the width it needs.
UNBOUNDED_COLUMNS = 10_000


class StdoutConsole(Console):
    """rich's Console, but where stdout is no terminal and no width was asked for (``COLUMNS``, or a size set
    on it), as wide as what it prints: ``moesim compare a b c d e > out.txt`` keeps its fifth run's column and
    ``sweep ... > out.txt`` its names whole, where rich would crop or fold them at 80 columns (or the width of
    a terminal stdin is on). On a terminal, or with ``COLUMNS`` set, rich's width as before. A command module
    that prints tables to stdout on a console of its own makes it one of these."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        if kwargs.get("width") is None:  # rich froze COLUMNS as it was at import: read it as it is when printing
            self._width = None

    @property
    def size(self) -> ConsoleDimensions:
        size = super().size
        if self._width is None and not self.is_terminal and not self._environ.get("COLUMNS", "").isdigit():
            return ConsoleDimensions(UNBOUNDED_COLUMNS, size.height)
        return size

    @size.setter
    def size(self, new_size: tuple[int, int]) -> None:
        Console.size.fset(self, new_size)

    def on_broken_pipe(self) -> None:
        """stdout's reader left (``| head``): end the run as :func:`_reader_left` does, on every such console."""
        _reader_left()


out = StdoutConsole()
err = Console(stderr=True)


#: The exit code of a run whose stdout reader left (the shell's for a command ended by SIGPIPE).
READER_LEFT_EXIT = 141


def silence_stdout() -> None:
    """stdout's reader closed the pipe (``moesim presets | head -1``): what is still written goes nowhere."""
    import os
    import sys

    os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())


def _reader_left() -> None:
    """End the run as its reader left: :data:`READER_LEFT_EXIT`, not 1 (a failure while running), rich's default."""
    silence_stdout()
    raise SystemExit(READER_LEFT_EXIT)



def write_stdout(text: str) -> None:
    """``text`` to stdout as it is (JSON, a schema, a Markdown table); a reader that left ends the run as
    :func:`_reader_left` does (click would otherwise exit 1 for it)."""
    import sys

    try:
        sys.stdout.write(text)
        sys.stdout.flush()
    except BrokenPipeError:
        _reader_left()

_FIT_TEXT = ("fits_reason", "fits_advice", "pipeline_note")  # sentences: printed under the table, not in it


def _print_fit(summary: dict) -> None:
    """After a summary table: why the scenario does not fit and what would make it fit."""
    from rich.markup import escape

    if summary.get("fits") is False and summary.get("fits_reason"):
        out.print(f"[red]does not fit:[/red] {escape(summary['fits_reason'])}", highlight=False)
        if summary.get("fits_advice"):
            out.print(f"[yellow]to fit:[/yellow] {escape(summary['fits_advice'])}", highlight=False)
    elif summary.get("fits") and summary.get("fits_advice"):  # fits, but the allocator's reserve may not
        out.print(f"[yellow]tight:[/yellow] {escape(summary['fits_advice'])}", highlight=False)
    if summary.get("pipeline_note"):  # check: an uneven pipeline split the plan does not place
        out.print(f"[bold]note:[/bold] {escape(summary['pipeline_note'])}", highlight=False)


def print_result(title: str, summary: dict, step: dict | None, host_note: str = "",
                 nearest: list[str] | None = None) -> None:
    """A run's summary table and the lines under it (why it does not fit, its steady state, its capacity
    limit, ``host_note``: :func:`host_note_text`), its ``step`` part by part (a serving run's mean decode
    step, ``decode_step``, or a training run's step, ``train_step``), and the ``nearest`` published
    measurements (``validation_results.trust_lines``): what ``simulate`` prints and ``show`` prints again
    from a saved result, which keeps the two notes that need the scenario."""
    from rich.markup import escape

    from moesim.report import summary_table

    if _nothing_served(summary):  # every other figure is n/a: the table keeps what says why
        out.print(summary_table(title, {k: v for k, v in summary.items() if k in _UNSERVED_ROWS}))
        _print_fit(summary)
        out.print(f"nothing was served: {summary['n_requests']:,.0f} requests rejected, as the weights leave no memory "
                  "for the KV cache (--json prints every figure)", highlight=False)
        return
    # the step's parts are the step table's rows under the summary: not printed twice
    out.print(summary_table(title, summary, skip=_FIT_TEXT + _CAPACITY_TEXT + _STEADY_TEXT + _REJECTED_TEXT
                            + step_keys()))
    _print_fit(summary)
    _print_rejected(summary)
    _print_steady(summary)
    if summary.get("capacity_limit"):
        out.print(f"[bold]limit:[/bold] {escape(summary['capacity_limit'])}", highlight=False)
        out.print(f"[bold]note:[/bold] {escape(summary['capacity_note'])}", highlight=False)
    for line in host_note.splitlines():  # one note a line
        out.print(f"[bold]note:[/bold] {escape(line)}", highlight=False)
    if step:  # where a typical decode iteration's (serving) or the step's (training) time goes
        from moesim.report import decode_step_view, train_step_view

        out.print(decode_step_view(step) if "batch_seqs" in step else train_step_view(step))
    if nearest:
        from moesim.report import print_trust

        print_trust(out, nearest)


#: A result's part-by-part step tables (``decode_step``: serving, ``train_step``: training), saved as ``<name>.csv``.
STEP_TABLES = ("decode_step", "train_step")


def step_keys() -> tuple[str, ...]:
    """Summary keys that repeat a step table's rows (training's compute parts, serving's mean decode step): the
    summary printed above the table leaves them out (``--json``, sweeps, plots and ``compare`` have them)."""
    from moesim.engine.serving.anatomy import DECODE_SUMMARY_KEYS
    from moesim.engine.training.anatomy import COMPUTE_PART_KEYS

    return COMPUTE_PART_KEYS + DECODE_SUMMARY_KEYS


def result_step(tables: dict) -> dict | None:
    """The step table of a result's ``tables`` that :func:`print_result` prints (None: the run has none)."""
    return next((tables[name] for name in STEP_TABLES if tables.get(name)), None)


def saved_step(folder) -> dict | None:
    """The step table a saved result folder holds (its ``decode_step.csv`` or ``train_step.csv``), checked
    (InputError naming the file when it is not such a table); None when it has neither."""
    from moesim.engine.serving.anatomy import check_decode_step
    from moesim.engine.training.anatomy import check_train_step
    from moesim.errors import InputError
    from moesim.results import listed_files, read_table_csv

    listed = listed_files(folder / "summary.json")
    for name, check in zip(STEP_TABLES, (check_decode_step, check_train_step), strict=True):
        path = folder / f"{name}.csv"
        if not path.exists() and path.name in listed:  # its save wrote it: the folder lost it since
            raise InputError(f"{path}: missing (summary.json lists it: this folder lost a file); simulate the "
                             "scenario again")
        if path.exists():
            step = read_table_csv(path)
            check(step, str(path))
            return step
    return None


def host_note_text(s, summary: dict) -> str:
    """The notes under a training run, one a line: that its MoE layers mostly wait for the host (how long, at
    which floor, and the knob: ``engine.training.host_floor.host_wait_note``) and that its pipeline chunks hold
    uneven layer counts the plan does not place (``stage_memory.uneven_split_note``); "" for none."""
    if "host_wait_s" not in summary:
        return ""
    from moesim.costmodel import build_cost_model
    from moesim.engine.training.host_floor import host_wait_note, moe_layer_host_us
    from moesim.stage_memory import uneven_split_note

    host = host_wait_note(summary["host_wait_s"], summary["step_time_s"],
                          moe_layer_host_us(s, build_cost_model(s.hardware)), s.plan.moe_layer_host_us is not None)
    return "\n".join(n for n in (host, uneven_split_note(s.model, s.plan)) if n)


def nearest_lines(s, name: str, sets: list[str]) -> list[str]:
    """Under a run: the published measurements nearest to it and moesim's error on each at the last
    saved validate run (``validation_results``), so the prediction comes with how far runs like it agree;
    the command it names repeats the run's ``--set`` overrides."""
    from moesim.validation_results import trust_lines

    return trust_lines(s, name, sets=sets)


#: A serving run that could not hold one request: the rows that say what was asked and why it failed.
_UNSERVED_ROWS = ("model", "hardware", "devices", "replicas", "compute_dtype", "weight_bytes_per_param", "n_requests",
                  "served_requests", "peak_memory_gib", "memory_capacity_gib", "kv_cache_capacity_tokens", "fits")


def _nothing_served(summary: dict) -> bool:
    """A serving run whose weights left no KV cache, so no request ran."""
    return summary.get("served_requests") == 0 and summary.get("kv_cache_capacity_tokens") == 0 \
        and summary.get("n_requests", 0) > 0


_CAPACITY_TEXT = ("capacity_limit", "capacity_note")  # sentences: printed under the table
#: serving: the refused requests by reason, said in one line under the table (``rejected_requests`` stays in it)
_REJECTED_TEXT = ("rejected_max_seq_len_requests", "rejected_batch_tokens_requests", "rejected_kv_cache_requests",
                  "rejected_note")


def _print_rejected(summary: dict) -> None:
    """After a serving table: how many requests were refused and why, whether the plan fits or not."""
    from rich.markup import escape

    from moesim.engine.serving.rejections import rejected_line

    line = rejected_line(summary)
    if line:
        out.print(f"[red]warning:[/red] {escape(line)}", highlight=False)
_STEADY_TEXT = ("steady_note",)  # serving: which requests the headline figures are over, under the table


def _print_steady(summary: dict) -> None:
    """After a serving table: the steady-state window of the headline figures, and a warning when
    the plan did not keep up with the offered rate."""
    if "steady_note" not in summary:
        return
    from rich.markup import escape

    from moesim.engine.serving.metrics import overload_warning, short_run_warning

    out.print(f"[bold]steady state:[/bold] {escape(summary['steady_note'])}", highlight=False)
    for warning in (overload_warning(summary), short_run_warning(summary)):
        if warning:
            out.print(f"[red]warning:[/red] {escape(warning)}", highlight=False)
