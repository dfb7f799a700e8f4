"""`dtk prove`: which modules work on which kernels — built, predicted and proven."""
