"""Joint training: behaviour cloning + contrastive learning in one forward pass, LoRA, multi-process."""

from o1_embedder.training.collator import JointCollator
from o1_embedder.training.data import TrainingDataError, load_training_data, read_records, records_to_dataset
from o1_embedder.training.evaluator import HeldOutEvaluator, heldout_evaluator
from o1_embedder.training.lora import add_lora, merge_lora, save_adapter
from o1_embedder.training.loss import CachedJointLoss, JointLoss
from o1_embedder.training.train import TrainConfig, TrainResult, train
from o1_embedder.training.trainer import JointTrainer, NonFiniteLossError, QueryFirstDataCollator

__all__ = ["CachedJointLoss", "HeldOutEvaluator", "JointCollator", "JointLoss", "JointTrainer", "NonFiniteLossError",
           "QueryFirstDataCollator", "TrainConfig", "TrainResult", "TrainingDataError", "add_lora", "heldout_evaluator",
           "load_training_data", "merge_lora", "read_records", "records_to_dataset", "save_adapter", "train"]
