"""Datasets: a synthetic small-object (drone / sheep) detection set and YOLO dataset checks."""

from modprune.data.synth import DatasetSummary, check_dataset, dataset_images, generate_dataset

__all__ = ["DatasetSummary", "check_dataset", "dataset_images", "generate_dataset"]
