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
POSITIVE = FiniteFloat(min=0.0, min_open=True)                # --budget-s, a time or a size above zero


class CommaList(click.ParamType):
    """A comma-separated list, each item converted by `item` (a click type): '1024,4096' -> (1024, 4096).
    A bad item is refused naming the item, as click refuses a bad single value."""

    name = "list"

    def __init__(self, item: click.ParamType, choices: tuple | None = None):
        self.item, self.choices = item, choices

    def convert(self, value, param, ctx):
        if isinstance(value, tuple):
            return value
        items = [x.strip() for x in str(value).split(",") if x.strip()]
        if not items:
            self.fail(f"{value!r} holds no items; give a comma-separated list.", param, ctx)
        out = tuple(self.item.convert(x, param, ctx) for x in items)
        if self.choices is not None:
            unknown = [x for x in out if x not in self.choices]
            if unknown:
                self.fail(f"{', '.join(map(str, unknown))}: not among {', '.join(self.choices)}.", param, ctx)
        return out
