"""Face-mask detection pipeline: prepare -> split -> balance -> export -> (torch | tao) train/infer -> score."""
