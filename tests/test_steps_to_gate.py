"""``python -m bench.steps_to_gate``: which run it trains, and its argument errors."""

import pytest

from bench.steps_to_gate import _run, main
from mechverify.training import gd_icl, sparse_regression


@pytest.mark.parametrize("scale", ["quick", "paper"])
def test_run_comes_from_the_catalogue_of_the_scale(scale):
    assert _run("sparse_h4", scale) == sparse_regression.runs(scale)["h4"]
    assert _run("aky_big", scale) == gd_icl.runs(scale)["aky_big"]
    assert _run("sparse_h4", scale).arch == {"quick": "linear", "paper": "softmax"}[scale]


def test_unknown_run_is_refused_with_the_names_it_knows():
    with pytest.raises(ValueError, match=r"RUN must be one of .*sparse_h8.*got 'sparse_h3'"):
        _run("sparse_h3", "paper")


@pytest.mark.parametrize("argv, message", [(["sparse_h4", "--scale", "huge"], "invalid choice: 'huge'"),
                                           (["sparse_h4", "--every", "0"], "--every must be >= 1")])
def test_bad_arguments_stop_before_training(argv, message, capsys):
    with pytest.raises(SystemExit) as stop:
        main(argv)
    assert stop.value.code == 2
    assert message in capsys.readouterr().err
