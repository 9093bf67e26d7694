"""Benchmarks that print what they measured, run from the repository root.

    python -m benchmarks overhead            # MORSE over the plain backbone, dense experts
    python -m benchmarks overhead --only 2d  # one setting
    python -m benchmarks overhead --run RUN [RUN ..]  # + trained runs: their own slices or
                                             # window and whole test volume, per budget
    python -m benchmarks overhead --trained-only --run RUN2D RUN3D  # the trained rows only
    python -m benchmarks overhead --renderer expert_width=128 head_width=128  # other sizes
    python -m benchmarks chunked             # large-volume prediction, chunked vs not
    python -m benchmarks chunked --ct        # a CT-sized volume (512 x 512 x 300), chunked
    python -m benchmarks gpu [--dry]         # the GPU check: one JSON and a Markdown table
    python -m benchmarks margins RUN [RUN..] # flips vs coarse margin; adaptive vs fixed budget
    python -m benchmarks knobs RUN           # accuracy and time against the render budget
    python -m benchmarks flips RUN           # where rendering changed the label, right or wrong
    python -m benchmarks nnunet_compare DIR  # nnU-Net against nnU-Net with MORSE, on the demo

``--json`` prints the same figures for machines (overhead, chunked, margins).
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys

#: Experiments with their own command line (``python -m benchmarks NAME --help``).
SCRIPTS = {"knobs": "accuracy and prediction time of one trained run against the render budget",
           "flips": "where rendering changed the backbone's label, and whether for the better",
           "gpu": "the GPU check: it/s, peak memory and MORSE/plain ratios, 2D and 3D, fp32 and "
                  "bf16, and the CT-sized chunked row",
           "nnunet_compare": "nnU-Net against nnU-Net with MORSE (and a warm start), repeats"}


def _fields(parser: argparse.ArgumentParser, pairs: list[str]) -> dict[str, object]:
    """``FIELD=VALUE`` pairs, values read as YAML (``128`` is an int, ``fp32`` a string)."""
    import yaml

    fields = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not name:
            parser.error(f"--renderer {pair!r}: write FIELD=VALUE, e.g. expert_width=128")
        fields[name] = yaml.safe_load(value)
    return fields


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv and argv[0] in SCRIPTS:
        return importlib.import_module(f"benchmarks.{argv[0]}").main(argv[1:])
    parser = argparse.ArgumentParser(prog="python -m benchmarks")
    sub = parser.add_subparsers(dest="bench", required=True)
    for name, help in SCRIPTS.items():
        sub.add_parser(name, help=help, add_help=False)
    overhead = sub.add_parser("overhead", help="MORSE's cost over the plain backbone")
    overhead.add_argument("--only", choices=["2d", "3d"], action="append")
    overhead.add_argument("--device", default="cpu")
    overhead.add_argument("--repeats", type=int, default=5,
                          help="interleaved timed repeats per row (median and spread)")
    overhead.add_argument("--json", action="store_true", help="print JSON instead of a table")
    overhead.add_argument("--run", nargs="+", default=[], metavar="RUN",
                          help="trained runs (e.g. a 2D and a 3D one): each run's model on a "
                          "batch of its own test slices (3D: a window) and on its whole first "
                          "test volume, plain and with the calibrated, default and fixed "
                          "budgets (default: no trained rows; the volume row uses the demo "
                          "preset's data with untrained weights)")
    overhead.add_argument("--no-volume", action="store_true",
                          help="skip the whole-volume prediction rows")
    overhead.add_argument("--trained-only", action="store_true",
                          help="only the rows of the --run runs (no untrained 2D/3D rows)")
    overhead.add_argument("--renderer", nargs="+", default=[], metavar="FIELD=VALUE",
                          help="renderer options for the 2D/3D rows' MORSE models, e.g. "
                          "expert_width=128 head_width=128 (default: the paper's sizes)")
    chunked = sub.add_parser("chunked", help="peak memory and time of large-volume prediction")
    chunked.add_argument("--size", type=int, nargs=3, default=None,
                         help="volume size (default 256 256 160; --ct: 512 512 300)")
    chunked.add_argument("--ct", action="store_true",
                         help="a CT-sized volume, 512 x 512 x 300, chunked mode only unless "
                         "--modes says otherwise (the whole-volume pass of a CT needs tens of "
                         "GiB)")
    chunked.add_argument("--modes", nargs="+", choices=["chunked", "unchunked"], default=None,
                         help="modes to run (default: both; --ct: chunked)")
    chunked.add_argument("--device", default="cpu")
    chunked.add_argument("--json", action="store_true")
    margins = sub.add_parser("margins", help="label flips against the coarse margin, and the "
                             "adaptive budget's accuracy, on trained runs' validation subset")
    margins.add_argument("runs", nargs="+", help="run folders or checkpoints")
    margins.add_argument("--device", default="cpu")
    margins.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    if args.bench == "margins":
        from benchmarks.margins import budget_accuracy, flip_curve, format_margins, over_runs

        curves = [flip_curve(run, args.device) for run in args.runs]
        accuracy = [budget_accuracy(run, device=args.device) for run in args.runs]
        print(json.dumps({"curves": curves, "accuracy": accuracy,
                          "over_runs": over_runs(accuracy)}, indent=2) if args.json
              else format_margins(curves, accuracy))
        return 0
    if args.bench == "overhead":
        from benchmarks.overhead import format_rows, run_overhead
        from benchmarks.trained import format_trained, run_trained
        from benchmarks.volume import format_volume, run_volume

        if args.trained_only and not args.run:
            parser.error("--trained-only times the --run runs: give at least one")
        results = {} if args.trained_only else run_overhead(
            args.only or ["2d", "3d"], args.device, args.repeats,
            renderer_options=_fields(parser, args.renderer))
        trained = [run_trained(run, args.device, repeats=args.repeats) for run in args.run]
        volumes = [] if args.no_volume else [
            run_volume(run, args.device, repeats=args.repeats) for run in args.run or [None]]
        if args.json:
            flat: dict = {key: row for key, row in results.items()}
            if "2d" in results:
                flat.update({k: results["2d"][k] for k in (
                    "train_time_ratio", "train_memory_ratio", "infer_time_ratio",
                    "infer_time_ratio_fixed", "dense_experts_time_ratio")})
            flat.update(trained=trained, volume=volumes)
            print(json.dumps(flat, indent=2))
        else:
            blocks = ([format_rows(results)] if results else []) + [
                format_trained(row) for row in trained] + [format_volume(row) for row in volumes]
            print("\n".join(blocks))
        return 0
    from benchmarks.chunked import CT_SIZE, DEFAULT_SIZE, MODES, format_chunked, run_chunked

    size = args.size or (CT_SIZE if args.ct else DEFAULT_SIZE)
    modes = args.modes or (["chunked"] if args.ct else list(MODES))
    results = run_chunked(tuple(size), args.device, modes)
    print(json.dumps(results, indent=2) if args.json else format_chunked(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
