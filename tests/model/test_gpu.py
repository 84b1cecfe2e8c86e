"""GPU-only checks of the kernels that exist only there: skipped elsewhere.

`python benchmarks/device_report.py` runs them (`pytest -m gpu`) on the machine it reports on.
The same functions run on CPU in the rest of the suite (the Pallas kernel in interpret mode).
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from myna_rpe_jax.model import attention, fused_alibi, vit
from tests.model.test_attention import make_case, reference_attention, skip_case

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(jax.default_backend() != "gpu", reason="needs a GPU"),
]


@pytest.mark.parametrize("dtype,atol", [(jnp.float32, 2e-3), (jnp.bfloat16, 3e-2)])
@pytest.mark.parametrize("kind", ["alibi2d", "alibi1d"])
def test_compiled_pallas_kernel_equals_reference(kind, dtype, atol):
    """The Triton kernel itself, not interpret mode; float32 matmuls may run as TF32."""
    q, k, v, bias, ref_bias = make_case(kind, 1100, heads=6, head_dim=64)
    q, k, v = (t.astype(dtype) for t in (q, k, v))
    run = jax.jit(lambda q, k, v: fused_alibi.fused_alibi_attention(q, k, v, bias))
    expected = reference_attention(*(t.astype(jnp.float32) for t in (q, k, v)), ref_bias)
    np.testing.assert_allclose(run(q, k, v).astype(jnp.float32), expected, atol=atol)


@pytest.mark.parametrize("kind", ["alibi2d", "alibi1d"])
def test_compiled_pallas_kernel_skips_tiles_without_changing_the_result(kind):
    q, k, v, bias, mask = skip_case(kind, num_tokens=1100, head_dim=64)
    skipped, total = fused_alibi.count_skipped_tiles(q, k, v, bias, mask)
    assert 0.1 * total < skipped < total
    run = jax.jit(lambda q, k, v, b: fused_alibi.fused_alibi_attention(q, k, v, b, mask))
    got = run(q, k, v, bias)
    np.testing.assert_allclose(got, attention.dense_attention(q, k, v, bias, mask), atol=2e-3)
    np.testing.assert_allclose(got, run(q, k, v, bias.replace(tile_skip=False)), atol=2e-3)


def test_cudnn_attention_equals_reference():
    q, k, v, _, _ = make_case("rope", 1100, heads=6, head_dim=64)
    q, k, v = (t.astype(jnp.bfloat16) for t in (q, k, v))
    out = jax.jit(attention.fused_attention)(q, k, v)
    expected = reference_attention(*(t.astype(jnp.float32) for t in (q, k, v)))
    np.testing.assert_allclose(out.astype(jnp.float32), expected, atol=3e-2)


def test_auto_kernel_embeds_an_alibi_model_with_the_fused_kernel():
    cfg = dict(variant="tiny", posemb=("alibi2d",), blockwise_threshold=50)  # 89 tokens: past it
    spec = jax.random.uniform(jax.random.key(0), (1, 128, 181), minval=-80.0, maxval=0.0)
    params = vit.encoder_from_config(cfg).init({"params": jax.random.key(1)}, spec, train=False)
    run = lambda kernel: jax.jit(
        lambda s: vit.encoder_from_config(dict(cfg, attention_kernel=kernel)).apply(
            params, s, train=False
        )[0]
    )
    program = str(jax.make_jaxpr(run("auto"))(spec))
    assert "pallas_call" in program and "sort" in program  # fused, skipping tiles
    # Both kernels run float32 matmuls as TF32 on the GPU, rounded differently through every
    # layer; the kernel's own accuracy is the first test's.
    np.testing.assert_allclose(run("auto")(spec), run("xla")(spec), atol=1e-2)
