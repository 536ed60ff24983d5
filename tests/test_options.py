"""Every field of every method config and of recovery is held to its type, whichever front end filled it."""

from __future__ import annotations

import dataclasses

import pytest

from prunekit.errors import ParameterError
from prunekit.methods import RecoveryConfig, method_names, method_spec
from prunekit.options import checked_value

# The least each config needs to pass its own check.
VALID = {"extend": {"to_blocks": 8}, "liar": {"ratio": 0.2}, "recover": {}, "blocks": {"blocks": (1,)}}
BAD = {
    "text": "2",
    "fraction": 1.5,
    "nan": float("nan"),
    "infinity": float("inf"),
    "bool": True,
    "dict": {"a": 1},
}


def configs():
    out = [(name, method_spec(name).config_cls) for name in method_names() if name != "recover"]
    return out + [("recovery", RecoveryConfig)]


def valid(name, cls):
    return cls(**VALID.get(name, {"remove": 1} if "remove" in {f.name for f in dataclasses.fields(cls)} else {}))


def bad_values(annotation: str) -> list:
    kinds = {k.strip() for k in annotation.split("|")}
    out = [BAD["dict"], BAD["nan"] if kinds & {"int", "float"} else BAD["dict"]]
    if "str" not in kinds:
        out.append(BAD["text"])
    if kinds & {"int", "float"}:
        out += [BAD["infinity"], BAD["bool"]]
    if "int" in kinds and "float" not in kinds:
        out.append(BAD["fraction"])
    if "bool" in kinds:
        out.append(1)
    return out


CASES = [
    (name, cls, field.name, value)
    for name, cls in configs()
    for field in dataclasses.fields(cls)
    if "Config" not in str(field.type)
    for value in bad_values(str(field.type))
]


@pytest.mark.parametrize("name, cls", configs())
def test_the_valid_configs_pass_their_own_check(name, cls):
    valid(name, cls).check()


@pytest.mark.parametrize("name, cls, field, value", CASES, ids=[f"{n}.{f}={v!r}" for n, _, f, v in CASES])
def test_a_wrong_type_is_refused_naming_the_field(name, cls, field, value):
    config = dataclasses.replace(valid(name, cls), **{field: value})
    with pytest.raises(ParameterError) as refused:
        config.check()
    assert refused.value.parameter == field and "\n" not in str(refused.value)


def test_values_are_normalised_to_their_declared_types():
    assert checked_value("remove", "int | None", 2.0) == 2 and isinstance(checked_value("remove", "int | None", 2.0), int)
    assert checked_value("ratio", "float | None", 1) == 1.0 and checked_value("protect", "tuple[int, ...]", [1, 2]) == (1, 2)
    assert checked_value("damping", "float | str", "auto") == "auto" and checked_value("ratio", "float | None", None) is None
    with pytest.raises(ParameterError, match="must be a whole number, got 1.5"):
        checked_value("remove", "int | None", 1.5)
    with pytest.raises(ParameterError, match="must be a number, got the text '0.2'"):
        checked_value("ffn_ratio", "float | None", "0.2")


@pytest.mark.parametrize("value, message", [(-1, "at least 1"), (10**12, "smaller than the number of blocks")])
def test_counts_out_of_range_are_refused_with_the_range(value, message):
    from prunekit.methods.depth import blocks_to_remove

    with pytest.raises(ParameterError, match=message):
        blocks_to_remove(30, remove=value)
