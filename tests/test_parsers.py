"""Property tests of the parsers that read what a user types: a recipe, a method option, a task order, a method
list, the run settings. Each either gives a valid value or a UserError, never another exception."""

from __future__ import annotations

import math
from types import SimpleNamespace

from hypothesis import given, settings
from hypothesis import strategies as st

from assocgan.config import make_config
from assocgan.data.benchmarks import apply_order
from assocgan.data.degradations import KINDS, parse_recipe
from assocgan.errors import UserError
from assocgan.methods import METHODS, parse_methods
from assocgan.methods.base import Option

FAST = settings(deadline=None) if settings().max_examples > 1000 else settings(max_examples=150, deadline=None)
TEXT = st.text(alphabet=st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=40)
NUMBERISH = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.integers(-(10**6), 10**6).map(str),
    TEXT,
    st.sampled_from(["nan", "inf", "-inf", "1e400", "", " ", "0x10", "1_000", "٣"]),
)


@st.composite
def recipes(draw):
    """A valid recipe and the steps it stands for."""
    tasks = []
    for _ in range(draw(st.integers(1, 4))):
        steps = []
        for _ in range(draw(st.integers(1, 3))):
            kind = draw(st.sampled_from(sorted(KINDS)))
            degree = draw(st.floats(KINDS[kind].low, KINDS[kind].high, allow_nan=False))
            steps.append((kind, degree))
        tasks.append(steps)
    text = ",".join("+".join(f"{k}:{d!r}" for k, d in steps) for steps in tasks)
    return text, tasks


@FAST
@given(recipes())
def test_valid_recipes_parse_to_their_steps(recipe):
    text, tasks = recipe
    parsed = parse_recipe(text)
    assert [list(d.steps) for d in parsed] == [[(k, d) for k, d in steps] for steps in tasks]


@FAST
@given(
    st.one_of(TEXT, recipes().map(lambda r: r[0] + "," + r[0][::-1]), st.lists(st.sampled_from([*KINDS, ":", ",", "+", "1", "0.5", "nan", " "])).map("".join))
)
def test_any_recipe_text_parses_or_is_refused(text):
    try:
        parsed = parse_recipe(text)
    except UserError as e:
        assert "--recipe" in str(e) and "\n" not in str(e)
        return
    assert len(parsed) == text.count(",") + 1
    for d in parsed:
        for kind, degree in d.steps:
            assert kind in KINDS and KINDS[kind].low <= degree <= KINDS[kind].high


BOUNDED = [
    Option("w", 1.0, "", low=0),
    Option("lr", 1e-3, "", low=0, open_low=True),
    Option("share", 0.5, "", low=0, high=1),
    Option("n", 4, "", low=1),
    Option("free", -1.0, "", high=1),
]


@FAST
@given(st.sampled_from(BOUNDED), NUMBERISH)
def test_numeric_options_give_a_number_in_bounds_or_refuse(option, text):
    try:
        value = option.parse(text)
    except UserError as e:
        assert str(e).startswith(option.flag) and "\n" not in str(e)
        return
    assert type(value) is type(option.default) and math.isfinite(value)
    assert option.low is None or (value > option.low if option.open_low else value >= option.low)
    assert option.high is None or value <= option.high


@FAST
@given(TEXT)
def test_boolean_options_take_yes_and_no_words_only(text):
    option = Option("flag", True, "")
    words = {"1": True, "true": True, "yes": True, "on": True, "0": False, "false": False, "no": False, "off": False}
    try:
        value = option.parse(text)
    except UserError:
        assert text.lower() not in words
        return
    assert value is words[text.lower()]


@FAST
@given(st.sampled_from(list(METHODS.values())), st.data())
def test_every_declared_option_parses_its_own_default_and_refuses_or_bounds_the_rest(cls, data):
    for option in cls.options:
        assert option.parse(str(option.default)) == option.default
        text = data.draw(NUMBERISH)
        try:
            value = option.parse(text)
        except UserError:
            continue
        if isinstance(value, float):
            assert math.isfinite(value)


NAMES = ["noise", "impulse", "oversharpen", "blur"]
TASKS = [SimpleNamespace(name=n) for n in NAMES]


@FAST
@given(st.lists(st.integers(0, 3), min_size=1, max_size=4, unique=True), st.lists(st.booleans(), min_size=4, max_size=4))
def test_orders_of_names_or_positions(picks, by_name):
    spec = ",".join(NAMES[i] if by_name[k] else str(i + 1) for k, i in enumerate(picks))
    assert [t.name for t in apply_order(TASKS, spec)] == [NAMES[i] for i in picks]


@FAST
@given(st.one_of(TEXT, st.lists(st.sampled_from([*NAMES, "1", "2", "5", "0", ",", " "])).map(",".join)))
def test_any_order_text_orders_or_is_refused(text):
    try:
        tasks = apply_order(TASKS, text)
    except UserError as e:
        assert str(e).startswith("--order")
        return
    names = [t.name for t in tasks]
    assert len(set(names)) == len(names) and set(names) <= set(NAMES)


@FAST
@given(st.one_of(TEXT, st.lists(st.sampled_from([*METHODS, "TL", "x", "", " "])).map(",".join)))
def test_any_method_list_names_known_methods_or_is_refused(text):
    try:
        names = parse_methods(text)
    except UserError as e:
        assert str(e).startswith("--methods")
        return
    assert names and len(set(names)) == len(names) and all(n in METHODS for n in names)


@FAST
@given(st.floats(allow_nan=True, allow_infinity=True), st.floats(allow_nan=True, allow_infinity=True), st.integers(-5, 2000))
def test_run_settings_are_valid_or_refused(lr, beta1, threads):
    try:
        cfg = make_config("smoke", lr=lr, beta1=beta1, threads=threads)
    except UserError as e:
        assert str(e).startswith("--") and "\n" not in str(e)
        return
    assert math.isfinite(cfg.lr) and cfg.lr > 0 and 0 <= cfg.beta1 < 1 and 0 <= cfg.threads <= 1024
