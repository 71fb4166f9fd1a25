"""The protobuf messages of the TAO 5 specs this project writes, as data (checked by tasks/detect/tao_schema.py).

Written by hand from the .proto files of NVIDIA/tao_tensorflow1_backend at the TAO 5.0 release
(d73dcfc, "TAO 5.0 Release - TF1"; unchanged at 2ec95cb); each message names its file, relative to
nvidia_tao_tf1/cv/. The TensorRT image (NVIDIA/tao_deploy 5.0, a285787) reads experiment.txt with its
own copies of the same files; they are identical except that its yolo_v3 TrainingConfig has no
`visualizer`, which the templates never set.

A message is (proto file, {field: type}, {oneof name: member fields}). A type is one of
    scalar   string | bool | uint32 | int32 | float | double
    enum     "enum A B C"                 the value names, in number order (0, 1, 2, ...)
    message  a key of MESSAGES            written `field { ... }`
with "repeated " in front for a repeated field, or "map<string, string>" / "map<string, float>" for a
proto map (written as repeated `field { key: "k" value: v }` entries).
"""

from __future__ import annotations

# Extra words for a field used where it does not exist: (spec kind, field) -> what to do instead.
HINTS = {
    ("yolo_v3", "validation_period_during_training"):
        "YOLOv3 evaluates every training_config.checkpoint_interval epochs; set that instead.",
}

# spec kind -> root message
ROOTS = {
    "ssd": "ssd/Experiment",
    "yolo_v3": "yolo_v3/Experiment",
    "dataset_convert": "detectnet_v2/DatasetExportConfig",  # ssd and yolo_v3 dataset_convert both read it
}

AP_MODE = "enum SAMPLE INTEGRATE"
# Tables two proto files share field for field (same names, types and order).
EVAL_FIELDS = {
    "average_precision_mode": AP_MODE,
    "batch_size": "uint32",
    "matching_iou_threshold": "float",
    "visualize_pr_curve": "bool",
}
LOAD_MODEL = {"load_model": ("resume_model_path", "pretrain_model_path", "pruned_model_path")}

MESSAGES: dict[str, tuple[str, dict[str, str], dict[str, tuple[str, ...]]]] = {
    # ------------------------------------------------------------------ SSD
    "ssd/Experiment": ("ssd/proto/experiment.proto", {
        "random_seed": "uint32",
        "dataset_config": "common/DatasetConfig",
        "augmentation_config": "ssd/AugmentationConfig",
        "training_config": "common/TrainingConfig",
        "eval_config": "ssd/EvalConfig",  # SSD's own EvalConfig (has validation_period_during_training)
        "nms_config": "common/NMSConfig",
        "ssd_config": "ssd/SSDConfig",
        "dssd_config": "ssd/SSDConfig",
    }, {"network": ("ssd_config", "dssd_config")}),
    "ssd/EvalConfig": ("ssd/proto/eval_config.proto",
                       {"validation_period_during_training": "uint32", **EVAL_FIELDS}, {}),
    "ssd/AugmentationConfig": ("ssd/proto/augmentation_config.proto", {
        "output_width": "int32", "output_height": "int32", "output_channel": "int32",
        "random_crop_min_scale": "float", "random_crop_max_scale": "float",
        "random_crop_min_ar": "float", "random_crop_max_ar": "float",
        "zoom_out_min_scale": "float", "zoom_out_max_scale": "float",
        "brightness": "int32", "contrast": "float", "saturation": "float", "hue": "int32",
        "random_flip": "float",
        "image_mean": "map<string, float>",
    }, {}),
    "ssd/SSDConfig": ("ssd/proto/ssd_config.proto", {
        "aspect_ratios": "string", "aspect_ratios_global": "string", "scales": "string",
        "min_scale": "float", "max_scale": "float",
        "two_boxes_for_ar1": "bool",
        "steps": "string",  # one string "[8, 16, ...]", not a repeated number
        "clip_boxes": "bool", "variances": "string", "offsets": "string", "mean_color": "string",
        "arch": "string", "nlayers": "uint32", "pred_num_channels": "uint32",
        "alpha": "float", "neg_pos_ratio": "float", "pos_iou_thresh": "float", "neg_iou_thresh": "float",
        "freeze_blocks": "repeated uint32",
        "freeze_bn": "bool",
    }, {}),
    # ------------------------------------------------------------------ YOLOv3
    "yolo_v3/Experiment": ("yolo_v3/proto/experiment.proto", {
        "dataset_config": "yolo_v3/YOLOv3DatasetConfig",
        "augmentation_config": "yolo_v3/AugmentationConfig",
        "training_config": "yolo_v3/TrainingConfig",
        "eval_config": "common/EvalConfig",  # the common EvalConfig: no validation_period_during_training
        "nms_config": "common/NMSConfig",
        "yolov3_config": "yolo_v3/YOLOv3Config",
        "random_seed": "uint32",
    }, {}),
    "yolo_v3/YOLOv3DatasetConfig": ("yolo_v3/proto/dataset_config.proto", {
        "data_sources": "repeated yolo_v3/YOLOv3DataSource",
        "target_class_mapping": "map<string, string>",
        "validation_fold": "uint32",
        "validation_data_sources": "repeated yolo_v3/YOLOv3DataSource",
        "include_difficult_in_training": "bool",
        "type": "string",
        "image_extension": "string",
        "is_monochrome": "bool",
    }, {}),
    "yolo_v3/YOLOv3DataSource": ("yolo_v3/proto/dataset_config.proto", {
        "label_directory_path": "string", "tfrecords_path": "string",
        "image_directory_path": "string", "root_path": "string", "source_weight": "float",
    }, {"labels_format": ("label_directory_path", "tfrecords_path")}),
    "yolo_v3/AugmentationConfig": ("yolo_v3/proto/augmentation_config.proto", {
        "hue": "float", "saturation": "float", "exposure": "float",
        "vertical_flip": "float", "horizontal_flip": "float", "jitter": "float",
        "output_width": "int32", "output_height": "int32", "output_channel": "int32",
        "output_depth": "uint32",
        "randomize_input_shape_period": "int32",
        "image_mean": "map<string, float>",
    }, {}),
    "yolo_v3/TrainingConfig": ("yolo_v3/proto/training_config.proto", {  # common's minus early_stopping, model_ema
        "batch_size_per_gpu": "uint32", "num_epochs": "uint32",
        "learning_rate": "common/LearningRateConfig",
        "regularizer": "common/RegularizerConfig",
        "optimizer": "common/OptimizerConfig",
        "cost_scaling": "common/CostScalingConfig",
        "checkpoint_interval": "uint32",  # YOLOv3 also validates every checkpoint_interval epochs
        "enable_qat": "bool",
        "resume_model_path": "string", "pretrain_model_path": "string", "pruned_model_path": "string",
        "max_queue_size": "uint32", "n_workers": "uint32", "use_multiprocessing": "bool",
        "visualizer": "common/VisualizerConfig",
    }, LOAD_MODEL),
    "yolo_v3/YOLOv3Config": ("yolo_v3/proto/yolov3_config.proto", {
        "big_anchor_shape": "string", "mid_anchor_shape": "string", "small_anchor_shape": "string",
        "matching_neutral_box_iou": "float",
        "arch": "string", "nlayers": "uint32", "arch_conv_blocks": "uint32",
        "loss_loc_weight": "float", "loss_neg_obj_weights": "float", "loss_class_weights": "float",
        "freeze_blocks": "repeated float",
        "freeze_bn": "bool", "force_relu": "bool",
    }, {}),
    # ------------------------------------------------------------------ common (both networks)
    "common/EvalConfig": ("common/proto/eval_config.proto", EVAL_FIELDS, {}),
    "common/NMSConfig": ("common/proto/nms_config.proto", {
        "confidence_threshold": "float", "clustering_iou_threshold": "float", "top_k": "uint32",
        "infer_nms_score_bits": "uint32", "force_on_cpu": "bool",
    }, {}),
    "common/DatasetConfig": ("common/proto/detection_sequence_dataset_config.proto", {
        "data_sources": "repeated common/DataSource",
        "target_class_mapping": "map<string, string>",
        "validation_data_sources": "repeated common/DataSource",
        "include_difficult_in_training": "bool",
        "type": "string",
    }, {}),
    "common/DataSource": ("common/proto/detection_sequence_dataset_config.proto", {
        "label_directory_path": "string", "image_directory_path": "string",
        "root_path": "string", "tfrecords_path": "string",
    }, {}),
    "common/TrainingConfig": ("common/proto/training_config.proto", {
        "batch_size_per_gpu": "uint32", "num_epochs": "uint32",
        "learning_rate": "common/LearningRateConfig",
        "regularizer": "common/RegularizerConfig",
        "optimizer": "common/OptimizerConfig",
        "cost_scaling": "common/CostScalingConfig",
        "checkpoint_interval": "uint32",
        "enable_qat": "bool",
        "resume_model_path": "string", "pretrain_model_path": "string", "pruned_model_path": "string",
        "max_queue_size": "uint32", "n_workers": "uint32", "use_multiprocessing": "bool",
        "early_stopping": "common/EarlyStopping",
        "visualizer": "common/VisualizerConfig",
        "model_ema": "bool",
    }, LOAD_MODEL),
    "common/EarlyStopping": ("common/proto/training_config.proto", {
        "monitor": "string", "min_delta": "float", "patience": "uint32",
    }, {}),
    "common/LearningRateConfig": ("common/proto/learning_rate_config.proto", {
        "soft_start_annealing_schedule": "common/SoftStartAnnealingScheduleConfig",
        "soft_start_cosine_annealing_schedule": "common/SoftStartCosineAnnealingScheduleConfig",
    }, {"learning_rate": ("soft_start_annealing_schedule", "soft_start_cosine_annealing_schedule")}),
    "common/SoftStartAnnealingScheduleConfig": ("common/proto/soft_start_annealing_schedule_config.proto", {
        "min_learning_rate": "float", "max_learning_rate": "float", "soft_start": "float", "annealing": "float",
    }, {}),
    "common/SoftStartCosineAnnealingScheduleConfig": ("common/proto/soft_start_cosine_annealing_schedule_config.proto", {
        "max_learning_rate": "float", "soft_start": "float", "min_learning_rate": "float",
    }, {}),
    "common/RegularizerConfig": ("common/proto/regularizer_config.proto", {
        "type": "enum NO_REG L1 L2",
        "weight": "float",
    }, {}),
    "common/OptimizerConfig": ("common/proto/optimizer_config.proto", {
        "adam": "common/AdamOptimizerConfig",
        "sgd": "common/SGDOptimizerConfig",
        "rmsprop": "common/RMSpropOptimizerConfig",
    }, {"optimizer": ("adam", "sgd", "rmsprop")}),
    "common/AdamOptimizerConfig": ("common/proto/adam_optimizer_config.proto", {
        "epsilon": "float", "beta1": "float", "beta2": "float", "amsgrad": "bool",
    }, {}),
    "common/SGDOptimizerConfig": ("common/proto/sgd_optimizer_config.proto", {
        "momentum": "float", "nesterov": "bool",
    }, {}),
    "common/RMSpropOptimizerConfig": ("common/proto/rmsprop_optimizer_config.proto", {
        "rho": "float", "momentum": "float", "epsilon": "float", "centered": "bool",
    }, {}),
    "common/CostScalingConfig": ("common/proto/cost_scaling_config.proto", {
        "enabled": "bool", "initial_exponent": "double", "increment": "double", "decrement": "double",
    }, {}),
    "common/VisualizerConfig": ("common/proto/visualizer_config.proto", {
        "enabled": "bool", "num_images": "uint32", "weight_histograms": "bool",
        "wandb_config": "common/WandBConfig",
        "clearml_config": "common/ClearMLConfig",
    }, {}),
    "common/WandBConfig": ("common/proto/wandb_config.proto", {
        "enabled": "bool", "key": "string", "project": "string", "entity": "string", "reinit": "bool",
        "name": "string", "tags": "repeated string", "wandb_dir": "string", "notes": "string",
        "mode": "enum ONLINE OFFLINE DISABLED",
    }, {}),
    "common/ClearMLConfig": ("common/proto/clearml_config.proto", {
        "project": "string", "task": "string", "tags": "repeated string",
        "reuse_last_task_id": "bool", "continue_last_task": "bool", "deferred_init": "bool",
    }, {}),
    # ------------------------------------------------------------------ dataset_convert
    "detectnet_v2/DatasetExportConfig": ("detectnet_v2/proto/dataset_export_config.proto", {
        "coco_config": "detectnet_v2/COCOConfig",
        "kitti_config": "detectnet_v2/KITTIConfig",
        "sample_modifier_config": "detectnet_v2/SampleModifierConfig",
        "image_directory_path": "string",
        "target_class_mapping": "map<string, string>",
    }, {"convert_config_type": ("coco_config", "kitti_config")}),
    "detectnet_v2/SampleModifierConfig": ("detectnet_v2/proto/dataset_export_config.proto", {
        "filter_samples_containing_only": "repeated string",
        "dominant_target_classes": "repeated string",
        "minimum_target_class_imbalance": "map<string, float>",
        "num_duplicates": "uint32",
        "max_training_samples": "uint32",
        "source_to_target_class_mapping": "map<string, string>",
    }, {}),
    "detectnet_v2/KITTIConfig": ("detectnet_v2/proto/kitti_config.proto", {
        "root_directory_path": "string", "image_dir_name": "string", "label_dir_name": "string",
        "point_clouds_dir": "string", "calibrations_dir": "string", "kitti_sequence_to_frames_file": "string",
        "image_extension": "string",
        "num_partitions": "uint32", "num_shards": "uint32",
        "partition_mode": "string",
        "val_split": "float",
    }, {}),
    "detectnet_v2/COCOConfig": ("detectnet_v2/proto/coco_config.proto", {
        "root_directory_path": "string",
        "img_dir_names": "repeated string",
        "annotation_files": "repeated string",
        "num_partitions": "uint32",
        "num_shards": "repeated uint32",
    }, {}),
}
