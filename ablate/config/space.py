"""One searched hyperparameter of a search space: a float or int range (optionally log-scaled)
or a categorical, and the config paths its value is written to."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, model_validator

from ablate.config.networks import Strict


class Param(Strict):
    """One searched hyperparameter."""

    type: Literal["float", "int", "categorical"]
    low: float | None = Field(None, description="lower bound (float/int), inclusive")
    high: float | None = Field(None, description="upper bound (float/int), inclusive")
    log: bool = Field(False, description="sample uniformly in log space (needs low > 0)")
    choices: list[bool | int | float | str | None] | None = Field(
        None, description="values of a categorical (Optuna needs plain scalars)")
    paths: list[str] | None = Field(None, description="config paths set to this value "
                                    "(default: the key itself), e.g. both push temperatures")

    @model_validator(mode="after")
    def _bounds(self) -> Param:
        if self.type == "categorical":
            if not self.choices:
                raise ValueError("a categorical needs a non-empty `choices` list")
            if self.low is not None or self.high is not None or self.log:
                raise ValueError("a categorical takes `choices`, not low/high/log")
            return self
        if self.low is None or self.high is None:
            raise ValueError(f"a {self.type} needs `low` and `high`")
        if self.choices is not None:
            raise ValueError(f"a {self.type} takes low/high, not `choices`")
        if self.low > self.high:
            raise ValueError(f"low={self.low} > high={self.high}")
        if self.log and self.low <= 0:
            raise ValueError(f"log=true needs low > 0, got low={self.low}")
        if self.type == "int" and (self.low != int(self.low) or self.high != int(self.high)):
            raise ValueError("an int range needs integer low and high")
        return self

    def contains(self, value: Any) -> bool:
        if self.type == "categorical":
            return value in (self.choices or [])
        if isinstance(value, bool) or not isinstance(value, int | float):
            return False
        ok_type = self.type == "float" or float(value).is_integer()
        return ok_type and (self.low or 0) <= value <= (self.high or 0)

    def corners(self) -> list[Any]:
        """Extreme values, used to validate the space against the config model."""
        if self.type == "categorical":
            return list(self.choices or [])
        cast = int if self.type == "int" else float
        return [cast(self.low), cast(self.high)]


