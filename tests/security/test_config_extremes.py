"""Extreme configs (deep nesting, huge integers, huge seeds, non-string keys) end in a ConfigError,
never a RecursionError, OverflowError or TypeError."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from modprune.config import PruneConfig
from modprune.exceptions import ConfigError
from modprune.recipes import recipe_from_file


def _nested(depth: int) -> str:
    return "config:\n  importance_options:\n    a: " + "[" * depth + "]" * depth + "\n"


@pytest.mark.parametrize("depth", [40, 5000, 100_000])
def test_deeply_nested_recipe_yaml(tmp_path: Path, depth: int) -> None:
    path = tmp_path / "deep.yaml"
    path.write_text(_nested(depth))
    with pytest.raises(ConfigError, match="nested"):
        recipe_from_file(path)
    with pytest.raises(ConfigError, match="nested"):
        PruneConfig.from_yaml("importance_options:\n  a: " + "[" * depth + "]" * depth + "\n")


@pytest.mark.parametrize(
    "changes",
    [
        {"target": 10**400},
        {"target": -(10**400)},
        {"default_ratio": 10**400},
        {"max_ratio": 10**400},
        {"category_ratios": {"backbone": 10**400}},
        {"seed": 2**64},
        {"seed": 10**400},
        {"steps": 10**400},
        {"pruner_options": {"round_to": 10**400}, "method": "structured"},
        {"importance_options": {"alpha": 10**400}},
        {"importance_options": {"alpha": float("nan")}},
        {"importance_options": {1: 0.5}},
        {"importance_options": {("a", "b"): 0.5}},
        {"importance_options": {"alpha": object()}},
        {"category_ratios": {1: 0.5}},
        {"category_ratios": {None: 0.5}},
    ],
)
def test_extreme_values_are_config_errors(changes: dict) -> None:
    with pytest.raises(ConfigError):
        PruneConfig(**changes)


def test_largest_valid_seed_still_works() -> None:
    config = PruneConfig(seed=2**63 - 1)
    assert PruneConfig.from_yaml(config.to_yaml()) == config


_scalars = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=True), st.text(max_size=5))
_values = st.recursive(_scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=3),
    st.dictionaries(st.one_of(st.text(max_size=4), st.integers(), st.none()), inner, max_size=3)), max_leaves=30)
_fields = st.sampled_from(["method", "target", "target_kind", "importance", "importance_options", "category_ratios",
                           "default_ratio", "protect", "scope", "steps", "permanent", "round_to", "max_ratio", "seed"])


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.dictionaries(st.one_of(_fields, st.integers(), st.text(max_size=4)), _values, max_size=5))
def test_any_mapping_is_a_config_or_a_config_error(data: dict) -> None:
    try:
        config = PruneConfig.from_dict(data)
    except ConfigError:
        return
    hash(config)  # a valid config hashes and round-trips
    assert PruneConfig.from_yaml(config.to_yaml()) == config
