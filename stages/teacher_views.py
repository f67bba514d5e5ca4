"""DVC stage teacher_views@<dataset>: run the frozen teacher once on V recorded views of every training image."""

from distillery.cli import run_stage, stage_parser
from distillery.engine import steps

parser = stage_parser(__doc__)
parser.add_argument("--dataset", required=True, help="a key of params.yaml `data`")


def main(args, params):
    meta = steps.teacher_views(params, args.dataset, progress=not args.no_progress)
    print(f"teacher views {args.dataset}: V={meta['views']}, {meta['bytes'] / 2**20:.1f} MiB in {meta['build_seconds']} s")


if __name__ == "__main__":
    run_stage(parser, main)
