"""The configuration's rules are data (lab/rules.yaml) and its reference is generated from them:
the file in docs/ is what the generator prints, every rule names a key Pulumi.yaml has, and the
one checker refuses what a rule refuses. Pure."""

from __future__ import annotations

import pytest

from hypervisor import reference
from lab.config import key_rules, project_schema, read_spec


def test_the_reference_in_docs_is_what_the_generator_prints():
    assert reference.OUT.read_text() == reference.reference(), "run: python3 -m hypervisor.reference --write"


def test_every_rule_is_of_a_key_pulumi_yaml_declares_with_a_type_it_fits():
    schema = project_schema()
    for key, rule in key_rules().items():
        assert key in schema, key
        kind = schema[key]["type"]
        assert ("min" in rule or "max" in rule) <= (kind == "integer"), key
        assert ("format" in rule or "choices" in rule) <= (kind == "string"), key
        assert "why" in rule or not ("min" in rule or "max" in rule), f"{key}: a bound says why"


@pytest.mark.parametrize("key", [k for k, r in key_rules().items() if "min" in r or "max" in r or "choices" in r])
def test_the_checker_refuses_just_past_each_rule(key):
    rule = key_rules()[key]
    bad = (
        ["not-a-choice"]
        if "choices" in rule
        else [v for v in (rule.get("min", 0) - 1, rule.get("max")) if v is not None]
    )
    for value in bad:
        value = value + 1 if value == rule.get("max") else value
        _, problems = read_spec({key: value})
        assert key in {p.key for p in problems}, (key, value, problems)
    _, problems = read_spec({})  # every default within its rule (the seed's values)
    assert key not in {p.key for p in problems}, problems
