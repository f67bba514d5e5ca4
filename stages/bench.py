"""DVC stages bench@<dataset>-<method> (bench_cls@... for classification; bench_mt@... for multi-teacher
methods): distill and evaluate one cell of the benchmark matrix."""

from distillery.cli import run_stage, stage_parser
from distillery.engine import distributed, steps
from distillery.utils.io import write_json

parser = stage_parser(__doc__)
parser.add_argument("--dataset", required=True, help="a key of params.yaml `data`")
parser.add_argument("--method", required=True, help="a key of params.yaml `methods`")


def main(args, params):
    cell = f"{args.dataset}-{args.method}"
    info = steps.distill(params, args.dataset, args.method, cell, progress=not args.no_progress)
    if not distributed.is_main():
        return
    metrics = steps.evaluate(params, args.dataset, args.method, cell, extra=info)
    write_json(f"metrics/bench/{cell}.json", {**steps.provenance(params, args.dataset, args.method), **metrics})
    print(f"{cell}: {steps.summary(metrics)}")


if __name__ == "__main__":
    run_stage(parser, main, distributed_stage=True)
