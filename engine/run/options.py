"""Click types for the entry points' numeric options: each range says what the option can mean,
so a bad value is refused with the option's name before anything runs (click's one-line usage error).
"""
import math

import click


class FiniteFloat(click.FloatRange):
    """A FloatRange that also refuses nan and inf (FloatRange lets nan through every bound)."""

    def convert(self, value, param, ctx):
        number = super().convert(value, param, ctx)
        if not math.isfinite(number):
            self.fail(f"{value!r} is not a finite number.", param, ctx)
        return number


POSITIVE_INT = click.IntRange(min=1)                          # --bs, --epoch, --log-every, --base-bs, ...
COUNT = click.IntRange(min=0)                                 # 0 means "off": --eval-every, --max-steps, ...
SEED = click.IntRange(min=0, max=2**63 - 1)                   # numpy's generators take non-negative seeds
NON_NEGATIVE = FiniteFloat(min=0.0)                           # --lr, --lr_embed, --l2, --clip, --bound, ...
PROBABILITY_BELOW_ONE = FiniteFloat(min=0.0, max=1.0, max_open=True)   # --dropout: 1 would zero the DNN
