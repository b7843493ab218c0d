"""bsstudy/config.py: one table of rules checks every non-probe setting; each rule rejects a bad value with the
full key named, and check_settings names an unknown key with the allowed ones."""

import pytest
from omegaconf import OmegaConf

from bsstudy import ConfigError
from bsstudy.config import GROUP_RULES, ROOT_RULES, TRAINER_RULES, Rule, check_config, check_settings

from conftest import compose_run

TABLES = {"": ROOT_RULES, "trainer": TRAINER_RULES, **GROUP_RULES}
EVERY_RULE = [(prefix, key) for prefix, rules in TABLES.items() for key in rules]


def bad_value(rule: Rule):
    """A value the rule refuses: of another kind, or just outside its range."""
    if rule.kind in ("int", "number") and rule.min is not None:
        return rule.min if rule.open_min else rule.min - 1
    return {"bool": "maybe", "choice": "not-a-choice", "str": 3}.get(rule.kind, "abc")


@pytest.mark.parametrize(("prefix", "key"), EVERY_RULE, ids=[f"{p}.{k}".strip(".") for p, k in EVERY_RULE])
def test_every_rule_rejects_a_bad_value_naming_the_full_key(tmp_path, prefix, key):
    full_key = f"{prefix}.{key}".strip(".")
    cfg = compose_run(tmp_path, ["data=synthetic", "optim=adam"])  # adam: optim.betas is a setting
    node = OmegaConf.select(cfg, prefix) if prefix else cfg
    OmegaConf.update(node, key, bad_value(TABLES[prefix][key]), force_add=True)
    with pytest.raises(ConfigError, match=rf"^{full_key} must be .*; got "):
        check_config(cfg)


def test_the_composed_defaults_pass(tmp_path):
    check_config(compose_run(tmp_path, []))


def test_check_settings_names_an_unknown_key_and_what_is_allowed_and_ignores_target():
    rules = {"every": Rule("int", min=1), "mode": Rule("choice", choices=("a", "b"))}
    check_settings(OmegaConf.create({"_target_": "x.Y", "every": 2}), rules, "probes.speed")
    with pytest.raises(ConfigError, match=r"^probes.speed.evry is not a setting; allowed: every, mode$"):
        check_settings(OmegaConf.create({"evry": 2}), rules, "probes.speed")
    with pytest.raises(ConfigError, match=r"^probes.speed.mode must be one of \['a', 'b'\]; got 'c'$"):
        check_settings(OmegaConf.create({"mode": "c"}), rules, "probes.speed")


@pytest.mark.parametrize(
    ("rule", "says"),
    [
        (Rule("int", min=1), "a positive integer"),
        (Rule("int", min=0), "an integer >= 0"),
        (Rule("number", min=0, max=1, open_max=True), "a number in [0, 1)"),
        (Rule("number", min=0, open_min=True, nullable=True), "null or a number > 0"),
        (Rule("list", each=Rule("int", min=1)), "a list of positive integers"),
        (Rule("bool"), "true or false"),
    ],
)
def test_a_rule_says_what_is_allowed_in_words(rule, says):
    assert rule.describe() == says


def test_a_misspelled_key_of_a_group_is_named(tmp_path):
    with pytest.raises(ConfigError, match=r"^optim.learning_rate is not a setting; allowed: name, lr, "):
        check_config(compose_run(tmp_path, ["+optim.learning_rate=0.1"]))
