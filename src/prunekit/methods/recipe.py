"""Recipes: a list of stages run in order, from Python or from a YAML/JSON file.

A stage is a method config, a method name, or a mapping: `{method: shortgpt, remove: 4}` or
`{recover: {tokens: 200000}}` (shorthand for `{method: recover, tokens: 200000}`).
"""

from __future__ import annotations

import dataclasses
import reprlib
from pathlib import Path

from prunekit.errors import ParameterError, PrunekitError
from prunekit.jsonfiles import MAX_JSON_DEPTH, loads_limited
from prunekit.methods.registry import config_from_options, spec_for_config


def _stage_config(stage, position: int):
    where = f" (recipe stage {position})"
    if dataclasses.is_dataclass(stage) and not isinstance(stage, type):
        spec_for_config(stage)
        return stage
    if isinstance(stage, str):
        return config_from_options(stage, {}, where)
    if not isinstance(stage, dict):
        raise ParameterError("recipe", f"stage {position} is {type(stage).__name__}; give a config, a method name or a mapping")
    if "method" in stage:
        options = {k: v for k, v in stage.items() if k != "method"}
        return config_from_options(stage["method"], options, where)
    if len(stage) == 1:
        ((name, options),) = stage.items()
        if isinstance(options, dict):
            return config_from_options(name, options, where)
    raise ParameterError("recipe", f"stage {position} {reprlib.repr(stage)} needs a 'method' key (or one key naming the method)")


MAX_RECIPE_BYTES = 1 << 20


def _yaml_without_aliases(text: str, path: Path):
    """safe_load, refusing anchors and aliases first (a recipe needs none; they allow self-reference and
    exponential expansion) and nesting deeper than JSON inputs may."""
    import yaml

    depth = 0
    for event in yaml.parse(text, Loader=yaml.SafeLoader):
        if isinstance(event, yaml.AliasEvent) or getattr(event, "anchor", None):
            raise PrunekitError(f"recipe {path} uses a YAML anchor or alias (&, *); write each stage out in full")
        if isinstance(event, (yaml.MappingStartEvent, yaml.SequenceStartEvent)):
            depth += 1
            if depth > MAX_JSON_DEPTH:
                raise PrunekitError(f"recipe {path} nests deeper than {MAX_JSON_DEPTH} levels; a recipe is a list of flat stages")
        elif isinstance(event, (yaml.MappingEndEvent, yaml.SequenceEndEvent)):
            depth -= 1
    return yaml.safe_load(text)


def read_recipe_file(path: str | Path) -> list:
    """The stages listed in a .yaml/.yml/.json file (a list, or a mapping with a `stages` list)."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise PrunekitError(f"recipe {path} does not exist; pass a .yaml or .json file listing the stages")
    if path.stat().st_size > MAX_RECIPE_BYTES:
        raise PrunekitError(
            f"recipe {path} is {path.stat().st_size:,} bytes; a recipe lists a few stages (at most {MAX_RECIPE_BYTES:,} bytes)"
        )
    try:
        text = path.read_text(encoding="utf-8")
        if path.suffix in (".yaml", ".yml"):
            data = _yaml_without_aliases(text, path)
        else:
            data = loads_limited(text, f"recipe {path}")
    except PrunekitError:
        raise
    except RecursionError:
        raise PrunekitError(f"recipe {path} nests too deeply; a recipe is a list of flat stages") from None
    except (ValueError, UnicodeDecodeError) as error:
        raise PrunekitError(
            f"recipe {path} is not valid {'YAML' if path.suffix in ('.yaml', '.yml') else 'JSON'}: {str(error).splitlines()[0]}"
        ) from None
    except Exception as error:  # yaml.YAMLError without importing yaml at module level
        raise PrunekitError(f"recipe {path} is not valid YAML: {str(error).splitlines()[0]}") from None
    if isinstance(data, dict) and "stages" in data:
        data = data["stages"]
    if not isinstance(data, list) or not data:
        raise PrunekitError(f"recipe {path} must hold a non-empty list of stages (or a mapping with a 'stages' list)")
    return data


def recipe_configs(recipe) -> list:
    """The checked configs of a recipe: a list of stages, or the path of a recipe file."""
    if isinstance(recipe, (str, Path)) and Path(recipe).suffix in (".yaml", ".yml", ".json"):
        recipe = read_recipe_file(recipe)
    if not isinstance(recipe, (list, tuple)) or not recipe:
        raise ParameterError("recipe", "must be a non-empty list of stages")
    configs = [_stage_config(stage, i + 1) for i, stage in enumerate(recipe)]
    for config in configs:
        config.check()
    return configs
