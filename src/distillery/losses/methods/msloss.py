"""MS-loss baseline: the student trained alone with a DML task loss (multi-similarity by default), no
distillation term: the plain baseline that S2SD is compared with."""

from distillery.losses.dml.criteria import check_criterion
from distillery.losses.methods.vanilla import Vanilla
from distillery.losses.registry import register_method


@register_method("msloss")
class MSLoss(Vanilla):
    """Vanilla whose task loss is ``task_loss`` (a DML criterion name) instead of ``training.task_loss``, so that
    a benchmark sharing one ``training`` group still gets a multi-similarity baseline row."""

    def __init__(self, task_loss: str = "multisimilarity"):
        super().__init__()
        self.task_loss = check_criterion(task_loss, "msloss task_loss")
