"""Face-mask detection data: one internal form (images + absolute-pixel boxes), COCO `dataset.json` as the
interchange, readers for PASCAL VOC / YOLO / COCO / CreateML, validation, split, balance, KITTI/COCO export,
and the synthetic demo generator.
"""
