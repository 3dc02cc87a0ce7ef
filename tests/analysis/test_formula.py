import numpy as np
import pandas as pd
import pytest

from analysis.formula import build_design, lme4_name, parse_formula


def test_parse_crossed():
    p = parse_formula("correct ~ basis * layer + (1 | participant) + (1 | unit)")
    assert p.response == "correct"
    assert p.fixed == "basis * layer"
    assert [(r.expr, r.group) for r in p.random] == [("1", "participant"), ("1", "unit")]


def test_parse_slopes_nested_and_double_bar():
    assert [(r.expr, r.group) for r in parse_formula("y ~ x + (x | g)").random] == [("x", "g")]
    assert [r.group for r in parse_formula("y ~ 1 + (1 | a/b)").random] == ["a", "a:b"]
    assert [(r.expr, r.group) for r in parse_formula("y ~ x + (x || g)").random] == [
        ("1", "g"), ("0 + x", "g")]
    with pytest.raises(ValueError):
        parse_formula("y ~ (1 | g")


def test_lme4_names():
    assert lme4_name("Intercept") == "(Intercept)"
    assert lme4_name("basis[T.pca]:layer[T.conv3]") == "basispca:layerconv3"


def test_design_columns_and_interaction_names():
    d = pd.DataFrame({"correct": [1, 0, 1, 0, 1, 1],
                      "basis": ["neuron", "pca"] * 3,
                      "layer": ["conv1", "conv1", "conv3", "conv3", "conv1", "conv3"],
                      "participant": list("aabbcc"), "unit": list("uvuvuv")})
    des = build_design("correct ~ basis * layer + (1 | participant) + (1 | unit)", d)
    assert des.fixed_names == ["(Intercept)", "basispca", "layerconv3", "basispca:layerconv3"]
    assert des.q == 5 and des.Z().shape == (6, 5)
    assert np.allclose(des.Z().sum(axis=1), 2)


def test_missing_rows_dropped_and_missing_column_error():
    d = pd.DataFrame({"y": [1.0, np.nan, 3.0, 4.0], "g": list("aabb")})
    assert build_design("y ~ 1 + (1 | g)", d).n == 3
    with pytest.raises(KeyError):
        build_design("y ~ 1 + (1 | nope)", d)
