"""retrain.api.evaluate given the wrong kind of argument says what to pass."""

import pytest


def test_api_evaluate_given_one_path_says_to_pass_a_list(tmp_path):
    from retrain.api import evaluate as evaluate_api

    for one in (tmp_path / "model.pb", str(tmp_path / "model.pb")):
        with pytest.raises(TypeError, match=r"graphs: a list of model paths, e.g. \[Path\('model.pb'\)\]"):
            evaluate_api(one, tmp_path)
