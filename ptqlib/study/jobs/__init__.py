"""The study's job kinds, one module each; `base` holds the interface every kind implements."""
from ptqlib.study.jobs.attack import AttackJob, GroupAttackJob
from ptqlib.study.jobs.base import FP32_LABEL, DataSpec, ModelJob, StudyJob, load_data
from ptqlib.study.jobs.extras import ControlJob, DPTrainJob, PruneJob
from ptqlib.study.jobs.query import QueryJob
from ptqlib.study.jobs.quantize import BNRetune, QuantizeJob
from ptqlib.study.jobs.train import TrainJob, model_seed

__all__ = ["AttackJob", "GroupAttackJob", "FP32_LABEL", "DataSpec", "ModelJob", "StudyJob", "load_data",
           "ControlJob", "DPTrainJob", "PruneJob", "QueryJob", "BNRetune", "QuantizeJob", "TrainJob", "model_seed"]
