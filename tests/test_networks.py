"""Q-networks: shapes, parameter counts computed by hand, LayerNorm placement,
initialisers, and the multi-head layer's slicing and shift."""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sparseq.stages.networks import MLPTorso, MultiHeadLinear, NatureCNNTorso, QNetwork
from sparseq.stages.networks.initializers import init_weight


def count(module) -> int:
    return sum(x.size for x in jax.tree.leaves(eqx.filter(module, eqx.is_array)))


def mlp_q(hidden=(100, 100), heads=1, actions=2, layer_norm=False, in_features=4):
    k1, k2 = jax.random.split(jax.random.key(0))
    torso = MLPTorso(in_features, hidden, layer_norm=layer_norm, key=k1)
    return QNetwork(torso, heads, actions, "lecun_normal", key=k2)


def test_mlp_q_network_shape_and_parameter_count():
    net = mlp_q()
    assert jax.eval_shape(net, jnp.zeros(4)).shape == (1, 2)
    assert eqx.filter_jit(QNetwork.batched)(net, jnp.zeros((7, 4))).shape == (7, 1, 2)
    # (4*100 + 100) + (100*100 + 100) + (100*2 + 2)
    assert count(net) == 500 + 10_100 + 202 == 10_802


def test_layer_norm_adds_scale_and_offset_per_hidden_layer_and_normalises():
    net = mlp_q(hidden=(8, 8), layer_norm=True)
    assert count(net) == count(mlp_q(hidden=(8, 8))) + 2 * (8 + 8)
    # Before the ReLU the features of each layer have mean 0 and variance 1.
    x = jax.random.normal(jax.random.key(1), (4,))
    pre = net.torso.norms[0](net.torso.layers[0](x))
    assert float(jnp.mean(pre)) == pytest.approx(0.0, abs=1e-5)
    assert float(jnp.var(pre)) == pytest.approx(1.0, abs=1e-2)


def test_nature_cnn_shape_and_parameter_count():
    k1, k2 = jax.random.split(jax.random.key(0))
    torso = NatureCNNTorso((4, 84, 84), key=k1)
    net = QNetwork(torso, 1, 6, "xavier_uniform", key=k2)
    frames = jnp.zeros((2, 4, 84, 84), jnp.uint8)
    assert jax.eval_shape(net.batched, frames).shape == (2, 1, 6)
    # conv 8x8x4->32, 4x4x32->64, 3x3x64->64 (7x7 output), dense 3136->512, head 512->6
    convs = (8 * 8 * 4 * 32 + 32) + (4 * 4 * 32 * 64 + 64) + (3 * 3 * 64 * 64 + 64)
    expected = convs + (3136 * 512 + 512) + (512 * 6 + 6)
    assert count(net) == expected == 1_687_206


def test_nature_cnn_reads_uint8_frames_like_their_float_values():
    torso = NatureCNNTorso((4, 84, 84), dense_units=32, key=jax.random.key(0))
    frames = jax.random.randint(jax.random.key(1), (4, 84, 84), 0, 256).astype(jnp.uint8)
    forward = eqx.filter_jit(lambda torso, x: torso(x))
    features = forward(torso, frames)
    np.testing.assert_allclose(features, forward(torso, frames.astype(jnp.float32)), rtol=1e-5, atol=1e-6)
    assert bool(jnp.isfinite(features).all()) and float(features.max()) > 0


def test_nature_cnn_layer_norm_normalises_channels_at_each_position():
    torso = NatureCNNTorso((4, 84, 84), dense_units=32, layer_norm=True, key=jax.random.key(0))
    assert all(norm is not None for norm in torso.conv_norms) and torso.dense_norm is not None
    frames = jax.random.randint(jax.random.key(1), (4, 84, 84), 0, 256).astype(jnp.uint8)
    x = torso.convs[0](frames.astype(jnp.float32) / 255.0)  # (32, 20, 20)
    normed = jax.vmap(jax.vmap(torso.conv_norms[0], in_axes=1, out_axes=1), in_axes=2, out_axes=2)(x)
    np.testing.assert_allclose(normed.mean(axis=0), 0.0, atol=1e-4)


def test_initialisers_zero_biases_and_respect_bounds():
    net = mlp_q(hidden=(64,))
    assert float(jnp.abs(net.torso.layers[0].bias).max()) == 0.0
    assert float(jnp.abs(net.head.linear.bias).max()) == 0.0
    shape = (50, 30)  # Linear weight (out, in)
    xavier = init_weight(jax.random.key(0), shape, "xavier_uniform")
    assert float(jnp.abs(xavier).max()) <= np.sqrt(6 / 80)
    torch = init_weight(jax.random.key(0), shape, "torch_default")
    assert float(jnp.abs(torch).max()) <= 1 / np.sqrt(30)
    lecun = init_weight(jax.random.key(0), (400, 300), "lecun_normal")
    assert float(jnp.std(lecun)) == pytest.approx(np.sqrt(1 / 300), rel=0.05)


def test_multi_head_rows_and_shift():
    head = MultiHeadLinear(3, num_heads=3, num_actions=2, init="lecun_normal", key=jax.random.key(0))
    weight = jnp.arange(18.0).reshape(6, 3)
    bias = jnp.arange(6.0)
    head = eqx.tree_at(lambda m: (m.linear.weight, m.linear.bias), head, (weight, bias))
    features = jnp.asarray([1.0, 0.0, 0.0])
    # head h reads rows 2h, 2h+1: column 0 of the weight plus the bias
    np.testing.assert_allclose(head(features), [[0, 4], [8, 12], [16, 20]])
    shifted = head.shift_heads()
    # head_i <- head_{i+1}; the last head keeps its weights
    np.testing.assert_allclose(shifted(features), [[8, 12], [16, 20], [16, 20]])
