"""One completer interface: a local model and TF Serving (REST) give the same completion."""

import importlib.util

import numpy as np
import pytest
from fake_serving import closed_port_address, fake_serving

from glcic_tf import completers, inference
from glcic_tf.errors import UserError


def _photo_and_hole(sample_folder):
    image = inference.read_image(str(sample_folder / "test" / "chelsea.png"))
    mask = inference.box_mask(image.shape[:2], [(120, 80, 50, 40)])
    return image, mask


def test_a_server_and_the_same_export_run_locally_complete_alike(export_base, sample_folder):
    image, mask = _photo_and_hole(sample_folder)
    local = inference.inpaint(completers.open_completer(model=str(export_base)), image, mask)
    with fake_serving(export_base / "3") as (address, requests):
        remote_completer = completers.open_completer(server=address)
        assert isinstance(remote_completer, completers.ServingCompleter)
        remote = inference.inpaint(remote_completer, image, mask)
    assert len(requests) == 1  # the hole's neighbourhood, once
    assert remote.shape == image.shape
    np.testing.assert_array_equal(remote[mask[..., 0] == 0], image[mask[..., 0] == 0])
    assert np.abs(remote.astype(int) - local.astype(int)).max() <= 1  # PNG round trips may differ by one level
    assert np.abs(remote.astype(int) - image.astype(int))[mask[..., 0] > 0].mean() > 1  # the hole was filled


def test_a_server_that_is_down_is_a_user_error_naming_it(sample_folder):
    image, mask = _photo_and_hole(sample_folder)
    address = closed_port_address()
    with pytest.raises(UserError, match=f"TF Serving at http://{address}/v1/models/glcic:predict did not answer"):
        inference.inpaint(completers.open_completer(server=address), image, mask)


@pytest.mark.parametrize("model,server", [(None, None), ("some/run", "localhost:8501")])
def test_exactly_one_of_model_and_server(model, server):
    with pytest.raises(UserError, match="give either --model"):
        completers.open_completer(model, server)


def test_an_unknown_protocol_is_a_user_error():
    with pytest.raises(UserError, match="protocol 'http' is not one of rest, grpc"):
        completers.ServingCompleter("localhost:8501", "http")


def test_grpc_without_tensorflow_serving_api_says_what_to_install(sample_folder):
    if importlib.util.find_spec("tensorflow_serving"):
        pytest.skip("tensorflow-serving-api is installed here")
    image, mask = _photo_and_hole(sample_folder)
    with pytest.raises(UserError, match="gRPC needs tensorflow-serving-api: pip install --no-deps tensorflow-serving-api grpcio"):
        inference.inpaint(completers.ServingCompleter(closed_port_address(), "grpc"), image, mask)
