"""Helpers shared by the finetune plugin's test modules."""

from __future__ import annotations

import honing as hn
from honing.optimizers.kit.demos import labeled_demos


def labelled_teacher(student: hn.Module, trainset: list[hn.Example]) -> hn.Module:
    """The student with every training example as a demo, so a model that follows demos answers each one
    correctly.

    It scores choices without calibration: the transcript adapter caches calibration scores per LM object,
    so a calibrated teacher would make one call fewer in a second identical compile.
    """
    teacher = student.deepcopy()
    for predictor in teacher.predictors():
        predictor.demos = labeled_demos(predictor, trainset)
        predictor.decoding = "score"
    return teacher
