"""One completer interface: a local model and TF Serving (REST) give the same completion."""

import importlib.util

import numpy as np
import pytest
from fake_serving import closed_port_address, fake_grpc_serving, fake_serving

from glcic_tf import completers, images, inference
from glcic_tf.errors import UserError


def _photo_and_hole(sample_folder):
    image = images.read_image(str(sample_folder / "test" / "chelsea.png"))
    mask = inference.mask_from_boxes(image.shape[:2], [(120, 80, 50, 40)])
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


def test_grpc_completes_as_rest_does_through_one_channel_that_close_closes(export_base, sample_folder, monkeypatch):
    pytest.importorskip("tensorflow_serving", reason="gRPC needs tensorflow-serving-api (pip install --no-deps tensorflow-serving-api)")
    import grpc  # noqa: PLC0415

    opened = []
    open_channel = grpc.insecure_channel

    def counting_channel(*args, **kwargs):
        opened.append(open_channel(*args, **kwargs))
        return opened[-1]

    monkeypatch.setattr(grpc, "insecure_channel", counting_channel)
    image, _ = _photo_and_hole(sample_folder)
    mask = inference.mask_from_boxes(image.shape[:2], [(10, 10, 20, 20), (420, 270, 20, 20)])  # two regions, two requests
    local = inference.inpaint(completers.open_completer(model=str(export_base)), image, mask, tiling="crop", max_network_pixels=40_000)
    with fake_grpc_serving(export_base / "3") as (address, requests):
        with completers.open_completer(server=address, protocol="grpc") as remote_completer:
            remote = inference.inpaint(remote_completer, image, mask, tiling="crop", max_network_pixels=40_000)
            assert len(requests) == 2 and len(opened) == 1  # one channel for every region
        closed = opened[0]
        with pytest.raises(ValueError, match="closed"):  # grpc refuses calls on a closed channel
            closed.unary_unary("/x")(b"")
    assert np.abs(remote.astype(int) - local.astype(int)).max() <= 1
    np.testing.assert_array_equal(remote[mask[..., 0] == 0], image[mask[..., 0] == 0])


def test_grpc_takes_replies_over_grpcs_default_4_mb(export_base):
    pytest.importorskip("tensorflow_serving", reason="gRPC needs tensorflow-serving-api (pip install --no-deps tensorflow-serving-api)")
    # Noise compresses to about 3 bytes per pixel: this region's PNG, and so the reply, is ~4.4 MB,
    # as a 2048x2048 region of a photo can be.
    noise = np.random.default_rng(5).random((1, 1200, 1230, 3), dtype=np.float32)
    mask = np.zeros((1, 1200, 1230, 1), np.float32)
    mask[:, 500:540, 600:640] = 1
    with fake_grpc_serving(export_base / "3") as (address, requests):
        with completers.ServingCompleter(address, "grpc") as remote_completer:
            completed = remote_completer(noise, mask)
        assert requests[0].inputs["image_bytes"].ByteSize() > 4 * 2**20
    outside = mask[0, ..., 0] == 0
    np.testing.assert_array_equal(completed[0][outside], images.to_uint8(noise[0])[outside] / np.float32(255))


def test_a_grpc_refusal_is_a_user_error_with_the_servers_message(export_base):
    pytest.importorskip("tensorflow_serving", reason="gRPC needs tensorflow-serving-api (pip install --no-deps tensorflow-serving-api)")
    image = np.zeros((1, 40, 40, 3), np.float32)
    mask = np.ones((1, 40, 40, 1), np.float32)
    with fake_grpc_serving(export_base / "3") as (address, _):
        with pytest.raises(UserError, match=f"TF Serving at {address} \\(gRPC\\) failed: no model other / inpaint_bytes"):
            with completers.ServingCompleter(address, "grpc", model_name="other") as remote_completer:
                remote_completer(image, mask)
