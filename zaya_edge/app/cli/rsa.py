"""`zaya-edge solve | eval`: Markovian RSA on one problem, accuracy on a problem set.

The commands import the runtime only when they run; defaults in help are read from the library
when help is shown (LazyHelpOption). Choice lists restate library tuples; a test holds them equal.
"""

from __future__ import annotations

import dataclasses

import click

from zaya_edge.app import tiny_arith
from zaya_edge.app.cli.common import Command, as_flags
from zaya_edge.app.params import LazyHelpOption, MemorySize, Seed, prefix_cache_line, prefix_cache_option
from zaya_edge.errors import RequestError, ZayaEdgeError

PRESET_NAMES = ("report", "deploy", "edge")  # runtime.rsa.PRESETS
TAIL_UNITS = ("tokens", "words")  # runtime.rsa.TAIL_UNITS
SELECTIONS = ("vote", "aggregate")  # runtime.rsa.SELECTIONS
TASKS = ("tiny-arith",)  # app.eval.TASKS
STRATEGIES = ("single", "rsa")  # app.eval.STRATEGIES


def _rsa_default(name: str):
    """Help text: MarkovianRSA's default for `name` (the deploy point), and whether a preset replaces it."""

    def text() -> str:
        from zaya_edge.runtime.rsa import PRESETS, MarkovianRSA

        default = {f.name: f.default for f in dataclasses.fields(MarkovianRSA)}[name]
        shown = "the budget" if name == "final_budget" and default is None else default
        by_preset = ", or the preset's" if any(name in p for p in PRESETS.values()) else ""
        return f"[default: {shown}{by_preset}]"

    return text


def _preset_help() -> str:
    """Each preset's whole shape, from the library's table: N, C, T, β, τ and the final budget."""
    from zaya_edge.runtime.rsa import PRESETS

    def shape(p: dict) -> str:
        final = p.get("final_budget") or p["budget"]
        return (f"N={p['population']} C={p['subset']} T={p['rounds']} β={p['budget']} τ={p['tail']}, "
                f"final budget {final}")

    return "; ".join(f"{name}: {shape(p)}" for name, p in PRESETS.items())


def _setting(flag: str, name: str, help: str, **kwargs):
    """A solve flag for one MarkovianRSA setting: None when not given, so the preset or default applies."""
    return click.option(flag, name, default=None, help=help, cls=LazyHelpOption, lazy_help=_rsa_default(name), **kwargs)


@click.command(cls=Command)
@click.argument("artifact", type=click.Path(path_type=str))
@click.argument("problem")
@click.option("--preset", type=click.Choice(PRESET_NAMES), default=None, cls=LazyHelpOption, lazy_help=_preset_help,
              help="Reference settings (markovian-rsa.md); flags override them.")
@_setting("--population", "population", type=int, help="N: candidates per round.")
@_setting("--subset", "subset", type=int, help="C: tails shown in each aggregation prompt.")
@_setting("--rounds", "rounds", type=int,
          help="T: aggregation rounds after the rollouts, T + 1 rounds in all (0 = plain parallel sampling).")
@_setting("--budget", "budget", type=int, help="β: max new tokens per sequence in every round but the last.")
@_setting("--tail", "tail", type=int, help="τ: tail carried to the next round.")
@_setting("--final-budget", "final_budget", type=int,
          help="Max new tokens per sequence in the last round (with T = 0: the rollouts) and the final aggregation.")
@_setting("--temperature", "temperature", type=float, help="Sampling temperature of the rounds.")
@_setting("--top-p", "top_p", type=float, help="Nucleus mass of the rounds.")
@_setting("--tail-unit", "tail_unit", type=click.Choice(TAIL_UNITS), help="Count τ in model tokens or whitespace words.")
@click.option("--carry-answer", "carry_answer_when_finished", is_flag=True, default=None,
              help="A candidate that finished thinking carries its answer section instead of its tail.")
@_setting("--select", "select", type=click.Choice(SELECTIONS), help="Majority vote, or one final aggregation sample.")
@click.option("--template", type=click.Path(path_type=str), default=None, help="Aggregation prompt template file ({problem}, {candidates}).")
@click.option("--seed", type=Seed(), default=None, help="Make the run reproducible.  [default: random, recorded in the report]")
@click.option("--checkpoint", type=click.Path(path_type=str), default=None, help="Save after every round; re-run to resume.")
@click.option("--max-memory", type=MemorySize(), default=None, help="Cache budget for live sequences, e.g. 6GB; splits rounds into waves.")
@click.option("--report", "report_path", type=click.Path(path_type=str), default=None, help="Write the JSON report here.")
@click.option("--force", is_flag=True, help="Replace an existing --report file.")
@click.option("--threads", type=int, default=None, help="onnxruntime intra-op threads.")
@prefix_cache_option
@click.option("--quiet", is_flag=True, help="No progress bars.")
def solve(artifact, problem, preset, template, checkpoint, report_path, force, threads, prefix_cache, quiet, **settings):
    """Answer PROBLEM with Markovian RSA on the artifact folder ARTIFACT; prints the answer."""
    from zaya_edge.app.files import check_output, write_json_atomic

    try:
        strategy = _strategy(preset, template, settings)
        if report_path:
            check_output(report_path, None if force else "--force")
        if checkpoint:
            check_output(checkpoint)
        engine = _load_engine(artifact, threads, prefix_cache)
        result = _solve(strategy, engine, problem, checkpoint, quiet)
    except RequestError as exc:
        raise type(exc)(as_flags(str(exc), click.get_current_context().command)) from exc
    if report_path:
        write_json_atomic(report_path, {**result.report(), "prefix_cache": dataclasses.asdict(engine.prefix_cache.stats)})
    rate = f", {result.tokens_per_s:.1f} tok/s" if result.tokens_per_s else ""
    click.echo(f"{len(result.rounds)} round(s), {result.generated_tokens} tokens in {result.wall_s:.1f} s{rate}; "
               f"answer by {result.selected_by}" + (f"; report in {report_path}" if report_path else ""), err=True)
    _echo_prefix_cache(engine)
    click.echo(result.answer if result.answer is not None else "(no answer found)")


def _strategy(preset, template, settings):
    """The MarkovianRSA the flags describe: those given, over the preset (or the library's defaults)."""
    from zaya_edge.app.files import check_input
    from zaya_edge.runtime.rsa import MarkovianRSA, read_template

    given = {k: v for k, v in settings.items() if v is not None}
    if template:
        given["template"] = read_template(check_input(template, "--template"))
    return MarkovianRSA.preset(preset, **given) if preset else MarkovianRSA(**given)


def _solve(strategy, engine, problem, checkpoint, quiet):
    """Run the solve with a progress bar and a JSON checkpoint file; say how to resume if interrupted."""
    from zaya_edge.app.files import JsonCheckpoint
    from zaya_edge.runtime.rsa import SolveInterrupted

    progress = _Progress(checkpoint, strategy.rounds, quiet, getattr(engine, "max_batch", None))
    try:
        result = strategy.solve(engine, problem, on_progress=progress,
                                checkpoint=JsonCheckpoint(checkpoint) if checkpoint else None)
    except SolveInterrupted as exc:
        progress.close()
        where = (f"saved in {checkpoint}; re-run the same command to resume" if checkpoint
                 else "pass --checkpoint FILE to make a solve resumable")
        click.echo(f"interrupted after {exc.completed_rounds} completed round(s); {where}", err=True)
        raise
    finally:
        progress.close()
    if not progress.started and result.resumed_rounds:  # everything was in the checkpoint
        progress.resumed(result.resumed_rounds)
    return result


class _Progress:
    """The progress bar (unless --quiet), and a line when the first stage shows rounds came from a checkpoint."""

    def __init__(self, checkpoint, rounds: int, quiet: bool, max_batch: int | None):
        from zaya_edge.app.progress import ProgressBar

        self.checkpoint, self.rounds, self.started = checkpoint, rounds, False
        self.bar = None if quiet else ProgressBar(max_batch=max_batch)

    def __call__(self, p) -> None:
        if not self.started and p.stage > 0:
            self.resumed(p.stage)
        self.started = True
        if self.bar is not None:
            self.bar(p)

    def resumed(self, count: int) -> None:
        from zaya_edge.app.progress import rounds_done

        click.echo(f"resumed from {self.checkpoint}: {rounds_done(count, self.rounds)}", err=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _load_engine(artifact, threads, prefix_cache):
    try:
        from zaya_edge.runtime import Engine
    except ImportError as exc:
        raise ZayaEdgeError(f"the runtime engine is not available ({exc})") from None
    return Engine.load(artifact, threads=threads, prefix_cache=prefix_cache)


def _echo_prefix_cache(engine) -> None:
    line = prefix_cache_line(engine.prefix_cache)
    if line:
        click.echo(line, err=True)


def _limit_in_held_out_set(ctx, param, value):
    """Checked before the artifact loads, in the flag's own words (the library checks it too)."""
    if value is not None and not 1 <= value <= tiny_arith.HELD_OUT_SIZE:
        raise click.UsageError(f"--limit must be 1..{tiny_arith.HELD_OUT_SIZE} (the held-out set's size), got {value}")
    return value


def _eval_temperature_help() -> str:
    from zaya_edge.app.eval import GREEDY
    from zaya_edge.runtime.rsa import MarkovianRSA

    rsa = {f.name: f.default for f in dataclasses.fields(MarkovianRSA)}["temperature"]
    return f"[default: {GREEDY:g} (greedy) for single, {rsa:g} for rsa]"


@click.command("eval", cls=Command)
@click.argument("artifact", type=click.Path(path_type=str))
@click.option("--task", type=click.Choice(TASKS), default=TASKS[0], show_default=True,
              help="Held-out problem set (tiny-arith: the tiny reasoner's addition task).")
@click.option("--strategy", type=click.Choice(STRATEGIES), default="single", show_default=True,
              help="One sample per problem, or Markovian RSA (the rsa: flags).")
@click.option("--limit", type=int, default=None, callback=_limit_in_held_out_set, cls=LazyHelpOption,
              lazy_help=f"[default: all {tiny_arith.HELD_OUT_SIZE}]", help="Only the first N held-out problems.")
@click.option("--seed", type=Seed(), default=0, show_default=True, help="Sampling seed (per problem seeds derive from it).")
@click.option("--temperature", type=float, default=None, cls=LazyHelpOption, lazy_help=_eval_temperature_help,
              help="Sampling temperature.")
@click.option("--max-new-tokens", "budget", type=int, default=None, cls=LazyHelpOption,
              lazy_help=f"[default: the task's, {tiny_arith.BUDGET}]", help="Budget β per generation.")
@click.option("--population", type=int, default=8, show_default=True, help="rsa: N.")
@click.option("--subset", type=int, default=4, show_default=True, help="rsa: C.")
@click.option("--rounds", type=int, default=2, show_default=True, help="rsa: T.")
@click.option("--tail", type=int, default=None, cls=LazyHelpOption, lazy_help=f"[default: the task's, {tiny_arith.TAIL}]",
              help="rsa: τ in tokens.")
@click.option("--select", type=click.Choice(SELECTIONS), default="vote", show_default=True, help="rsa: final selection.")
@click.option("--threads", type=int, default=None,
              help="onnxruntime intra-op threads (--ray: per actor).  [default: all cores; --ray: a node's cores split among its actors]")
@click.option("--ray", "ray_address", is_flag=False, flag_value="", default=None, metavar="[ADDRESS]",
              help="rsa: run the problems on Ray actors, on a new local Ray instance or the cluster at ADDRESS (auto, HOST:6379).")
@click.option("--actors", type=int, default=None, help="--ray: engine actors.  [default: as many as the nodes' cores and memory fit]")
@click.option("--checkpoint-dir", type=click.Path(file_okay=False, path_type=str), default=None,
              help="--ray: keep every problem's rounds in this folder (on this machine); re-run to resume.")
@click.option("--json", "json_path", type=click.Path(path_type=str), default=None, help="Write per-problem results here.")
@prefix_cache_option
@click.option("--quiet", is_flag=True, help="No progress bar.")
def eval_(artifact, task, strategy, limit, seed, temperature, budget, threads, ray_address, actors, checkpoint_dir,
          json_path, prefix_cache, quiet, **rsa_settings):
    """Accuracy of the artifact folder ARTIFACT on a fixed held-out problem set."""
    from zaya_edge.app.eval import task_rsa
    from zaya_edge.app.files import check_output, write_json_atomic

    if json_path:
        check_output(json_path)
    sampling, rsa = dict(temperature=temperature, max_new_tokens=budget), None
    if strategy == "rsa":
        given = {k: v for k, v in dict(rsa_settings, budget=budget, temperature=temperature).items() if v is not None}
        sampling, rsa = {}, task_rsa(task, **given)
    if ray_address is not None:
        report = _eval_on_ray(artifact, task, rsa, limit, seed, ray_address, actors, threads, checkpoint_dir, quiet)
    elif actors is not None or checkpoint_dir is not None:
        raise ZayaEdgeError("--actors and --checkpoint-dir go with --ray")
    else:
        report = _eval_here(artifact, task, strategy, rsa, limit, seed, threads, prefix_cache, quiet, sampling)
    if json_path:
        write_json_atomic(json_path, report.to_dict())
    click.echo(report.summary())


def _eval_here(artifact, task, strategy, rsa, limit, seed, threads, prefix_cache, quiet, sampling):
    """One engine in this process, a progress bar per problem."""
    from zaya_edge.app.eval import evaluate
    from zaya_edge.app.progress import ProblemBar

    engine = _load_engine(artifact, threads, prefix_cache)
    bar = None if quiet else ProblemBar(f"{task} {strategy}")
    try:
        report = evaluate(engine, task, rsa, limit=limit, seed=seed, on_problem=bar, **sampling)
    finally:
        if bar is not None:
            bar.close()
    _echo_prefix_cache(engine)
    return report


def _eval_on_ray(artifact, task, rsa, limit, seed, address, actors, threads, checkpoint_dir, quiet):
    """--ray: the same report from a pool of Ray actors, one progress bar; say how to resume if interrupted."""
    from zaya_edge.app.distributed import ClusterBar, EvalInterrupted, evaluate_on_ray

    if rsa is None:
        raise ZayaEdgeError("--ray runs --strategy rsa (single sampling is one batched pass on one machine)")
    bar = None if quiet else ClusterBar(f"{task} rsa on ray")
    try:
        return evaluate_on_ray(artifact, task, rsa, limit=limit, seed=seed, address=address or None, actors=actors,
                               threads=threads, checkpoints=checkpoint_dir, on_progress=bar)
    except EvalInterrupted as exc:
        if bar is not None:
            bar.close()
        how = "re-run the same command to resume" if checkpoint_dir else "pass --checkpoint-dir DIR to make the run resumable"
        click.echo(f"interrupted with {exc.done}/{exc.total} problem(s) done; {how}", err=True)
        raise
    finally:
        if bar is not None:
            bar.close()
