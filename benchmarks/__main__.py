"""Benchmarks that print what they measured, run from the repository root.

    python -m benchmarks overhead            # MORSE over the plain backbone, dense experts
    python -m benchmarks overhead --only 2d  # one setting
    python -m benchmarks overhead --run RUN  # + a trained run's model on its own slices
    python -m benchmarks overhead --renderer expert_width=128 head_width=128  # other sizes
    python -m benchmarks chunked             # large-volume prediction, chunked vs not
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
    overhead.add_argument("--run", help="trained run: its model on a batch of its own test "
                          "images, and for the whole-volume rows (default: no trained rows; "
                          "the volume rows use the demo preset's data with untrained weights)")
    overhead.add_argument("--no-volume", action="store_true",
                          help="skip the whole-volume prediction rows")
    overhead.add_argument("--renderer", nargs="+", default=[], metavar="FIELD=VALUE",
                          help="renderer options for the 2D/3D rows' MORSE models, e.g. "
                          "expert_width=128 head_width=128 (default: the paper's sizes)")
    chunked = sub.add_parser("chunked", help="peak memory and time of large-volume prediction")
    chunked.add_argument("--size", type=int, nargs=3, default=[256, 256, 160])
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

        results = run_overhead(args.only or ["2d", "3d"], args.device, args.repeats,
                               renderer_options=_fields(parser, args.renderer))
        trained = None if args.run is None else run_trained(args.run, args.device,
                                                             repeats=args.repeats)
        volume = None if args.no_volume else run_volume(args.run, args.device)
        if args.json:
            flat: dict = {key: row for key, row in results.items()}
            if "2d" in results:
                flat.update({k: results["2d"][k] for k in (
                    "train_time_ratio", "train_memory_ratio", "infer_time_ratio",
                    "infer_time_ratio_fixed", "dense_experts_time_ratio")})
            if trained is not None:
                flat["trained"] = trained
            if volume is not None:
                flat["volume"] = volume
            print(json.dumps(flat, indent=2))
        else:
            print(format_rows(results))
            if trained is not None:
                print(format_trained(trained))
            if volume is not None:
                print(format_volume(volume))
        return 0
    from benchmarks.chunked import format_chunked, run_chunked

    results = run_chunked(tuple(args.size), args.device)
    print(json.dumps(results, indent=2) if args.json else format_chunked(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
