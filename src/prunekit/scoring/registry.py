"""Scorers registered by name: what the block-metric and channel-criterion registries share."""

from __future__ import annotations

from prunekit.errors import ParameterError, PrunekitError


class ScorerRegistry:
    """Instances of one scorer class, by their `name`; an unknown name gets one line listing the known ones."""

    def __init__(self, kind: type, noun: str, parameter: str):
        self.kind, self.noun, self.parameter = kind, noun, parameter
        self.entries: dict[str, object] = {}

    def register(self, scorer):
        if not isinstance(scorer, self.kind) or not scorer.name:
            raise PrunekitError(f"a {self.noun} is a {self.kind.__name__} instance with a name")
        self.entries[scorer.name] = scorer
        return scorer

    def names(self) -> list[str]:
        return list(self.entries)

    def get(self, name: str, parameter: str | None = None):
        if not isinstance(name, str) or name not in self.entries:
            raise ParameterError(parameter or self.parameter, f"'{name}' is unknown; choose one of {', '.join(self.entries)}")
        return self.entries[name]
