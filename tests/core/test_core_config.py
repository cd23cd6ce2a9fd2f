"""PruneConfig and recipes: frozen, validated at construction, round-tripping to dict and YAML."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

import modprune
from modprune import ConfigError, PruneConfig
from modprune.config import SCOPES
from modprune.recipes import recipe_from_file

VALID_KEYS = [f.name for f in dataclasses.fields(PruneConfig)]


def test_defaults_are_valid_and_resolved_by_the_pruner() -> None:
    cfg = PruneConfig()
    assert cfg.method == "unstructured" and cfg.target_kind is None  # the pruner's first kind, at prune time
    assert modprune.resolve_config(cfg).target_kind == "nonzero"
    assert modprune.resolve_config(PruneConfig(method="structured", importance="l2")).target_kind == "macs"


def test_config_is_frozen() -> None:
    cfg = PruneConfig(category_ratios={"conv": 0.5}, importance_options={"alpha": 0.5}, importance="l1l2")
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.target = 0.5  # type: ignore[misc]
    with pytest.raises(TypeError):
        cfg.category_ratios["conv"] = 0.9  # type: ignore[index]
    with pytest.raises(TypeError):
        cfg.importance_options["alpha"] = 0.9  # type: ignore[index]
    assert isinstance(cfg.protect, tuple)


def test_the_caller_dict_cannot_change_the_config() -> None:
    ratios = {"conv": 0.5}
    cfg = PruneConfig(category_ratios=ratios)
    ratios["conv"] = 0.9
    assert cfg.category_ratios["conv"] == 0.5


@pytest.mark.parametrize("value", [-0.1, 1.0, 1.5, float("nan"), float("inf"), -float("inf")])
@pytest.mark.parametrize("field", ["target", "category_ratios"])
def test_ratios_outside_0_1_are_refused(field: str, value: float) -> None:
    kwargs: dict[str, Any] = {"target": value} if field == "target" else {"category_ratios": {"conv": value}}
    with pytest.raises(ConfigError, match=field) as info:
        PruneConfig(**kwargs)
    assert isinstance(info.value, ValueError) and isinstance(info.value, modprune.ModpruneError)


@pytest.mark.parametrize("value", [0, 0.0, 0.5, 0.999])
def test_ratios_inside_0_1_are_accepted(value: float) -> None:
    assert PruneConfig(target=value, category_ratios={"conv": value}).target == value


@pytest.mark.parametrize(
    "kwargs",
    [
        {"target": "0.1"},
        {"target": True},
        {"target": None},
        {"method": 3},
        {"method": ""},
        {"importance": None},
        {"category_ratios": [0.5]},
        {"category_ratios": {3: 0.5}},
        {"category_ratios": {"conv": "half"}},
        {"importance_options": "alpha=0.5"},
        {"default_ratio": 1.5},
        {"protect": 3},
        {"protect": ["conv", 3]},
        {"scope": "everywhere"},
        {"scope": ["global"]},
        {"steps": 0},
        {"steps": 2.0},
        {"steps": True},
        {"seed": -1},
        {"seed": "1"},
        {"pruner_options": [("round_to", 8)]},
        {"max_ratio": 0},
        {"max_ratio": 1.5},
        {"target_kind": 3},
    ],
    ids=lambda kw: f"{next(iter(kw))}={next(iter(kw.values()))!r}",
)
def test_wrong_types_and_values_are_refused(kwargs: dict[str, Any]) -> None:
    field = next(iter(kwargs))
    with pytest.raises(ConfigError, match=field):
        PruneConfig(**kwargs)


@pytest.mark.parametrize(("method", "kind"), [("unstructured", "macs"), ("unstructured", "params"), ("structured", "nonzero")])
def test_target_kind_must_suit_the_method(method: str, kind: str) -> None:
    cfg = PruneConfig(method=method, target_kind=kind, importance="l2")  # the config cannot know the kinds
    valid = modprune.get_plugin_manager(entry_points=False).strategies.pruners.get(method).target_kinds
    with pytest.raises(ConfigError, match=f"target_kind '{kind}' is not valid for method '{method}'; valid: ") as info:
        modprune.resolve_config(cfg)
    assert all(k in str(info.value) for k in valid)


@pytest.mark.parametrize(
    ("method", "options", "match"),
    [
        ("unstructured", {"permanent": "yes"}, "permanent must be true or false"),
        ("unstructured", {"round_to": 8}, "unknown pruner_options round_to; valid: permanent"),
        ("structured", {"round_to": 0}, "round_to must be an integer in \\[1, 65536\\]"),
        ("structured", {"permanent": False}, "unknown pruner_options permanent; valid: round_to"),
        ("structured", {"portable": 1}, "portable must be true or false"),
    ],
)
def test_pruner_options_are_validated_by_the_pruner(method: str, options: dict[str, Any], match: str) -> None:
    cfg = PruneConfig(method=method, importance="l2", pruner_options=options)
    with pytest.raises(ConfigError, match=match):
        modprune.resolve_config(cfg)
    with pytest.raises(ConfigError, match=match):  # before anything changes
        modprune.prune(torch.nn.Linear(4, 4), cfg, torch.zeros(1, 4))


@pytest.mark.parametrize(("key", "value"), [("permanent", False), ("round_to", 8)])
def test_old_top_level_pruner_keys_load_with_a_deprecation_warning(key: str, value: Any) -> None:
    with pytest.warns(DeprecationWarning, match=f"{key}.*pruner_options"):
        cfg = PruneConfig.from_yaml(f"method: structured\n{key}: {str(value).lower()}\n")
    assert dict(cfg.pruner_options) == {key: value}
    assert key not in cfg.to_dict()
    with pytest.raises(ConfigError, match="both at top level and in pruner_options"):
        PruneConfig.from_dict({key: value, "pruner_options": {key: value}})


def test_protect_accepts_a_single_name_and_yaml_null() -> None:
    assert PruneConfig(protect="linear").protect == ("linear",)
    assert PruneConfig.from_dict({"protect": None}).protect == ()


def test_unknown_keys_list_the_valid_ones() -> None:
    with pytest.raises(ConfigError) as info:
        PruneConfig.from_dict({"target": 0.2, "tagret": 0.3, 7: 1})
    message = str(info.value)
    assert "tagret" in message and "7" in message
    for key in VALID_KEYS:
        assert key in message


@pytest.mark.parametrize("data", [[1, 2], "target: 0.1", 3, None])
def test_from_dict_needs_a_mapping(data: Any) -> None:
    with pytest.raises(ConfigError, match="mapping"):
        PruneConfig.from_dict(data)


@pytest.mark.parametrize("text", ["target: [0.1", "- 1\n- 2\n", "target: 0.1\ntarget2: 3\n", "{a: b}: c"])
def test_from_yaml_refuses_bad_yaml(text: str) -> None:
    with pytest.raises(ConfigError):
        PruneConfig.from_yaml(text)


@pytest.mark.parametrize(
    "cfg",
    [
        PruneConfig(),
        PruneConfig(
            target=0.37,
            importance="l1l2",
            importance_options={"alpha": 0.4},
            category_ratios={"conv": 0.8, "linear": 0.2},
            default_ratio=0.5,
            protect=("norm", "attention"),
            scope="category",
            steps=3,
            pruner_options={"permanent": False},
            max_ratio=0.9,
            seed=7,
        ),
        PruneConfig(method="structured", target=0.3, target_kind="params", pruner_options={"round_to": 8}, importance="l2"),
    ],
)
def test_round_trips(cfg: PruneConfig) -> None:
    assert PruneConfig.from_dict(cfg.to_dict()) == cfg
    assert PruneConfig.from_yaml(cfg.to_yaml()) == cfg
    assert dataclasses.replace(cfg) == cfg
    changed = dataclasses.replace(cfg, target=0.5)
    assert changed.target == 0.5 and changed.seed == cfg.seed
    plain = cfg.to_dict()
    assert all(isinstance(v, (str, int, float, bool, list, dict, type(None))) for v in plain.values())


def test_replace_validates() -> None:
    with pytest.raises(ConfigError, match="target"):
        dataclasses.replace(PruneConfig(), target=2)
    with pytest.raises(TypeError, match="targte"):
        dataclasses.replace(PruneConfig(), targte=0.2)


def test_ratio_for() -> None:
    cfg = PruneConfig(category_ratios={"conv": 0.5}, default_ratio=0.25, protect=("linear", "conv"))
    assert cfg.ratio_for("conv") == 0.0 and cfg.ratio_for("linear") == 0.0 and cfg.ratio_for("norm") == 0.25
    assert SCOPES == ("layer", "category", "global")


# --- checks that need the plugin manager happen at prune time, before anything changes ---------


@pytest.mark.parametrize("field", ["category_ratios", "protect"])
def test_unknown_categories_are_refused_at_prune_time(field: str, cnn: nn.Module) -> None:
    kwargs: dict[str, Any] = {"category_ratios": {"convv": 0.5}} if field == "category_ratios" else {"protect": ["convv"]}
    state = {k: v.clone() for k, v in cnn.state_dict().items()}
    with pytest.raises(ConfigError) as info:
        modprune.prune(cnn, PruneConfig(**kwargs))
    message = str(info.value)
    assert "convv" in message
    for category in modprune.valid_categories():
        assert category in message
    assert all(torch.equal(state[k], v) for k, v in cnn.state_dict().items())


def test_unknown_importance_options_are_refused_at_prune_time(cnn: nn.Module) -> None:
    with pytest.raises(ConfigError, match="alpha"):
        modprune.prune(cnn, PruneConfig(importance="l1", importance_options={"alpha": 0.5}))
    with pytest.raises(ConfigError, match="alpha"):
        modprune.prune(cnn, PruneConfig(importance="l1l2", importance_options={"alpha": 2}))


def test_importance_must_score_what_the_pruner_needs(cnn: nn.Module) -> None:
    with pytest.raises(ConfigError, match="does not score weights.*valid: .*l1"):
        modprune.prune(cnn, PruneConfig(importance="bn_scale"))


def test_prune_needs_a_module_and_a_config(cnn: nn.Module) -> None:
    with pytest.raises(modprune.ModpruneError, match="nn.Module"):
        modprune.prune("model.pt", PruneConfig())  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="PruneConfig"):
        modprune.prune(cnn, {"target": 0.1})  # type: ignore[arg-type]


# --- recipe files ----------------------------------------------------------------------------


def test_load_recipe_from_a_file(tmp_path: Path) -> None:
    path = tmp_path / "mine.yaml"
    path.write_text("name: mine\ndescription: test\nconfig:\n  target: 0.3\n  scope: global\n")
    cfg = modprune.load_recipe(str(path))
    assert cfg == PruneConfig(target=0.3, scope="global")
    bare = tmp_path / "bare.yml"
    bare.write_text("target: 0.2\n")
    assert modprune.load_recipe(bare).target == 0.2
    assert recipe_from_file(bare).name == "bare" and recipe_from_file(bare).finetune == {}


def test_a_recipe_carries_its_finetuning(tmp_path: Path) -> None:
    path = tmp_path / "deep.yaml"
    path.write_text("name: deep\nconfig: {target: 0.6}\nfinetune: {optimizer: SGD, lr0: 0.02, nominal_batch: 16}\n")
    recipe = modprune.find_recipe(path)
    assert recipe.finetune == {"optimizer": "SGD", "lr0": 0.02, "nominal_batch": 16} and recipe.config.target == 0.6
    with pytest.raises(TypeError):
        recipe.finetune["lr0"] = 1.0  # type: ignore[index]  # frozen like the config
    again = tmp_path / "again.yaml"
    again.write_text(recipe.to_yaml())
    assert recipe_from_file(again).finetune == recipe.finetune
    assert "finetune" not in modprune.find_recipe(tmp_path / "again.yaml").to_dict()["config"]
    plain = tmp_path / "plain.yaml"
    plain.write_text("name: plain\nconfig: {target: 0.2}\n")
    assert "finetune" not in recipe_from_file(plain).to_dict()  # no section written when there is none


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("config:\n  target: 2\n", "target"),
        ("config:\n  target: high\n", "target"),
        ("config:\n  tagret: 0.2\n", "tagret"),
        ("config: [1, 2]\n", "mapping"),
        ("- target: 0.2\n", "mapping"),
        ("name: x\nconfig: {}\nextra: 1\n", "extra"),
        ("name: [x]\nconfig: {}\n", "name"),
        ("name: x\ndescription: 3\nconfig: {}\n", "description"),
        ("config: {target: 0.2\n", "YAML"),
        ("config:\n  steps: 0\n", "steps"),
        ("config: {}\nfinetune: [SGD]\n", "finetune must be a mapping"),
        ("config: {}\nfinetune: {lr: 0.1}\n", r"unknown finetune keys \['lr'\]; valid: optimizer, lr0"),
        ("config: {}\nfinetune: {optimizer: SGD, lr0: -1}\n", "finetune lr0 must be a positive number"),
        ("config: {}\nfinetune: {optimizer: SGD, distill_weight: .inf}\n", "distill_weight must be a positive"),
        ("config: {}\nfinetune: {optimizer: 3}\n", "optimizer name"),
        ("config: {}\nfinetune: {lr0: 0.02}\n", "lr0 needs an optimizer other than 'auto'"),
        ("config: {}\nfinetune: {nominal_batch: 0}\n", "nominal_batch must be an integer >= 1, got 0"),
        ("config: {}\nfinetune: {nominal_batch: 16.5}\n", "nominal_batch must be an integer"),
    ],
)
def test_bad_recipe_files(tmp_path: Path, text: str, match: str) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=match) as info:
        modprune.load_recipe(path)
    assert "\n" not in str(info.value)


def test_recipe_paths_that_are_not_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        modprune.load_recipe(tmp_path / "missing.yaml")
    with pytest.raises(ConfigError, match="not a file"):
        modprune.load_recipe(str(tmp_path) + "/")
    png = tmp_path / "image.yaml"
    png.write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\xff\xfe")
    with pytest.raises(ConfigError, match="not valid YAML"):
        modprune.load_recipe(png)


def test_configs_hash_like_they_compare() -> None:
    a = PruneConfig(category_ratios={"conv": 0.5}, importance_options={"alpha": 0.5}, importance="l1l2")
    b = PruneConfig.from_yaml(a.to_yaml())
    assert a == b and hash(a) == hash(b)
    assert len({a, b, dataclasses.replace(a, target=0.3)}) == 2
