"""LR: logistic regression on the linear (wide) part alone.

    logit = sum_f linear.table[ids[f]] + dense . linear.dense_w + bias
"""
from models.base import CTRModel


class LR(CTRModel):
    name = "lr"
    uses_embedding = False
