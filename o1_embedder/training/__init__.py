"""Joint training: behaviour cloning + contrastive learning in one forward pass, LoRA, multi-process."""

from o1_embedder.training.collator import JointCollator
from o1_embedder.training.data import TrainingDataError, load_training_data, read_records, records_to_dataset
from o1_embedder.training.lora import add_lora, merge_lora
from o1_embedder.training.loss import CachedJointLoss, JointLoss
from o1_embedder.training.train import TrainConfig, TrainResult, train

__all__ = ["CachedJointLoss", "JointCollator", "JointLoss", "TrainConfig", "TrainResult", "TrainingDataError", "add_lora",
           "load_training_data", "merge_lora", "read_records", "records_to_dataset", "train"]
