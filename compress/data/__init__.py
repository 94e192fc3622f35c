"""Labelled photos for evaluation, calibration and training.

``folders`` finds them (labels.csv, ImageFolder incl. WordNet ids, flat folders, CIFAR-10)
and maps their classes to a model's; ``loaders`` turns them into batches: deterministic
subsets, the evaluation and scoring pools kept apart, decoded-tensor caches.
Callers use ``from compress import data as D`` and the names below.
"""
from compress.data.folders import (CIFAR10_CLASSES, IMAGE_EXTENSIONS, TORCHVISION_CIFAR10, WNID_FILE,  # noqa: F401
                                   ImageList, check_labels_fit, class_indices, download_cifar10, for_model,
                                   has_train_split, imagenet_wnids, open_labelled, open_training,
                                   resolve_cifar10, scan_folder)
from compress.data.loaders import (SCORING_POOL, EvalSets, ImageListDataset, TensorBatches,  # noqa: F401
                                   decode_to_tensor, eval_loader, eval_sets, has_labels, make_loader,
                                   open_rgb, scoring_pool_size, scoring_split, subset_indices, train_loader,
                                   train_split, count_training)
