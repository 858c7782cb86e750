"""Scaling laws: a sweep of transformer sizes on one tokenizer and one dataset (`nextscale scaling run`), power
laws fitted against parameters and compute (`fit`), and the paper's Fig. 5 and 6 (`plots`)."""

from .fit import PowerLaw, fit_power_law, fit_with_irreducible, pareto_frontier

__all__ = ["PowerLaw", "fit_power_law", "fit_with_irreducible", "pareto_frontier"]
