"""DVC stage teacher@<dataset> (teacher_cls@<dataset>; extra_teacher@<dataset>-<name> with --teacher NAME):
train the teacher (retrieval: the gallery network, CE + triplet; classification: the classifier, CE), or import
it; checkpoint + metrics.

Import instead of training (retrieval): give the teacher group a `checkpoint` (params `teacher` or
`teachers.<name>`):
  checkpoint: pretrained     keep the architecture's own pretrained weights (pretrained: true; e.g. a
                             torchvision ImageNet model such as `resnet50`, descriptor = its pooled feature)
  checkpoint: /path/to.pt    an external state dict (bare, or under 'model' / 'state_dict'; 'module.' prefixes
                             are stripped) for the architecture named by `model`
Then `dvc repro extra_teacher@<dataset>-<name>` writes artifacts/<dataset>/teachers/<name>/teacher.pt like a
trained teacher (replacing the file at the same path needs `dvc repro --force` for that stage).
"""

from distillery.cli import run_stage, stage_parser
from distillery.engine import distributed, steps

parser = stage_parser(__doc__)
parser.add_argument("--dataset", required=True, help="a key of params.yaml `data`")
parser.add_argument("--teacher", default="teacher",
                    help="'teacher' (params `teacher`, the default) or a key of params.yaml `teachers`")


def main(args, params):
    metrics = steps.train_teacher(params, args.dataset, progress=not args.no_progress, name=args.teacher)
    if "top1" in metrics:
        print(f"teacher {args.dataset}: top-1 {metrics['top1']:.2f}, top-5 {metrics.get('top5', float('nan')):.2f}")
    elif distributed.is_main():
        score = ", ".join(f"{k} {metrics[k]:.2f}" for k in ("map", "recall_at_1", "map_medium", "map_hard")
                          if k in metrics)
        print(f"{args.teacher} {args.dataset}: {score}")


if __name__ == "__main__":
    run_stage(parser, main, distributed_stage=True)
